//! The one error type of the toolkit.

use std::time::Duration;

/// A boxed error from a broker client, a codec or a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the toolkit returns.
///
/// Errors say whether trying again can help ([`Error::is_retryable`]) and
/// whether the connection to the broker is the cause
/// ([`Error::is_connection`]). Broker and codec errors are kept as the
/// `source`, never flattened into a string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic name or topic pattern is not valid.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header name or value is not valid.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A configuration value or URL is not valid.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the setting (never a secret).
        reason: String,
        /// The parser's or client library's error, when one said so.
        #[source]
        source: Option<BoxError>,
    },
    /// The message is larger than the transport accepts.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The size of the payload.
        size: usize,
        /// The largest payload the transport accepts.
        max: usize,
    },
    /// The transport cannot do what was asked.
    #[error("{operation} is not supported by the {transport} transport")]
    Unsupported {
        /// What was asked, e.g. "the publish option ttl".
        operation: &'static str,
        /// The transport, as [`Capabilities::transport`](crate::Capabilities::transport) names it.
        transport: &'static str,
    },
    /// Some messages of a batch were not accepted; it says which were.
    #[error(transparent)]
    Batch(Box<crate::BatchError>),
    /// The delivery was already settled (acked, retried or dead-lettered).
    #[error("delivery already settled")]
    AlreadySettled,
    /// The publisher or subscriber was closed.
    #[error("closed")]
    Closed,
    /// A payload could not be encoded.
    #[error("encode failed")]
    Encode(#[source] BoxError),
    /// A payload could not be decoded.
    #[error("decode failed: {0}")]
    Decode(#[source] BoxError),
    /// The broker could not be reached or the connection broke.
    #[error("connection failed")]
    Connection(#[source] BoxError),
    /// An operation did not complete in time: a request that got no reply,
    /// a publish the broker did not confirm, a connect.
    #[error("{}timed out after {after:?}", on_topic(topic.as_deref()))]
    Timeout {
        /// How long it waited.
        after: Duration,
        /// The topic of the operation, where it had one (a request's).
        topic: Option<String>,
    },
    /// A request's handler failed, and its error came back as the reply.
    #[error("the handler of {topic:?} failed: {reason}")]
    HandlerFailed {
        /// The topic the request was sent to.
        topic: String,
        /// The handler's error chain, as it sent it.
        reason: String,
        /// Whether the handler said that trying again may succeed.
        retryable: bool,
    },
    /// A bounded queue is full and the transport is set to fail rather than wait.
    #[error("queue full")]
    Backpressure,
    /// The broker refused or failed an operation.
    #[error("broker error")]
    Broker {
        /// Whether trying again may succeed.
        retryable: bool,
        /// The broker client's error.
        #[source]
        source: BoxError,
    },
    /// The database or store behind a component (the outbox's tables, a
    /// dedup store) refused or failed an operation.
    #[error("store error")]
    Store {
        /// Whether trying again may succeed.
        retryable: bool,
        /// The store client's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection(_) | Error::Timeout { .. } | Error::Backpressure => true,
            Error::Broker { retryable, .. }
            | Error::Store { retryable, .. }
            | Error::HandlerFailed { retryable, .. } => *retryable,
            Error::Batch(batch) => batch.error().is_retryable(),
            _ => false,
        }
    }

    /// Whether the error comes from the connection to the broker.
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Connection(_) => true,
            Error::Batch(batch) => batch.error().is_connection(),
            _ => false,
        }
    }

    /// A timeout after `after`, of an operation with no topic.
    pub fn timeout(after: Duration) -> Self {
        Error::Timeout { after, topic: None }
    }

    /// A timeout after `after` of an operation on `topic`.
    pub fn timeout_on(topic: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            after,
            topic: Some(topic.into()),
        }
    }

    /// An invalid configuration: `reason` says what is wrong.
    pub fn invalid_config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
            source: None,
        }
    }

    /// An invalid configuration found by a parser or client library, whose
    /// error is kept as the source.
    pub fn invalid_config_with(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// This error as the outcome of opening a connection: a server
    /// certificate the client refused, or a client certificate the server
    /// refused (a TLS alert), becomes a configuration error, which
    /// connecting again cannot fix (the client trusts another CA, the
    /// certificate names another host, the server trusts another CA for
    /// clients). TLS stacks report both as I/O errors, so they are
    /// recognised by what the error says.
    pub fn on_connect(self) -> Self {
        let Error::Connection(source) = self else {
            return self;
        };
        let mut text = format!("{source} {source:?}");
        let mut next = source.source();
        while let Some(e) = next {
            text.push_str(&e.to_string());
            next = e.source();
        }
        let text = text.to_ascii_lowercase();
        // rustls: `AlertReceived(UnknownCA)`, `AlertReceived(BadCertificate)`;
        // OpenSSL: `tlsv1 alert unknown ca`, `sslv3 alert bad certificate`.
        let alert = text.contains("alert")
            && ["unknownca", "unknown ca", "certificate"]
                .iter()
                .any(|w| text.contains(w));
        if alert {
            Error::InvalidConfig {
                reason: "the server refused this client's TLS certificate (is it signed by a \
                         CA the server trusts for clients, and is it the one the server \
                         requires?)"
                    .into(),
                source: Some(source),
            }
        } else if text.contains("certificate") {
            Error::InvalidConfig {
                reason: "the server's TLS certificate was refused (is it signed by a CA the \
                         client trusts, such as tls_ca, and does it name the host?)"
                    .into(),
                source: Some(source),
            }
        } else {
            Error::Connection(source)
        }
    }

    /// A retryable broker error.
    pub fn broker_retryable(source: impl Into<BoxError>) -> Self {
        Error::Broker {
            retryable: true,
            source: source.into(),
        }
    }

    /// A permanent broker error.
    pub fn broker_permanent(source: impl Into<BoxError>) -> Self {
        Error::Broker {
            retryable: false,
            source: source.into(),
        }
    }

    /// A store error that may go away (a lost connection, a busy or
    /// locked database, a serialization conflict).
    pub fn store_retryable(source: impl Into<BoxError>) -> Self {
        Error::Store {
            retryable: true,
            source: source.into(),
        }
    }

    /// A store error that trying again will not fix.
    pub fn store_permanent(source: impl Into<BoxError>) -> Self {
        Error::Store {
            retryable: false,
            source: source.into(),
        }
    }

    /// The error and all its sources on one line, joined with `: `.
    ///
    /// This is the form of the `msg-error` header.
    pub fn chain(&self) -> String {
        error_chain(self)
    }
}

