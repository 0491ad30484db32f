//! [`MemoryDedupStore`]: processed ids in this process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use msg_core::{Result, Uuid};
use tokio::time::Instant;

use super::DedupStore;

/// Processed ids in memory: each for `ttl` after it was marked, at most
/// `capacity` of them, the oldest evicted first.
///
/// As a Redis `SET NX PX` window does, a duplicate seen does not extend its
/// id's window. The ids live in a ring of `capacity` slots beside a map
/// hashed with a per-process seed (foldhash), so a message costs a lookup,
/// an insert and at most one eviction, and memory stays bounded by
/// `capacity`, not by how often ids repeat.
#[derive(Debug)]
pub struct MemoryDedupStore {
    ttl: Duration,
    capacity: usize,
    /// Expiry times are kept as nanoseconds since this instant: 8 bytes,
    /// not an `Instant`'s 16.
    epoch: Instant,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// id -> its slot in `ring`. Only 20 bytes an entry, so that more of a
    /// large window stays in cache: a lookup of an id not there (the
    /// common case) touches nothing else.
    entries: HashMap<Uuid, u32, foldhash::fast::RandomState>,
    /// (id, expires in nanoseconds since `epoch`) in the order they were
    /// marked; a slot whose id was marked again since (and so lives in a
    /// later slot) is stale and skipped.
    ring: Vec<(Uuid, u64)>,
    /// The next slot to write, which holds the oldest id once the ring is
    /// full.
    next: usize,
}

impl MemoryDedupStore {
    /// Remembers each id for `ttl`, at most `capacity` ids.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        // Slots are u32s.
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            ttl,
            capacity,
            epoch: Instant::now(),
            state: Mutex::new(Window {
                entries: HashMap::with_capacity_and_hasher(
                    // Grown as ids arrive, so a large capacity costs
                    // nothing until it is used.
                    capacity.min(1024),
                    foldhash::fast::RandomState::default(),
                ),
                ring: Vec::with_capacity(capacity.min(1024)),
                next: 0,
            }),
        }
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl DedupStore for MemoryDedupStore {
    fn contains(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send {
        let window = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The clock is read only for an id that is there.
        let found = window.entries.get(&id).is_some_and(|&slot| {
            window.ring[slot as usize].1 > self.nanos_since_epoch(Instant::now())
        });
        std::future::ready(Ok(found))
    }

    fn mark(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        let expires = self.nanos_since_epoch(Instant::now() + self.ttl);
        let mut window = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Window {
            entries,
            ring,
            next,
        } = &mut *window;
        let slot = *next;
        if slot == ring.len() && ring.len() < self.capacity {
            ring.push((id, expires));
        } else {
            // The ring is full: the slot holds the oldest id, which goes
            // unless it was marked again since (its entry names a later
            // slot).
            let (old, _) = std::mem::replace(&mut ring[slot], (id, expires));
            if let std::collections::hash_map::Entry::Occupied(entry) = entries.entry(old)
                && *entry.get() as usize == slot
            {
                entry.remove();
            }
        }
        // Fits: the capacity is at most u32::MAX.
        entries.insert(id, slot as u32);
        *next = if slot + 1 == self.capacity {
            0
        } else {
            slot + 1
        };
        std::future::ready(Ok(()))
    }

    fn answers_at_once(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_the_ttl() {
        let store = MemoryDedupStore::new(Duration::from_secs(10), 100);
        let id = Uuid::now_v7();
        store.mark(id).await.unwrap();
        assert!(store.contains(id).await.unwrap());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!store.contains(id).await.unwrap());
    }

    #[tokio::test]
    async fn the_oldest_marked_id_is_evicted_first() {
        let store = MemoryDedupStore::new(Duration::from_secs(60), 2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        store.mark(a).await.unwrap();
        store.mark(b).await.unwrap();
        assert!(
            store.contains(a).await.unwrap(),
            "a seen: its window is not extended"
        );
        store.mark(c).await.unwrap();
        assert!(!store.contains(a).await.unwrap(), "a was evicted");
        assert!(store.contains(b).await.unwrap());
        assert!(store.contains(c).await.unwrap());
    }

    #[tokio::test]
    async fn an_id_marked_again_is_kept_until_its_newest_slot_is_reused() {
        let store = MemoryDedupStore::new(Duration::from_secs(60), 3);
        let (a, b, c, d) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        store.mark(a).await.unwrap();
        store.mark(b).await.unwrap();
        store.mark(a).await.unwrap(); // a's first slot is stale now
        store.mark(c).await.unwrap(); // reuses a's first slot: a stays
        assert!(store.contains(a).await.unwrap(), "a was marked again");
        assert!(store.contains(b).await.unwrap());
        assert!(store.contains(c).await.unwrap());
        store.mark(d).await.unwrap(); // reuses b's slot
        assert!(!store.contains(b).await.unwrap(), "b was evicted");
        assert!(store.contains(a).await.unwrap());
        let window = store.state.lock().unwrap();
        assert!(window.entries.len() <= 3 && window.ring.len() == 3);
    }

    #[tokio::test]
    async fn memory_stays_bounded_by_the_capacity() {
        let store = MemoryDedupStore::new(Duration::from_secs(60), 100);
        let repeated = Uuid::now_v7();
        for _ in 0..1_000 {
            store.mark(Uuid::now_v7()).await.unwrap();
            store.mark(repeated).await.unwrap();
        }
        let window = store.state.lock().unwrap();
        assert_eq!(window.ring.len(), 100);
        assert!(window.entries.len() <= 100, "{}", window.entries.len());
        assert!(window.entries.contains_key(&repeated));
    }
}
