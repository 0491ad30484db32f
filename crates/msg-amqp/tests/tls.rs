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
