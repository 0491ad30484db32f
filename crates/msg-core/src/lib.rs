//! Types and traits of **msg**, the transport-agnostic messaging toolkit.
//!
//! - [`Message`], [`Headers`]: what is published.
//! - [`Delivery`], [`Received`], [`Metadata`], [`Acker`]: what is received,
//!   and how it is settled: ack, retry, retry after a delay, dead-letter.
//! - [`Publisher`], [`Subscriber`] and their object-safe companions
//!   [`DynPublisher`], [`DynSubscriber`], [`Connection`]: what every
//!   transport implements.
//! - [`Router`], [`Handler`], [`Routes`]: handlers are async functions of
//!   extractors ([`Json`], [`State`], [`Metadata`], ...) or any
//!   `tower::Service`; middleware are `tower::Layer`s; [`HandlerError`]
//!   says what becomes of a message that failed.
//! - [`Requester`], [`Connection::request`]: request/reply over any
//!   transport; a route with [`HandlerOptions::reply`] answers.
//! - [`dead_letter::DeadLetters`]: list, count, replay and purge what was
//!   dead-lettered, over any transport that reads its dead-letter topics.
//! - [`Event`], [`Codec`]: typed payloads and CloudEvents.
//! - [`Error`]: one error type that says what is retryable.
//!
//! This crate has no broker in it: pick a transport crate (`msg-memory`,
//! ...) or the `msg` facade.
#![forbid(unsafe_code)]

mod capabilities;
pub mod codec;
pub mod dead_letter;
mod delivery;
mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod headers;
mod message;
mod policy;
mod publish;
pub mod raw;
mod request;
pub mod router;
mod subscription;
mod transport;

pub use capabilities::{Capabilities, MessageOrder};
pub use codec::{Codec, Decoder, Encoder, JsonCodec, RawCodec};
pub use delivery::{Acker, Delivery, Metadata, Received, Settlement, dead_letter_topic};
pub use error::{BoxError, Error, Result, error_chain};
pub use event::{CloudEventsBinding, Event};
pub use message::{Headers, Message, MessageParts};
pub use policy::{DEFAULT_DEAD_LETTER_SUFFIX, DEFAULT_MAX_DELIVERIES, DeliveryPolicy};
pub use publish::{BatchError, Position, PublishOptions, Receipt};
pub use request::{ReplyInbox, Requester};
pub use router::error::HandlerError;
pub use router::extract::{FromReceived, FromReceivedOwned, Json, State};
pub use router::handler::{BatchHandler, BoxBatchHandler, BoxHandler, Handler, service};
pub use router::outgoing::{IntoOutgoing, Outgoing, ResultTo};
pub use router::routes::Routes;
pub use router::{BatchOptions, HandlerOptions, Router, RunningRouter};
pub use subscription::{DEFAULT_PREFETCH, Distribution, StartPosition, Subscription};
pub use transport::{
    Connection, DeliveryStream, DynPublisher, DynSubscriber, Publisher, PublisherExt, Subscriber,
};

/// Re-exported so that users and transports name one version.
pub use bytes::Bytes;
pub use uuid::Uuid;
