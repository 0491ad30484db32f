//! The documented options and the configuration agree (no broker needed).

use msg_amqp::AmqpConfig;

#[test]
fn documented_options_parse() {
    msg_testkit::check_documented_options::<AmqpConfig>(
        include_str!("../../../docs/transports/amqp.md"),
        // A TLS URL: the TLS options are refused on any other.
        "amqps://guest:guest@127.0.0.1:5671/%2f",
        &[],
    );
}

#[test]
fn lapin_options_stay_in_the_url_and_bad_ones_are_config_errors() {
    let config: AmqpConfig = "amqp://h/%2f?heartbeat=5&exchange=orders&connection_timeout=100"
        .parse()
        .unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains("amqp://h/%2f?heartbeat=5&connection_timeout=100"),
        "{shown}"
    );
    assert!(shown.contains("\"orders\""), "{shown}");
    for bad in [
        "amqp://h/%2f?heartbeat=x",
        "amqp://h/%2f?publish_timeout=10",
        "amqp://h/%2f?quorum_queues=yes",
        "amqp://h/%2f?colour=red",
        "amqp://u:pw@h/%2f?url=amqp://elsewhere",
    ] {
        match bad.parse::<AmqpConfig>() {
            Err(e @ msg_core::Error::InvalidConfig { .. }) => {
                assert!(!e.chain().contains("pw@"), "{}", e.chain())
            }
            other => panic!("{bad}: expected InvalidConfig, got {other:?}"),
        }
    }
}
