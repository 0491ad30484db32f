//! The raw clients, one module per transport.

pub(crate) mod amqp;
pub(crate) mod kafka;
pub(crate) mod memory;
pub(crate) mod nats;
pub(crate) mod redis;
