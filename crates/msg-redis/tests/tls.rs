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
/// (`--tls-auth-clients optional`): one of its CA is taken, one of another
/// CA is refused, which it could not be unless msg-redis showed it.
#[tokio::test]
async fn a_client_certificate_is_shown_when_configured() {
    use msg_core::{Message, Publisher};
    let url = msg_testkit::BrokerEnv::tls("redis").url().to_owned();
    let with_cert = |(cert, key): (std::path::PathBuf, std::path::PathBuf)| {
        format!(
            "{url}&tls_cert={}&tls_key={}",
            cert.display(),
            key.display()
        )
    };
    let broker = RedisBroker::connect_url(&with_cert(msg_testkit::tls_client()))
        .await
        .unwrap_or_else(|e| panic!("a certificate of the server's CA: {}", e.chain()));
    broker
        .publish("tls.client-cert", Message::new("shown"))
        .await
        .unwrap();
    broker.close().await.unwrap();

    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        RedisBroker::connect_url(&with_cert(msg_testkit::other_tls_client())),
    )
    .await
    .expect("a refused client certificate ends the connect");
    let error = refused.expect_err("a certificate of another CA is refused");
    eprintln!("refused: {}", error.chain());
    assert!(
        matches!(error, msg_core::Error::InvalidConfig { .. })
            && error
                .to_string()
                .contains("refused this client's TLS certificate"),
        "a refused client certificate is a configuration error that says so: {error:?}"
    );
}

#[test]
fn a_client_certificate_needs_its_key_and_rediss() {
    let cert = "tls_cert=/c.pem";
    for url in [
        format!("rediss://h:1?{cert}"),
        format!("redis://h:1?{cert}&tls_key=/k.pem"),
    ] {
        let e = msg_redis::RedisConfig::from_url(&url).unwrap_err();
        assert!(
            matches!(e, msg_core::Error::InvalidConfig { .. }),
            "{url}: {e}"
        );
    }
}
