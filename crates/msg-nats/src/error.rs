//! async-nats's errors mapped into `msg_core::Error`.

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::{ConnectErrorKind, client};
use msg_core::Error;

/// The first connection: bad credentials, TLS setup and addresses are
/// configuration errors; the rest is the network.
pub(crate) fn connect(e: async_nats::ConnectError) -> Error {
    match e.kind() {
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
pub(crate) fn js_publish(
    e: async_nats::jetstream::context::PublishError,
    size: usize,
    max: usize,
) -> Error {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Error::MessageTooLarge { size, max },
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Error::Connection(Box::new(e)),
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
