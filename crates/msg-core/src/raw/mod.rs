//! What transport authors need, and users do not: the acker a transport
//! implements, the delivery policy it applies, and helpers for topics,
//! URLs and timestamps.
//!
//! A transport implements [`Publisher`](crate::Publisher) and
//! [`Subscriber`](crate::Subscriber); each delivery it hands out carries an
//! [`AckBackend`] that carries out an [`Action`]; its `subscribe` ends with
//! [`govern`], so that max deliveries and dead-letter topics mean the same
//! on every broker.

pub mod config;
mod id;
mod prefetch;
pub mod reply;
pub mod store;
pub mod time;
pub mod topic;
pub mod url;

pub use crate::delivery::{AckBackend, AckFuture, Action, dead_letter_message};
pub use crate::message::validate_header;
pub use crate::policy::{Governor, SubscriptionPolicy, dead_letter_failed, govern};
pub use crate::publish::{apply_options, batch_outcome, check_size, delay_until};
pub use crate::router::handler::box_handler;
pub use id::stable_id;
pub use prefetch::Prefetch;
