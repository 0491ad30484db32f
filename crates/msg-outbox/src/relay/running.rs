//! A relay running in the background, and the cleanup of sent rows beside
//! it.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::row::now_millis;
use crate::store::Store;

/// Deletes sent rows older than `retention`, in small chunks so that the
/// relay's writes are never held up for long.
pub(super) async fn cleanup(store: Store, retention: Duration, mut stopped: watch::Receiver<bool>) {
    const CHUNK: i64 = 1_000;
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let before =
            now_millis().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        loop {
            match store.delete_sent(before, CHUNK).await {
                Ok(n) if n as i64 == CHUNK && !*stopped.borrow() => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "outbox cleanup failed; trying again later");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// A relay running in the background.
#[derive(Debug)]
pub struct RunningRelay {
    pub(super) stop: watch::Sender<bool>,
    pub(super) workers: Vec<JoinHandle<()>>,
    pub(super) cleanup: Option<JoinHandle<()>>,
    pub(super) timeout: Duration,
}

impl RunningRelay {
    /// Stops the relay after its passes in flight: what they published is
    /// recorded and what they hold is released. A pass still publishing
    /// after the relay's `shutdown_timeout` (a broker that does not answer)
    /// is abandoned; see [`Relay::shutdown_timeout`](crate::Relay::shutdown_timeout).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.workers.iter().map(JoinHandle::abort_handle).collect();
        let finished = tokio::time::timeout(self.timeout, futures::future::join_all(self.workers));
        match finished.await {
            Ok(results) => {
                for result in results {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "an outbox relay task failed");
                    }
                }
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "outbox relay passes still in flight at shutdown: abandoned; their rows will be published again");
                for abort in aborts {
                    abort.abort();
                }
            }
        }
        if let Some(cleanup) = self.cleanup
            && let Err(e) = cleanup.await
        {
            tracing::error!(error = %e, "the outbox cleanup task failed");
        }
    }
}
