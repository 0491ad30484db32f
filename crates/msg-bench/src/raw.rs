//! The raw clients, one module per transport.

pub(crate) mod kafka;
pub(crate) mod memory;
