//! `msg::connect` picks the transport by scheme and says clearly what fails.

use msg::{Error, Message, Publisher, Subscriber, Subscription};

#[tokio::test]
async fn memory_urls_connect_and_named_brokers_are_shared() {
    let a = msg::connect("memory://facade-test").await.unwrap();
    let b = msg::connect("memory://facade-test").await.unwrap();
    let mut stream = b.subscribe(Subscription::new("t")).await.unwrap();
    a.publish("t", Message::new("across handles"))
        .await
        .unwrap();
    let d = futures_next(&mut stream).await;
    assert_eq!(&d.message().payload()[..], b"across handles");
}

async fn futures_next(stream: &mut msg::DeliveryStream) -> msg::Delivery {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn bad_urls_are_clear_errors_without_secrets() {
    for (url, expect) in [
        ("localhost:6379", "needs a scheme"),
        (
            "mqtt://user:s3cret@host:1883",
            "no transport for URL scheme \"mqtt\"",
        ),
        ("memory://?retention=lots", "invalid digit"),
    ] {
        match msg::connect(url).await {
            Err(e @ Error::InvalidConfig { .. }) => {
                let text = e.chain();
                assert!(text.contains(expect), "{url}: {text}");
                assert!(
                    !text.contains("s3cret"),
                    "{url}: the password leaked: {text}"
                );
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// Every transport reads the same options from the URL's query, and a bad
/// one fails before any connection is tried.
#[tokio::test]
async fn every_transport_reads_the_shared_options_from_the_url() {
    let mut urls = vec![
        "memory://?max_deliveries=0",
        "memory://?dead_letter_suffix=%20x",
    ];
    if cfg!(feature = "redis") {
        urls.extend([
            "redis://u:s3cret@127.0.0.1:1?max_deliveries=0",
            "redis://127.0.0.1:1?command_timeout=5",
        ]);
    }
    if cfg!(feature = "nats") {
        urls.extend([
            "nats+js://u:s3cret@127.0.0.1:1?max_deliveries=0",
            "nats://127.0.0.1:1?request_timeout=5",
        ]);
    }
    if cfg!(feature = "amqp") {
        urls.extend([
            "amqp://u:s3cret@127.0.0.1:1/%2f?max_deliveries=0",
            "amqp://127.0.0.1:1/%2f?publish_timeout=5",
        ]);
    }
    if cfg!(feature = "kafka") {
        urls.extend([
            "kafka://u:s3cret@127.0.0.1:1?max_deliveries=0",
            "kafka://127.0.0.1:1?publish_timeout=5",
        ]);
    }
    for url in urls {
        match msg::connect(url).await {
            Err(e @ Error::InvalidConfig { .. }) => {
                let text = e.chain();
                assert!(
                    text.contains("max_deliveries")
                        || text.contains("duration")
                        || text.contains("dead_letter_suffix"),
                    "{url}: {text}"
                );
                assert!(!text.contains("s3cret"), "{url}: {text}");
            }
            other => panic!("{url}: expected InvalidConfig, got {other:?}"),
        }
    }
    let memory = msg::connect("memory://?max_deliveries=none&capacity=5")
        .await
        .unwrap();
    assert!(format!("{memory:?}").contains("memory"));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_that_cannot_be_reached_is_a_retryable_error_without_secrets() {
    let err = msg::connect("redis://user:s3cret@127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        !format!("{err:?} {}", err.chain()).contains("s3cret"),
        "{err:?}"
    );
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn a_nats_that_cannot_be_reached_is_a_retryable_error_without_secrets() {
    for url in [
        "nats://user:s3cret@127.0.0.1:1",
        "nats+js://s3cret@127.0.0.1:1",
    ] {
        let err = msg::connect(url).await.unwrap_err();
        assert!(err.is_retryable(), "{url}: {err:?}");
        assert!(
            !format!("{err:?} {}", err.chain()).contains("s3cret"),
            "{err:?}"
        );
    }
}

#[cfg(feature = "amqp")]
#[tokio::test]
async fn an_amqp_broker_that_cannot_be_reached_is_a_retryable_error_without_secrets() {
    let err = msg::connect("amqp://user:s3cret@127.0.0.1:1/%2f")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        !format!("{err:?} {}", err.chain()).contains("s3cret"),
        "{err:?}"
    );
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn a_kafka_cluster_that_cannot_be_reached_is_a_retryable_error_without_secrets() {
    let err = msg::connect("kafka://user:s3cret@127.0.0.1:1?connect_timeout=500ms")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        !format!("{err:?} {}", err.chain()).contains("s3cret"),
        "{err:?}"
    );
}

/// `close` on a connection needs no trait named: it closes both sides.
#[tokio::test]
async fn closing_a_connection_closes_both_sides() {
    use futures::StreamExt;
    let conn = msg::connect("memory://").await.unwrap();
    let mut stream = conn.subscribe(Subscription::new("t")).await.unwrap();
    conn.close().await.unwrap();
    assert!(matches!(
        conn.publish("t", Message::new("late")).await,
        Err(Error::Closed)
    ));
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends in time");
    assert!(end.is_none(), "the stream ended: {end:?}");
}
