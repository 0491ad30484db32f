//! Prefetch accounting for transports.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Counts one subscriber's unsettled deliveries against its prefetch, the
/// most it may hold at once (as AMQP's `basic.qos`). Transports take slots
/// as they hand deliveries out and release one per settle.
#[derive(Debug)]
pub struct Prefetch {
    held: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Prefetch {
    /// A subscriber that may hold `limit` unsettled deliveries.
    pub fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        }
    }

    /// The most deliveries the subscriber may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many it holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// How many more it may take now.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.held())
    }

    /// `n` deliveries were handed out.
    pub fn take(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
    }

    /// One delivery was settled; wakes a waiter of [`freed`](Self::freed)
    /// if that made room.
    pub fn release(&self) {
        if self.held.fetch_sub(1, Ordering::AcqRel) >= self.limit {
            self.freed.notify_one();
        }
    }

    /// Completes after a [`release`](Self::release) that made room. Create
    /// and enable it before checking [`room`](Self::room), so that no
    /// release is missed.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn release_at_the_limit_wakes_the_waiter() {
        let p = Prefetch::new(2);
        p.take(2);
        assert_eq!(p.room(), 0);
        let freed = p.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        p.release();
        freed.await;
        assert_eq!((p.held(), p.room()), (1, 1));
    }
}
