//! What a run cost the machine, not only how long it took: CPU time per
//! process group (msg's own process, PostgreSQL, the broker), read from
//! the scheduler's per-thread accounting in `/proc` (Linux; nanoseconds).
//!
//! On a machine whose cores the bench, the database and the broker share,
//! throughput alone hides where the time went: a relay that reads its rows
//! from PostgreSQL takes CPU from the broker it publishes to.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// The process groups a run is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Group {
    /// This process: msg, the clients, the relay.
    Msg,
    /// Every `postgres` process: backends, WAL writer, autovacuum.
    Postgres,
    /// The broker's processes.
    Broker,
}

impl Group {
    pub(crate) const ALL: [Group; 3] = [Group::Msg, Group::Postgres, Group::Broker];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Group::Msg => "msg",
            Group::Postgres => "PostgreSQL",
            Group::Broker => "broker",
        }
    }
}

/// The process name (`/proc/<pid>/comm`) of `transport`'s broker as `cargo
/// xtask brokers` starts it; `None` for the in-process broker.
pub(crate) fn broker_process(transport: &str) -> Option<&'static str> {
    match transport {
        "redis" => Some("redis-server"),
        "nats" => Some("nats-server"),
        "amqp" => Some("beam.smp"),
        "kafka" => Some("tansu"),
        _ => None,
    }
}

/// CPU time used so far by each process of the groups, by pid.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    used: HashMap<u32, (Group, Duration)>,
}

impl Sample {
    /// Reads the groups' processes now; `None` where `/proc` has no
    /// scheduler accounting (not Linux).
    pub(crate) fn take(broker: Option<&str>) -> Option<Self> {
        let own = std::process::id();
        let mut used = HashMap::new();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let group = if pid == own {
                Group::Msg
            } else {
                match fs::read_to_string(entry.path().join("comm")) {
                    Ok(comm) if comm.trim_end() == "postgres" => Group::Postgres,
                    Ok(comm) if Some(comm.trim_end()) == broker => Group::Broker,
                    // Another process, or one that just exited.
                    _ => continue,
                }
            };
            if let Some(time) = process_time(pid) {
                used.insert(pid, (group, time));
            }
        }
        used.contains_key(&own).then_some(Self { used })
    }

    /// CPU time per group between `self` and the later `after`. A process
    /// that started in between counts from zero; one that exited in
    /// between is missing (a run keeps its connections open).
    pub(crate) fn until(&self, after: &Sample) -> HashMap<Group, Duration> {
        let mut spent = HashMap::new();
        for (pid, (group, time)) in &after.used {
            let before = self.used.get(pid).map_or(Duration::ZERO, |(_, t)| *t);
            *spent.entry(*group).or_default() += time.saturating_sub(before);
        }
        spent
    }
}

/// The time on CPU of every thread of `pid` (the first field of each
/// thread's `schedstat`, in nanoseconds).
fn process_time(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread exited
        };
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        total += Duration::from_nanos(ns);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_is_charged_to_msg() {
        let before = Sample::take(None).expect("/proc with schedstat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = before.until(&Sample::take(None).unwrap());
        let msg = spent[&Group::Msg];
        assert!(
            msg >= Duration::from_millis(40) && msg < Duration::from_secs(1),
            "{msg:?}"
        );
    }
}
