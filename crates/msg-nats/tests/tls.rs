//! `tls://` against the NATS that `cargo xtask brokers up nats` starts,
//! which upgrades clients that ask on its one port (a certificate of the
//! harness's own CA) and knows the user `msg` with a password.

use msg_core::Connection;
use msg_nats::NatsBroker;

#[tokio::test]
async fn tls_connects_refuses_another_ca_and_wrong_credentials() {
    msg_testkit::tls_checks("nats", Some("msg"), |url| async move {
        Ok(Connection::new(NatsBroker::connect_url(&url).await?))
    })
    .await;
}
