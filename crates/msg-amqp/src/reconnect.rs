//! When to connect again after a connect failed.
//!
//! Every publish and subscription that finds the connection broken asks
//! for a new one. Without a pause, each of them tried its own connect
//! while the broker was away: thousands of refused connects a minute from
//! one busy process, against a broker that is starting. After a failed
//! connect, the next waits a while (doubling from [`FIRST_WAIT`] up to
//! [`MAX_WAIT`] while connects keep failing), and whoever asks meanwhile
//! gets the last failure at once, as a connection error, which the relay,
//! the subscriptions and a caller's own retry treat as "the broker is
//! away".

use std::time::{Duration, Instant};

use msg_core::{Error, Result};

/// The pause after the first failed connect.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest pause: a broker that is back is connected to within it.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

/// The connect failures in a row, if the last connect failed.
#[derive(Debug, Default)]
pub(crate) struct Reconnect {
    down: Option<Down>,
}

#[derive(Debug)]
struct Down {
    /// When the last connect failed.
    at: Instant,
    /// How long after it the next connect may start.
    wait: Duration,
    /// Why it failed, as the caller was told then.
    reason: String,
}

impl Reconnect {
    /// Whether a connect may start at `now`: an error naming the last
    /// failure while its pause lasts.
    pub(crate) fn check(&self, now: Instant) -> Result<()> {
        let Some(down) = &self.down else {
            return Ok(());
        };
        let next = down.at + down.wait;
        if now >= next {
            return Ok(());
        }
        Err(Error::Connection(
            format!(
                "the broker could not be reached {} ms ago ({}); the next connect is in {} ms",
                now.duration_since(down.at).as_millis(),
                down.reason,
                next.duration_since(now).as_millis(),
            )
            .into(),
        ))
    }

    /// A connect that ended at `now` failed with `error`. Only a broker
    /// that could not be reached pauses the connects; a refusal of the
    /// settings (credentials, TLS) is told to every caller as it is.
    pub(crate) fn failed(&mut self, now: Instant, error: &Error) {
        if !matches!(error, Error::Connection(_) | Error::Timeout { .. }) {
            return;
        }
        let wait = self
            .down
            .as_ref()
            .map_or(FIRST_WAIT, |down| (down.wait * 2).min(MAX_WAIT));
        self.down = Some(Down {
            at: now,
            wait,
            reason: error.chain(),
        });
    }

    /// A connect succeeded: the next failure pauses from the start again.
    pub(crate) fn connected(&mut self) {
        self.down = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        Error::Connection("connection refused".into())
    }

    #[test]
    fn connects_pause_after_a_failure_doubling_up_to_the_most() {
        let start = Instant::now();
        let mut reconnect = Reconnect::default();
        assert!(reconnect.check(start).is_ok(), "nothing failed yet");
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..6 {
            reconnect.failed(now, &refused());
            let err = reconnect.check(now).expect_err("paused");
            assert!(err.is_connection(), "{err:?}");
            assert!(
                err.chain().contains("connection refused"),
                "{}",
                err.chain()
            );
            let mut wait = Duration::ZERO;
            while reconnect.check(now + wait).is_err() {
                wait += Duration::from_millis(10);
            }
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        reconnect.connected();
        assert!(reconnect.check(now).is_ok());
        reconnect.failed(now, &refused());
        assert!(reconnect.check(now + FIRST_WAIT).is_ok(), "from the start");
    }

    #[test]
    fn a_refused_setting_does_not_pause() {
        let now = Instant::now();
        let mut reconnect = Reconnect::default();
        reconnect.failed(now, &Error::invalid_config("bad password"));
        assert!(reconnect.check(now).is_ok());
    }
}
