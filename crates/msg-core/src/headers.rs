//! The reserved header names, the same on every transport.

/// The message id.
pub const MSG_ID: &str = "msg-id";
/// The ordering key, on brokers without a key of their own.
pub const MSG_KEY: &str = "msg-key";
/// The payload's media type.
pub const CONTENT_TYPE: &str = "content-type";
/// Ties the messages of one conversation together.
pub const CORRELATION_ID: &str = "correlation-id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// Why the message was dead-lettered.
pub const DEAD_LETTER_REASON: &str = "msg-dead-letter-reason";
/// The topic the message was consumed from before dead-lettering or retrying.
pub const ORIGINAL_TOPIC: &str = "msg-original-topic";
/// How many deliveries the message had.
pub const ATTEMPTS: &str = "msg-attempts";
/// The error chain, on one line.
pub const ERROR: &str = "msg-error";
/// When the message was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT: &str = "msg-dead-lettered-at";
/// Not delivered before this time (RFC 3339); set by the `deliver_at` and
/// `delay` publish options.
pub const DELIVER_AT: &str = "msg-deliver-at";
/// Where replies to the message go; set by the `reply_to` publish option.
pub const REPLY_TO: &str = "msg-reply-to";
/// On a reply: the responding handler failed, and this is its error chain.
pub const REPLY_ERROR: &str = "msg-reply-error";
/// On an error reply: `true` when the handler said trying again may
/// succeed.
pub const REPLY_RETRYABLE: &str = "msg-reply-retryable";
