//! The transactional outbox for **msg**, on sqlx: SQLite (embedded, the
//! default feature `sqlite`) and PostgreSQL (feature `postgres`).
//!
//! The application writes its business rows and the messages they cause
//! in one database transaction; a [`Relay`] publishes the messages through
//! any `msg` publisher once the transaction committed, and marks them sent
//! only after the broker accepted them. A transaction that rolls back
//! publishes nothing; one that commits is published at least once, with
//! the message id it was enqueued with (so a consumer's dedup recognises a
//! publish repeated after a crash).
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> msg_core::Result<()> {
//! use msg_outbox::Outbox;
//! use sqlx::SqlitePool;
//!
//! # let dir = std::env::temp_dir().join(format!("msg-outbox-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
//! let pool = SqlitePool::connect(&url).await.map_err(msg_core::Error::store_permanent)?;
//! let outbox = Outbox::sqlite(pool.clone());
//! outbox.migrate().await?;
//!
//! let broker = msg_memory::MemoryBroker::new();
//! let relay = outbox.relay(broker.clone()).start();
//!
//! let mut tx = pool.begin().await.map_err(msg_core::Error::store_permanent)?;
//! // ... the business rows, through &mut *tx ...
//! outbox.enqueue_json(&mut tx, "orders.placed", &serde_json::json!({ "order": 7 })).await?;
//! tx.commit().await.map_err(msg_core::Error::store_permanent)?;
//!
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! See the project's `docs/outbox.md` for the guarantees, running several
//! relays, and the SQL of the table.
#![forbid(unsafe_code)]

pub mod inbox;
#[cfg(feature = "metrics")]
mod metrics;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
mod row;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod table;

pub use inbox::{Inbox, InboxCleanup};
#[cfg(feature = "metrics")]
pub use metrics::OutboxMetrics;
pub use outbox::Outbox;
pub use relay::{PassReport, Relay, RunningRelay};
pub use store::{FailedRow, OutboxStats};

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("msg-outbox needs a database: enable the feature `sqlite` or `postgres`");

/// `value` as a JSON message.
fn json_message<T: serde::Serialize>(value: &T) -> msg_core::Result<msg_core::Message> {
    use msg_core::{Encoder, JsonCodec};
    let payload = Encoder::<T>::encode(&JsonCodec, value)?;
    Ok(msg_core::Message::new(payload).with_content_type(Encoder::<T>::content_type(&JsonCodec)))
}
