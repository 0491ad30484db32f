//! fred's errors mapped into `msg_core::Error`.

use fred::error::{Error as FredError, ErrorKind};
use std::time::Duration;

use msg_core::Error;

/// Connection trouble and timeouts are retryable; a refused command is not.
/// `timeout` is the command timeout, which a timeout error reports.
///
/// fred says "no server to send this to" as a routing error ("Unable to
/// route command or reconnect", "Max attempts reached" while it
/// reconnects), and "too many commands in flight" as backpressure: both
/// are about reaching Redis, not about the command, and are mapped so
/// (an outbox relay, say, then charges the message nothing for them).
pub(crate) fn map(e: FredError, timeout: Duration) -> Error {
    match e.kind() {
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing => Error::Connection(Box::new(e)),
        ErrorKind::Timeout => Error::timeout(timeout),
        ErrorKind::Backpressure => Error::Backpressure,
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Auth => {
            Error::invalid_config_with("Redis refused the configuration", e)
        }
        ErrorKind::Cluster | ErrorKind::Unknown => Error::broker_retryable(e),
        _ => Error::broker_permanent(e),
    }
}

impl crate::Shared {
    /// fred's error as `msg_core::Error`.
    pub(crate) fn fail(&self, e: FredError) -> Error {
        map(e, self.config.command_timeout)
    }
}

/// Whether Redis said the consumer group exists already.
pub(crate) fn is_busy_group(e: &FredError) -> bool {
    e.details().contains("BUSYGROUP")
}

/// Whether Redis said the consumer group (or its stream) does not exist:
/// `NOGROUP` to a command, or `UNBLOCKED` to a blocked read whose stream
/// was deleted. The reply's text is all that says so, and `map` keeps it.
pub(crate) fn is_no_group(e: &Error) -> bool {
    let text = e.chain().to_string();
    text.contains("NOGROUP") || text.contains("UNBLOCKED the stream key no longer exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_a_retryable_timeout_naming_the_limit() {
        let e = map(
            FredError::new(ErrorKind::Timeout, "Request timed out."),
            Duration::from_secs(7),
        );
        assert!(
            matches!(e, Error::Timeout { after: d, .. } if d == Duration::from_secs(7)),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let e = map(
            FredError::new(ErrorKind::Url, "Invalid port."),
            Duration::ZERO,
        );
        assert!(
            e.chain().contains("Invalid port."),
            "the source is kept: {e:?}"
        );
    }

    #[test]
    fn no_route_to_redis_is_connection_trouble_and_backpressure_is_backpressure() {
        let e = map(
            FredError::new(ErrorKind::Routing, "Unable to route command or reconnect."),
            Duration::ZERO,
        );
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        assert!(e.chain().contains("Unable to route"), "{e:?}");
        let e = map(
            FredError::new(ErrorKind::Backpressure, "Max in-flight commands reached."),
            Duration::ZERO,
        );
        assert!(matches!(e, Error::Backpressure), "{e:?}");
        let e = map(
            FredError::new(ErrorKind::Unknown, "ERR odd"),
            Duration::ZERO,
        );
        assert!(
            matches!(
                e,
                Error::Broker {
                    retryable: true,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
