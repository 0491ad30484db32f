//! The documented options and the configuration agree (no server needed).

use msg_nats::NatsConfig;

#[test]
fn documented_options_parse() {
    // tls_cert and tls_key go together: checked alone, each is refused;
    // nkey is read when the URL is, so it needs a file that exists.
    let doc = include_str!("../../../docs/transports/nats.md");
    let seed = std::env::temp_dir().join(format!("msg-nats-test-{}.nk", std::process::id()));
    std::fs::write(&seed, "SUAEXAMPLESEED\n").unwrap();
    let c: NatsConfig = format!("nats://h:4222?nkey={}", seed.display())
        .parse()
        .unwrap();
    assert!(format!("{c:?}").contains("NkeySeed(***)"));
    std::fs::remove_file(&seed).unwrap();
    let options = msg_testkit::documented_options(doc);
    assert!(options.iter().any(|(n, _)| n == "tls_cert"));
    let together = "nats+js://127.0.0.1:4222?tls_cert=/c.pem&tls_key=/k.pem";
    together.parse::<NatsConfig>().unwrap();
    let without_pair: String = doc
        .lines()
        .filter(|l| {
            !["| `tls_cert`", "| `tls_key`", "| `nkey`"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n");
    msg_testkit::check_documented_options::<NatsConfig>(
        &without_pair,
        "nats+js://127.0.0.1:4222",
        &["tls_cert", "tls_key", "nkey"],
    );
}

#[test]
fn a_file_reads_like_the_url() {
    let from_url: NatsConfig =
        "tls+js://u:hunter2@h:4222?ack_wait=1m&storage=memory&max_deliveries=none"
            .parse()
            .unwrap();
    let from_file: NatsConfig = serde_json::from_str(
        r#"{ "url": "tls+js://u:hunter2@h:4222", "ack_wait": "1m", "storage": "memory",
             "max_deliveries": "none" }"#,
    )
    .unwrap();
    assert_eq!(format!("{from_url:?}"), format!("{from_file:?}"));
    assert!(from_file.is_jetstream());
    assert!(!format!("{from_file:?}").contains("hunter2"));
    let e = serde_json::from_str::<NatsConfig>(r#"{ "url": "nats://u:hunter2@h:x" }"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("port") && !e.contains("hunter2"), "{e}");
}
