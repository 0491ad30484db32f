//! `amqps://` against the TLS listener of the RabbitMQ that
//! `cargo xtask brokers up rabbitmq` starts (a certificate of the
//! harness's own CA).

use msg_amqp::AmqpBroker;
use msg_core::Connection;

#[tokio::test]
async fn tls_connects_refuses_another_ca_and_wrong_credentials() {
    msg_testkit::tls_checks("rabbitmq", Some("guest"), |url| async move {
        Ok(Connection::new(AmqpBroker::connect_url(&url).await?))
    })
    .await;
}

/// The harness's RabbitMQ checks a client certificate when one is shown
/// (`verify_peer`, `fail_if_no_peer_cert = false`).
#[tokio::test]
async fn a_client_certificate_is_shown_when_configured() {
    msg_testkit::tls_client_certificate_checks("rabbitmq", |url| async move {
        Ok(Connection::new(AmqpBroker::connect_url(&url).await?))
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_needs_its_key_and_amqps() {
    let e =
        msg_amqp::AmqpConfig::from_url("amqp://h/%2f?tls_cert=/c.pem&tls_key=/k.pem").unwrap_err();
    assert!(e.to_string().contains("tls_cert is set but"), "{e}");
    msg_amqp::AmqpConfig::from_url("amqps://h/%2f?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem")
        .expect("all three on a TLS URL");
    // Read one option at a time, a lone certificate is found at connect,
    // before anything goes on the network.
    let Err(e) = AmqpBroker::connect_url("amqps://h/%2f?tls_cert=/c.pem").await else {
        panic!("a certificate without its key connected");
    };
    assert!(
        matches!(e, msg_core::Error::InvalidConfig { .. }) && e.to_string().contains("go together"),
        "{e}"
    );
}
