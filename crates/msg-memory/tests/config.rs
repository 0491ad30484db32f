//! The documented options and the configuration agree.

use msg_memory::{MemoryConfig, WhenFull};

#[test]
fn documented_options_parse() {
    msg_testkit::check_documented_options::<MemoryConfig>(
        include_str!("../../../docs/transports/memory.md"),
        "memory://",
        &[],
    );
}

#[test]
fn url_and_file_agree() {
    let from_url: MemoryConfig = "memory://shop?capacity=10&when_full=fail&max_deliveries=none"
        .parse()
        .unwrap();
    let from_file: MemoryConfig = serde_json::from_str(
        r#"{ "capacity": 10, "when_full": "fail", "max_deliveries": "none" }"#,
    )
    .unwrap();
    assert_eq!(from_url, from_file);
    assert_eq!(from_file.when_full, WhenFull::Fail);
    assert_eq!(from_file.max_deliveries, None);
    for bad in [
        "memory://?capacity=lots",
        "memory://?when_full=maybe",
        "memory://?colour=red",
    ] {
        assert!(bad.parse::<MemoryConfig>().is_err(), "{bad}");
    }
}
