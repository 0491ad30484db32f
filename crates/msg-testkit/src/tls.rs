//! What every transport checks against its broker's TLS listener (see
//! [`BrokerEnv::tls`]).

use std::future::Future;
use std::time::Duration;

use msg_core::{Connection, Message, Publisher, Result, Subscriber, Subscription};

use crate::{BrokerEnv, other_ca, recv, tls_ca};

/// How long a refused connection may take to say so.
const REFUSAL_WITHIN: Duration = Duration::from_secs(30);

/// Over the TLS listener of the broker `name`, with `connect` opening a
/// connection to a URL:
///
/// - a message goes through, trusting the harness's CA;
/// - trusting only a CA that signed nothing the broker shows, connecting
///   fails, and the error says the certificate is the reason;
/// - `user` (when the broker has users) with a wrong password is refused
///   over TLS, and the password appears nowhere in the error.
///
/// # Panics
///
/// When any of it does not hold.
pub async fn tls_checks<F, Fut>(name: &str, user: Option<&str>, connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Connection>>,
{
    let url = BrokerEnv::tls(name).url().to_owned();
    let ca = tls_ca().display().to_string();
    assert!(url.contains(&ca), "{url} does not trust {ca}");

    let conn = connect(url.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting over TLS to {url}: {}", e.chain()));
    let topic = format!("tls.{}", uuid::Uuid::now_v7().simple());
    let mut stream = conn
        .subscribe(Subscription::new(&topic))
        .await
        .expect("subscribe over TLS");
    // A broadcast subscription may take a moment to be in place.
    let mut delivery = None;
    for _ in 0..20 {
        conn.publish(&topic, Message::new("over TLS"))
            .await
            .expect("publish over TLS");
        if let Some(d) = recv(&mut stream, Duration::from_millis(500)).await {
            delivery = Some(d);
            break;
        }
    }
    let mut delivery = delivery.expect("the message came back over TLS");
    assert_eq!(delivery.message().payload().as_ref(), b"over TLS");
    delivery.ack().await.expect("ack over TLS");
    drop(stream);
    conn.close().await.expect("close");

    let untrusted = url.replace(&ca, &other_ca().display().to_string());
    let refused = refusal(&connect, untrusted).await;
    assert!(
        refused.starts_with("InvalidConfig"),
        "a refused certificate is a configuration error, which connecting again cannot fix: {refused}"
    );
    let text = refused.to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "a server certificate from another CA is refused, but the error does not say so: {refused}"
    );

    let Some(user) = user else { return };
    let wrong = with_credentials(&url, user, "wrong-s3cret");
    let refused = refusal(&connect, wrong).await;
    assert!(
        !refused.contains("wrong-s3cret"),
        "the password shows in the error: {refused}"
    );
    let text = refused.to_lowercase();
    assert!(
        ["auth", "password", "access_refused", "credentials"]
            .iter()
            .any(|w| text.contains(w)),
        "wrong credentials are refused, but the error does not say so: {refused}"
    );
}

/// Over the TLS listener of the broker `name`, which checks a client
/// certificate when one is shown, with `connect` opening a connection to
/// a URL (`tls_cert` and `tls_key` are added to its query):
///
/// - with a client certificate of the harness's CA, a publish goes
///   through;
/// - with one of another CA, connecting fails, each of up to 10 tries, and
///   one of them with a configuration error that says the client's
///   certificate was refused (the others may see the connection reset
///   first, with TLS 1.3); it could not unless the client showed it.
///
/// # Panics
///
/// When any of it does not hold.
pub async fn tls_client_certificate_checks<F, Fut>(name: &str, connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Connection>>,
{
    let url = BrokerEnv::tls(name).url().to_owned();
    let with = |(cert, key): (std::path::PathBuf, std::path::PathBuf)| {
        let join = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{join}tls_cert={}&tls_key={}",
            cert.display(),
            key.display()
        )
    };
    let conn = connect(with(crate::tls_client()))
        .await
        .unwrap_or_else(|e| panic!("a client certificate of the broker's CA: {}", e.chain()));
    conn.publish("tls.client-certificate", Message::new("shown"))
        .await
        .expect("publish with a client certificate");
    conn.close().await.expect("close");

    // With TLS 1.3 the server checks the client's certificate after the
    // client finished its side of the handshake, and its alert can lose the
    // race with a connection reset (RabbitMQ: a third of the tries here):
    // every try must be refused, and the alert must come through in one.
    let mut refusals = Vec::new();
    for _ in 0..10 {
        let refused = refusal(&connect, with(crate::other_tls_client())).await;
        let understood = refused.starts_with("InvalidConfig")
            && refused.contains("refused this client's TLS certificate");
        refusals.push(refused);
        if understood {
            return;
        }
    }
    panic!("a refused client certificate is a configuration error that says so: {refusals:#?}");
}

/// The error of connecting to `url`, which must fail within
/// [`REFUSAL_WITHIN`].
async fn refusal<F, Fut>(connect: &F, url: String) -> String
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Connection>>,
{
    let shown = url.replace("wrong-s3cret", "***");
    match tokio::time::timeout(REFUSAL_WITHIN, connect(url)).await {
        Ok(Err(e)) => {
            eprintln!("{shown} refused: {}", e.chain());
            format!("{e:?} {}", e.chain())
        }
        Ok(Ok(_)) => panic!("connected to {shown}, which must be refused"),
        Err(_) => {
            panic!("connecting to {shown} neither failed nor succeeded in {REFUSAL_WITHIN:?}")
        }
    }
}

/// `url` with its user and password replaced.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host_on = rest.find('@').map_or(0, |at| at + 1);
    format!("{scheme}://{user}:{password}@{}", &rest[host_on..])
}

#[cfg(test)]
mod tests {
    use super::with_credentials;

    #[test]
    fn credentials_are_replaced_or_added() {
        assert_eq!(
            with_credentials("amqps://guest:guest@h:1/%2f?x=1", "u", "p"),
            "amqps://u:p@h:1/%2f?x=1"
        );
        assert_eq!(with_credentials("tls://h:1", "u", "p"), "tls://u:p@h:1");
    }
}
