//! Schedules in this process's memory: for tests, and for schedules that
//! may be lost with the process.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use msg_core::{Result, Uuid};

use super::{Claim, Next, Store};
use crate::schedule::{Filter, IfExists, Page, Schedule, ScheduleId, due_time};
use crate::when::Recurrence;

/// Schedules in memory. Clones share the schedules.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    records: HashMap<ScheduleId, Record>,
    keys: HashMap<String, ScheduleId>,
    /// Unpaused schedules by wake time.
    wakes: BTreeSet<(i64, ScheduleId)>,
}

#[derive(Debug)]
struct Record {
    schedule: Schedule,
    wake: i64,
    claim: Option<Uuid>,
}

impl Record {
    fn firing(&self, now: i64) -> bool {
        self.claim.is_some() && self.wake > now
    }

    fn view(&self, now: i64) -> Schedule {
        let mut schedule = self.schedule.clone();
        schedule.firing = self.firing(now);
        schedule
    }
}

impl State {
    fn put(&mut self, record: Record) {
        let id = record.schedule.id;
        if let Some(old) = self.records.remove(&id) {
            self.wakes.remove(&(old.wake, id));
        }
        if !record.schedule.paused {
            self.wakes.insert((record.wake, id));
        }
        if let Some(key) = &record.schedule.key {
            self.keys.insert(key.clone(), id);
        }
        self.records.insert(id, record);
    }

    fn take(&mut self, id: ScheduleId) -> Option<Record> {
        let record = self.records.remove(&id)?;
        self.wakes.remove(&(record.wake, id));
        if let Some(key) = &record.schedule.key {
            self.keys.remove(key);
        }
        Some(record)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent through a panic elsewhere: every
        // change is made whole under the lock.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn migrate(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn insert(&self, schedule: Schedule, if_exists: IfExists) -> BoxFuture<'_, Result<ScheduleId>> {
        let mut state = self.state();
        let existing = schedule
            .key
            .as_ref()
            .and_then(|k| state.keys.get(k).copied());
        let id = match (existing, if_exists) {
            (Some(id), IfExists::Keep) => id,
            (existing, _) => {
                let mut schedule = schedule;
                if let Some(id) = existing {
                    schedule.id = id;
                }
                let id = schedule.id;
                state.put(Record {
                    wake: schedule.due_millis(),
                    schedule,
                    claim: None,
                });
                id
            }
        };
        Box::pin(async move { Ok(id) })
    }

    fn remove(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<bool>>> {
        let removed = self.state().take(id).map(|r| r.firing(now));
        Box::pin(async move { Ok(removed) })
    }

    fn get(&self, id: ScheduleId, now: i64) -> BoxFuture<'_, Result<Option<Schedule>>> {
        let schedule = self.state().records.get(&id).map(|r| r.view(now));
        Box::pin(async move { Ok(schedule) })
    }

    fn list(&self, filter: Filter, now: i64) -> BoxFuture<'_, Result<Page>> {
        let state = self.state();
        let mut matching: Vec<&Record> = state
            .records
            .values()
            .filter(|r| filter.matches(&r.schedule))
            .filter(|r| {
                filter
                    .after
                    .is_none_or(|c| (r.schedule.due_millis(), r.schedule.id) > (c.due, c.id))
            })
            .collect();
        matching.sort_by_key(|r| (r.schedule.due_millis(), r.schedule.id));
        let schedules = matching
            .into_iter()
            .take(filter.limit + 1)
            .map(|r| r.view(now))
            .collect();
        let page = Page::of(schedules, filter.limit);
        Box::pin(async move { Ok(page) })
    }

    fn reschedule(
        &self,
        id: ScheduleId,
        due: i64,
        recurrence: Option<Recurrence>,
    ) -> BoxFuture<'_, Result<bool>> {
        let mut state = self.state();
        let found = match state.take(id) {
            Some(mut record) => {
                record.schedule.due = due_time(due);
                record.schedule.recurrence = recurrence;
                record.wake = due;
                record.claim = None;
                state.put(record);
                true
            }
            None => false,
        };
        Box::pin(async move { Ok(found) })
    }

    fn set_paused(&self, id: ScheduleId, paused: bool) -> BoxFuture<'_, Result<bool>> {
        let mut state = self.state();
        let found = match state.take(id) {
            Some(mut record) => {
                record.schedule.paused = paused;
                state.put(record);
                true
            }
            None => false,
        };
        Box::pin(async move { Ok(found) })
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Schedule>>> {
        let mut state = self.state();
        let due: Vec<ScheduleId> = state
            .wakes
            .range(..=(claim.now, ScheduleId::from(Uuid::max())))
            .take(claim.limit)
            .map(|(_, id)| *id)
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            let Some(mut record) = state.take(id) else {
                continue;
            };
            record.wake = claim.lease_until;
            record.claim = Some(claim.token);
            claimed.push(record.view(claim.now));
            state.put(record);
        }
        Box::pin(async move { Ok(claimed) })
    }

    fn finish(&self, token: Uuid, outcomes: Vec<(ScheduleId, Next)>) -> BoxFuture<'_, Result<()>> {
        let mut state = self.state();
        for (id, next) in outcomes {
            if state.records.get(&id).and_then(|r| r.claim) != Some(token) {
                continue;
            }
            let Some(mut record) = state.take(id) else {
                continue;
            };
            record.claim = None;
            match next {
                Next::Remove => continue,
                Next::Due { at, fires } => {
                    record.schedule.due = due_time(at);
                    record.schedule.fires += u64::from(fires);
                    record.wake = at;
                }
                Next::Retry(at) => record.wake = at,
            }
            state.put(record);
        }
        Box::pin(async { Ok(()) })
    }

    fn next_wake(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        let next = self.state().wakes.first().map(|(wake, _)| *wake);
        Box::pin(async move { Ok(next) })
    }

    fn backlog(&self, now: i64) -> BoxFuture<'_, Result<u64>> {
        let count = self
            .state()
            .wakes
            .range(..=(now, ScheduleId::from(Uuid::max())))
            .count() as u64;
        Box::pin(async move { Ok(count) })
    }

    fn poll_interval(&self) -> Duration {
        // Only this process changes the store, and it wakes its runners.
        Duration::from_secs(3600)
    }
}
