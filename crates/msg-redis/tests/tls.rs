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

/// The harness's Redis checks a client certificate when one is shown
/// (`--tls-auth-clients optional`).
#[tokio::test]
async fn a_client_certificate_is_shown_when_configured() {
    msg_testkit::tls_client_certificate_checks("redis", |url| async move {
        Ok(Connection::new(RedisBroker::connect_url(&url).await?))
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_needs_its_key_and_rediss() {
    let e =
        msg_redis::RedisConfig::from_url("redis://h:1?tls_cert=/c.pem&tls_key=/k.pem").unwrap_err();
    assert!(e.to_string().contains("tls_cert is set but"), "{e}");
    msg_redis::RedisConfig::from_url("rediss://h:1?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem")
        .expect("all three on a TLS URL");
    // Read one option at a time, a lone certificate is found at connect,
    // before anything goes on the network.
    let Err(e) = RedisBroker::connect_url("rediss://h:1?tls_cert=/c.pem").await else {
        panic!("a certificate without its key connected");
    };
    assert!(
        matches!(e, msg_core::Error::InvalidConfig { .. }) && e.to_string().contains("go together"),
        "{e}"
    );
}
