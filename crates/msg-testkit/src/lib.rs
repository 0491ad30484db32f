//! The conformance suite every **msg** transport passes, and test helpers.
//!
//! A transport crate runs the whole suite from `tests/conformance.rs`:
//!
//! ```ignore
//! fn harness() -> msg_testkit::Harness {
//!     let broker = msg_memory::MemoryBroker::new();
//!     msg_testkit::Harness::new("memory", broker.capabilities(), move || {
//!         let client = broker.client();
//!         async move { Ok(msg_core::Connection::new(client)) }
//!     })
//! }
//! msg_testkit::conformance_suite!(harness());
//! ```
//!
//! Each case is its own `#[tokio::test]`, named after the case. A case the
//! transport's [`Capabilities`](msg_core::Capabilities) rule out returns
//! after [`Harness::skip`] recorded it: libtest has no skipped state, so
//! `cargo xtask test` collects the records and prints how many cases of
//! each suite were skipped, and which. Transports that deliver at least
//! once are checked with de-duplication by message id.

#![forbid(unsafe_code)]

mod brokers;
pub mod cases;
mod dead_letter;
pub mod faults;
mod harness;
mod options;
#[cfg(feature = "outbox")]
pub mod outbox;
mod request;
#[cfg(feature = "scheduler")]
pub mod scheduler;
mod tls;

pub use brokers::{BrokerEnv, env_file, other_ca, other_tls_client, tls_ca, tls_client};
pub use harness::{Harness, SKIPS_FILE, collect, recv};
pub use options::{check_documented_options, documented_options};
pub use request::{echo_responder, request_echoes};
pub use tls::{tls_checks, tls_client_certificate_checks};

/// Expands to one `#[tokio::test]` per conformance case, each building the
/// harness with the given expression. The calling crate needs `tokio` (with
/// the `macros` and `rt-multi-thread` features) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::__conformance_cases!($harness;
            publish_subscribe_roundtrip,
            edge_payloads_roundtrip,
            invalid_input_is_rejected,
            concurrent_publish_subscribe,
            many_topics,
            topic_isolation,
            broadcast_reaches_every_subscriber,
            consumer_groups,
            retry_delivers_again,
            delivery_attempt_increments,
            continue_after_errors,
            retry_after_not_before_delay,
            dead_letter_with_reserved_headers,
            max_deliveries_then_dead_letter,
            redelivered_past_max_deliveries_is_dead_lettered,
            dead_letter_topic_per_subscription,
            topic_kept_after_retries,
            wildcard_subscriptions,
            cloudevent_roundtrip,
            oversize_message_refused,
            deliver_at_not_before,
            ttl_expires_undelivered,
            reply_to_carried,
            topics_are_listed,
            foreign_messages_have_stable_ids,
            receipts_name_positions,
            batch_reports_what_was_accepted,
            no_next_while_unacked,
            prefetch_bounds_what_is_held,
            order_kept,
            continue_after_subscriber_close,
            concurrent_close,
            subscriber_close_ends_stream,
            publisher_close_loses_nothing,
            new_subscriber_receives_old_messages,
            graceful_shutdown_loses_nothing,
            reconnect_after_restart,
            request_reply_roundtrip,
            request_error_reply,
            request_times_out_without_handler,
            late_reply_is_dropped_and_counted,
            dropped_request_is_withdrawn,
            request_all_gathers_every_reply,
            request_without_reply_address_is_dead_lettered,
            request_after_close_fails,
            requester_survives_restart,
            dead_letter_manager
        );
    };
}

/// The cases share the broker; the one that restarts it runs alone, so
/// that the restart does not fail the others. Each case holds the lock
/// while it runs.
#[doc(hidden)]
pub async fn broker_lock(case: &str) -> BrokerGuard {
    static LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
    if case.ends_with("_restart") {
        BrokerGuard::Alone(LOCK.write().await)
    } else {
        BrokerGuard::Shared(LOCK.read().await)
    }
}

/// Held by a running case; see [`broker_lock`].
#[doc(hidden)]
#[derive(Debug)]
pub enum BrokerGuard {
    /// Other cases may run beside this one.
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    /// This case runs alone.
    Alone(tokio::sync::RwLockWriteGuard<'static, ()>),
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let _exclusive = $crate::broker_lock(stringify!($case)).await;
                let harness = $harness;
                $crate::cases::$case(&harness).await;
            }
        )*
    };
}
