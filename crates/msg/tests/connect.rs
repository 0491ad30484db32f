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
        ("memory://?retention=lots", "not a whole number"),
    ] {
        match msg::connect(url).await {
            Err(Error::InvalidConfig { reason: text, .. }) => {
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