impl From<crate::BatchError> for Error {
    fn from(e: crate::BatchError) -> Self {
        Error::Batch(Box::new(e))
    }
}

fn on_topic(topic: Option<&str>) -> String {
    topic.map(|t| format!("{t:?}: ")).unwrap_or_default()
}

/// Renders an error and its sources on one line, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        // Wrappers often repeat their source's text; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(Error::Connection("down".into()).is_retryable());
        assert!(Error::Connection("down".into()).is_connection());
        assert!(Error::timeout(Duration::from_secs(1)).is_retryable());
        assert_eq!(
            Error::timeout_on("prices", Duration::from_secs(2)).to_string(),
            "\"prices\": timed out after 2s"
        );
        assert!(Error::broker_retryable("busy").is_retryable());
        assert!(!Error::broker_permanent("denied").is_retryable());
        assert!(Error::store_retryable("locked").is_retryable());
        assert!(!Error::store_permanent("no such table").is_retryable());
        assert!(!Error::AlreadySettled.is_retryable());
        assert!(!Error::Decode("bad json".into()).is_retryable());
        assert!(!Error::Closed.is_connection());
    }

    #[test]
    fn chain_joins_sources() {
        let e = Error::Decode("expected value at line 1".into());
        assert_eq!(e.chain(), "decode failed: expected value at line 1");
        let e = Error::Connection("refused".into());
        assert_eq!(e.chain(), "connection failed: refused");
    }

    #[test]
    fn a_refused_certificate_is_a_configuration_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let e = Error::Connection(Box::new(io)).on_connect();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.chain().contains("UnknownIssuer"), "{}", e.chain());
        for alert in [
            "IO Error: Custom { kind: InvalidData, error: AlertReceived(UnknownCA) }",
            "error:0A000418:SSL routines::tlsv1 alert unknown ca",
        ] {
            let e = Error::Connection(alert.into()).on_connect();
            assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
            assert!(e.to_string().contains("refused this client's"), "{e}");
        }
        let refused = Error::Connection("connection refused".into()).on_connect();
        assert!(refused.is_retryable(), "{refused:?}");
        let timeout = Error::timeout(Duration::from_secs(1)).on_connect();
        assert!(matches!(timeout, Error::Timeout { .. }));
    }
}
