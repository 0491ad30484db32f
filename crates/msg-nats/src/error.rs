//! async-nats's errors mapped into `msg_core::Error`.

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::{ConnectErrorKind, client};
use std::time::Duration;

use msg_core::Error;

/// The first connection: bad credentials, TLS setup and addresses are
/// configuration errors; the rest is the network.
pub(crate) fn connect(e: async_nats::ConnectError, timeout: Duration) -> Error {
    match e.kind() {
        ConnectErrorKind::TimedOut => Error::timeout(timeout),
        ConnectErrorKind::ServerParse
        | ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls => Error::invalid_config_with("NATS refused the connection", e),
        _ => Error::Connection(Box::new(e)),
    }
}

/// A core publish: too large is the caller's problem, the rest is the
/// connection (the client buffers while it reconnects).
pub(crate) fn publish(e: client::PublishError, size: usize, max: usize) -> Error {
    match e.kind() {
        client::PublishErrorKind::MaxPayloadExceeded => Error::MessageTooLarge { size, max },
        client::PublishErrorKind::InvalidSubject => Error::broker_permanent(e),
        _ => Error::Connection(Box::new(e)),
    }
}

/// A JetStream publish waiting for its acknowledgement.
/// `timeout` is the request timeout, which a timeout error reports.
pub(crate) fn js_publish(
    e: async_nats::jetstream::context::PublishError,
    size: usize,
    max: usize,
    timeout: Duration,
) -> Error {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Error::MessageTooLarge { size, max },
        PublishErrorKind::TimedOut => Error::timeout(timeout),
        PublishErrorKind::BrokenPipe => Error::Connection(Box::new(e)),
        PublishErrorKind::MaxAckPending => Error::Backpressure,
        // Outside every stream: retrying cannot help until someone creates one.
        PublishErrorKind::StreamNotFound => Error::broker_permanent(e),
        _ => Error::broker_retryable(e),
    }
}

/// Creating a stream: the server refusing the configuration is permanent.
pub(crate) fn create_stream(e: async_nats::jetstream::context::CreateStreamError) -> Error {
    match e.kind() {
        CreateStreamErrorKind::JetStream(_)
        | CreateStreamErrorKind::InvalidStreamName
        | CreateStreamErrorKind::EmptyStreamName => Error::broker_permanent(e),
        CreateStreamErrorKind::JetStreamUnavailable => Error::invalid_config_with(
            "the NATS server has no JetStream: start it with -js, or use nats:// (core)",
            e,
        ),
        _ => Error::Connection(Box::new(e)),
    }
}

/// Any other request to the JetStream API (lookups, consumers, pulls): the
/// server being away or slow is the usual cause.
pub(crate) fn request(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::broker_retryable(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_retryable_timeouts_naming_the_limit() {
        let limit = Duration::from_secs(3);
        let e = js_publish(PublishErrorKind::TimedOut.into(), 1, 10, limit);
        assert!(
            matches!(e, Error::Timeout { after: d, .. } if d == limit),
            "{e:?}"
        );
        let e = connect(ConnectErrorKind::TimedOut.into(), limit);
        assert!(
            matches!(e, Error::Timeout { after: d, .. } if d == limit),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let e = connect(ConnectErrorKind::Authentication.into(), limit);
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    source: Some(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
