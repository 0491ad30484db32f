//! TLS against the Kafka that `cargo xtask brokers up kafka` starts. tansu
//! 0.6 serves plain TCP only, so the harness puts a TLS front (socat, with
//! a certificate of the harness's own CA) before a tansu that advertises
//! the front's address; what is checked is msg-kafka's side: librdkafka's
//! TLS through its properties, and what a refused certificate reports.
//! tansu has no SASL, so no credentials are checked.
#![cfg(feature = "ssl")]

use msg_core::Connection;
use msg_kafka::KafkaBroker;

#[tokio::test]
async fn tls_connects_and_refuses_another_ca() {
    msg_testkit::tls_checks("kafka", None, |url| async move {
        Ok(Connection::new(KafkaBroker::connect_url(&url).await?))
    })
    .await;
}
