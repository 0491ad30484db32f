//! The documented options and the configuration agree (no broker needed).

use msg_kafka::KafkaConfig;

#[test]
fn documented_options_parse() {
    msg_testkit::check_documented_options::<KafkaConfig>(
        include_str!("../../../docs/transports/kafka.md"),
        "kafka://127.0.0.1:9092",
        &["properties"],
    );
}

#[test]
fn a_file_sets_properties_and_credentials_like_the_url() {
    let from_url: KafkaConfig =
        "kafka://u:s3cret@h:9092?partitions=6&security.protocol=sasl_ssl&linger=1ms"
            .parse()
            .unwrap();
    let from_file: KafkaConfig = serde_json::from_str(
        r#"{ "url": "kafka://u:s3cret@h:9092", "partitions": 6, "linger": "1ms",
             "properties": { "security.protocol": "sasl_ssl" } }"#,
    )
    .unwrap();
    assert_eq!(format!("{from_url:?}"), format!("{from_file:?}"));
    assert!(format!("{from_file:?}").contains("sasl_ssl"));
    assert!(!format!("{from_file:?}").contains("s3cret"));
    let in_url = serde_json::from_str::<KafkaConfig>(r#"{ "url": "kafka://h:9092?linger=1ms" }"#);
    assert!(in_url.is_err(), "options in a file's url are refused");
}
