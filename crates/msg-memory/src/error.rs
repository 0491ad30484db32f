//! The in-process broker's errors.
//!
//! There is no network and no broker client here: the only failures are a
//! closed handle and a full queue, both plain `msg_core::Error` variants.

use msg_core::Error;

/// A publish or subscribe on a closed handle.
pub(crate) fn closed() -> Error {
    Error::Closed
}

/// A publish to a full queue with `WhenFull::Fail`.
pub(crate) fn full() -> Error {
    Error::Backpressure
}
