//! `rediss://` against the TLS port of the Redis that
//! `cargo xtask brokers up redis` starts (a certificate of the harness's
//! own CA).

use msg_core::Connection;
use msg_redis::RedisBroker;

#[tokio::test]
async fn tls_connects_refuses_another_ca_and_wrong_credentials() {
    // Redis knows no user `nobody`: AUTH fails as for a wrong password.
    msg_testkit::tls_checks("redis", Some("nobody"), |url| async move {
        Ok(Connection::new(RedisBroker::connect_url(&url).await?))
    })
    .await;
}
