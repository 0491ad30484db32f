//! fred's errors mapped into `msg_core::Error`.

use fred::error::{Error as FredError, ErrorKind};
use msg_core::Error;

/// Connection trouble and timeouts are retryable; a refused command is not.
pub(crate) fn map(e: FredError) -> Error {
    match e.kind() {
        ErrorKind::IO | ErrorKind::Canceled => Error::Connection(Box::new(e)),
        ErrorKind::Timeout => Error::Connection(Box::new(e)),
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Auth => {
            Error::invalid_config_with("Redis refused the configuration", e)
        }
        ErrorKind::Backpressure | ErrorKind::Routing | ErrorKind::Cluster | ErrorKind::Unknown => {
            Error::broker_retryable(e)
        }
        _ => Error::broker_permanent(e),
    }
}

/// Whether Redis said the consumer group exists already.
pub(crate) fn is_busy_group(e: &FredError) -> bool {
    e.details().contains("BUSYGROUP")
}
