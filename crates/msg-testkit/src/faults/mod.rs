//! Faults under load, against a real broker: the broker restarted twice
//! while messages flow (cleanly, then killed with SIGKILL), the same while
//! an outbox relay publishes (feature `outbox`), and a consumer process
//! SIGKILLed mid-stream with a second consumer finishing.
//!
//! A transport crate runs both from `tests/faults.rs`:
//!
//! ```ignore
//! msg_testkit::faults_suite!(harness(), "redis");
//! ```
//!
//! The harness's connection should redeliver what a dead consumer held
//! within seconds (a short claim or acknowledgement timeout), or the
//! second consumer waits for it. What each case counts is printed
//! (`--nocapture` shows it); what it asserts is that nothing the broker
//! confirmed is lost.

mod consumer_kill;
#[cfg(feature = "outbox")]
mod relay;
mod restart;

use std::time::Duration;

use msg_core::Message;

pub use consumer_kill::{KillReport, consumer_child, consumer_killed_mid_stream};
#[cfg(feature = "outbox")]
pub use relay::{RelayReport, relay_across_restarts};
pub use restart::{LoadReport, Restart, restart_under_load};

/// Messages published in each case.
pub const MESSAGES: usize = 10_000;
/// Publishes in flight at most; a publish that fails is retried.
const IN_FLIGHT: usize = 64;
/// How long one message may take to be confirmed, retries included.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
/// How long the consumers may take to receive everything confirmed.
const RECEIVE_DEADLINE: Duration = Duration::from_secs(90);

/// The message numbered `n`: its payload is the number.
fn numbered(n: usize) -> Message {
    Message::new(n.to_string())
}

fn number_of(message: &Message) -> Option<usize> {
    std::str::from_utf8(message.payload()).ok()?.parse().ok()
}

/// Expands to the fault cases of [`faults`](crate::faults) against the
/// broker `name` of `cargo xtask brokers up`, each a `#[tokio::test]`
/// building the harness with the given expression. They run one at a
/// time (they restart the broker). The relay case needs this crate's
/// `outbox` feature.
#[macro_export]
macro_rules! faults_suite {
    ($harness:expr, $broker:expr) => {
        /// The broker restarted cleanly, then killed, under a steady load.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn restart_under_load() {
            let _alone = $crate::broker_lock("faults_restart").await;
            let h = $harness;
            $crate::faults::restart_under_load(
                &h,
                &$crate::BrokerEnv::get($broker),
                &[
                    $crate::faults::Restart::Graceful,
                    $crate::faults::Restart::Kill,
                ],
            )
            .await;
        }

        /// An outbox relay publishing while the broker restarts, cleanly
        /// and killed.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn relay_across_restarts() {
            let _alone = $crate::broker_lock("faults_restart").await;
            let h = $harness;
            $crate::faults::relay_across_restarts(
                &h,
                &$crate::BrokerEnv::get($broker),
                &[
                    $crate::faults::Restart::Graceful,
                    $crate::faults::Restart::Kill,
                ],
                ::std::time::Duration::from_secs(3600),
            )
            .await;
        }

        /// A consumer process SIGKILLed mid-stream; another finishes.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn consumer_killed_mid_stream() {
            if ::std::env::var("MSG_TESTKIT_FAULTS_CHILD").is_ok() {
                return;
            }
            let _alone = $crate::broker_lock("faults_restart").await;
            let h = $harness;
            $crate::faults::consumer_killed_mid_stream(&h, "faults_consumer_child").await;
        }

        /// The child process of `consumer_killed_mid_stream`; nothing
        /// otherwise.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn faults_consumer_child() {
            if ::std::env::var("MSG_TESTKIT_FAULTS_CHILD").is_ok() {
                let h = $harness;
                $crate::faults::consumer_child(&h).await;
            }
        }
    };
}
