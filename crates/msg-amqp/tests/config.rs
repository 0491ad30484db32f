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

/// A server that takes the connection and never answers (a broker starting
/// or stopping does): opening the connection gives up after lapin's
/// `connection_timeout` with a retryable timeout, rather than holding every
/// publish and subscription waiting on it.
#[tokio::test]
async fn a_connection_the_server_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f?connection_timeout=300");
    let connect = msg_amqp::AmqpBroker::connect_url(&url);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .expect("the connect did not give up");
    match outcome {
        Err(e @ msg_core::Error::Timeout { after, .. }) => {
            assert_eq!(after, std::time::Duration::from_millis(300));
            assert!(e.is_retryable());
        }
        Err(other) => panic!("expected a timeout, got {other:?}"),
        Ok(_) => panic!("connected to a server that never answered"),
    }
    silent.abort();
}
