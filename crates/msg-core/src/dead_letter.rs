//! Dead letters: what an operator sees, replays and purges on the
//! dead-letter topics every transport writes.
//!
//! A transport reads its dead-letter topics natively through
//! [`DeadLetterReader`]; [`DeadLetters`] does the rest the same way on
//! every broker: filters, pages, statistics, replay and purge. An
//! operation a transport cannot do exactly is [`Error::Unsupported`], never
//! an approximation ([`DeadLetterCapabilities`] says which).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::raw::time::{parse_rfc3339, rfc3339};
use crate::{DynPublisher, Error, Message, Result, Uuid, headers};

/// When a dead letter was replayed last (RFC 3339), on the replayed copy.
pub const REPLAYED_AT: &str = "msg-replayed-at";
/// How often a dead letter was replayed, on the replayed copy: a message
/// that comes back with a count is one that failed again after a replay.
pub const REPLAY_COUNT: &str = "msg-replay-count";

/// A message on a dead-letter topic, and where it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    position: String,
    message: Message,
}

impl DeadLetter {
    /// The dead letter at `position` (the transport's own: an entry id, an
    /// offset, a sequence number).
    pub fn new(position: impl Into<String>, message: Message) -> Self {
        Self {
            position: position.into(),
            message,
        }
    }

    /// Where it is on its dead-letter topic, as the transport says it.
    pub fn position(&self) -> &str {
        &self.position
    }

    /// The message, with the reserved dead-letter headers.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message id (the original message's: dead-lettering keeps it).
    pub fn id(&self) -> Uuid {
        self.message.id()
    }

    /// Why it was dead-lettered (`msg-dead-letter-reason`).
    pub fn reason(&self) -> Option<&str> {
        self.message.header(headers::DEAD_LETTER_REASON)
    }

    /// The error chain (`msg-error`), when the handler's error said more.
    pub fn error(&self) -> Option<&str> {
        self.message.header(headers::ERROR)
    }

    /// The topic it was consumed from (`msg-original-topic`).
    pub fn original_topic(&self) -> Option<&str> {
        self.message.header(headers::ORIGINAL_TOPIC)
    }

    /// How many deliveries it had (`msg-attempts`).
    pub fn attempts(&self) -> Option<u32> {
        self.message.header(headers::ATTEMPTS)?.parse().ok()
    }

    /// When it was dead-lettered (`msg-dead-lettered-at`).
    pub fn dead_lettered_at(&self) -> Option<SystemTime> {
        parse_rfc3339(self.message.header(headers::DEAD_LETTERED_AT)?).ok()
    }

    /// How often it was replayed before it came back here (0: never).
    pub fn replay_count(&self) -> u32 {
        self.message
            .header(REPLAY_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// Which dead letters an operation takes: all of those that match every
/// condition set.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use msg_core::dead_letter::Filter;
/// let filter = Filter::new()
///     .reason_contains("decode")
///     .original_topic("orders")
///     .since(SystemTime::now() - Duration::from_secs(3600))
///     .min_attempts(3);
/// # let _ = filter;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    reason: Option<String>,
    error: Option<String>,
    original_topic: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    min_attempts: Option<u32>,
    replayed: Option<bool>,
}

impl Filter {
    /// Every dead letter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Those whose reason contains `text` (case-sensitive).
    pub fn reason_contains(mut self, text: impl Into<String>) -> Self {
        self.reason = Some(text.into());
        self
    }

    /// Those whose error chain (`msg-error`, or the reason when there is
    /// none) contains `text`: an error kind such as `decode failed`.
    pub fn error_contains(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }

    /// Those consumed from `topic`.
    pub fn original_topic(mut self, topic: impl Into<String>) -> Self {
        self.original_topic = Some(topic.into());
        self
    }

    /// Those dead-lettered at or after `time`.
    pub fn since(mut self, time: SystemTime) -> Self {
        self.since = Some(time);
        self
    }

    /// Those dead-lettered before `time`.
    pub fn until(mut self, time: SystemTime) -> Self {
        self.until = Some(time);
        self
    }

    /// Those delivered at least `n` times.
    pub fn min_attempts(mut self, n: u32) -> Self {
        self.min_attempts = Some(n);
        self
    }

    /// Only those that failed again after a replay (`true`), or only those
    /// never replayed (`false`).
    pub fn replayed(mut self, replayed: bool) -> Self {
        self.replayed = Some(replayed);
        self
    }

    /// Whether `letter` is one of those.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let contains = |have: Option<&str>, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|want| have.is_some_and(|have| have.contains(want)))
        };
        let at = letter.dead_lettered_at();
        contains(letter.reason(), &self.reason)
            && contains(letter.error().or(letter.reason()), &self.error)
            && self
                .original_topic
                .as_deref()
                .is_none_or(|t| letter.original_topic() == Some(t))
            && self.since.is_none_or(|s| at.is_some_and(|at| at >= s))
            && self.until.is_none_or(|u| at.is_some_and(|at| at < u))
            && self
                .min_attempts
                .is_none_or(|n| letter.attempts().is_some_and(|a| a >= n))
            && self
                .replayed
                .is_none_or(|r| (letter.replay_count() > 0) == r)
    }
}

/// What a transport can do on its dead-letter topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeadLetterCapabilities {
    /// It reads them in order, from a position, without consuming them.
    pub read: bool,
    /// It removes chosen dead letters (so purge and a replay that removes
    /// what it replayed work).
    pub delete: bool,
}

impl DeadLetterCapabilities {
    /// Reads and deletes.
    pub fn full() -> Self {
        Self {
            read: true,
            delete: true,
        }
    }

    /// Reads only.
    pub fn read_only() -> Self {
        Self {
            read: true,
            delete: false,
        }
    }
}

/// The reading side of a transport's dead-letter topics: what
/// [`DeadLetters`] is built on. Transports implement it natively.
pub trait DeadLetterReader: Send + Sync + 'static {
    /// Up to `limit` dead letters of `topic`, oldest first, after the one
    /// at `after` (from the first when `None`). Fewer than `limit` means
    /// there are no more now. Reading consumes nothing.
    fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Removes the dead letters of `topic` at `positions`; returns how many
    /// were there to remove.
    fn delete(&self, topic: &str, positions: &[String])
    -> impl Future<Output = Result<u64>> + Send;

    /// What it can do.
    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities;
}

/// The object-safe form of [`DeadLetterReader`].
pub trait DynDeadLetterReader: Send + Sync + 'static {
    /// [`DeadLetterReader::read`], boxed.
    fn read_boxed<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;
    /// [`DeadLetterReader::delete`], boxed.
    fn delete_boxed<'a>(
        &'a self,
        topic: &'a str,
        positions: &'a [String],
    ) -> BoxFuture<'a, Result<u64>>;
    /// [`DeadLetterReader::dead_letter_capabilities`].
    fn capabilities(&self) -> DeadLetterCapabilities;
}

impl<R: DeadLetterReader> DynDeadLetterReader for R {
    fn read_boxed<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(self.read(topic, after, limit))
    }
    fn delete_boxed<'a>(
        &'a self,
        topic: &'a str,
        positions: &'a [String],
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.delete(topic, positions))
    }
    fn capabilities(&self) -> DeadLetterCapabilities {
        self.dead_letter_capabilities()
    }
}

/// One page of [`DeadLetters::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The dead letters that matched, oldest first.
    pub letters: Vec<DeadLetter>,
    /// Where the next page starts, when there may be more.
    pub next: Option<String>,
}

/// Counts of one dead-letter topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// How many dead letters it holds.
    pub total: u64,
    /// When the oldest was dead-lettered.
    pub oldest: Option<SystemTime>,
    /// When the newest was dead-lettered.
    pub newest: Option<SystemTime>,
    /// How many have each reason (those without one under "").
    pub by_reason: BTreeMap<String, u64>,
}

/// How [`DeadLetters::replay`] replays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    to: Option<String>,
    per_second: Option<u32>,
    dry_run: bool,
    keep: bool,
}

impl Replay {
    /// Each to its original topic, as fast as the broker takes them,
    /// removed from the dead-letter topic once published (where the
    /// transport can remove them).
    pub fn new() -> Self {
        Self::default()
    }

    /// All to `topic` instead of their original topics.
    pub fn to(mut self, topic: impl Into<String>) -> Self {
        self.to = Some(topic.into());
        self
    }

    /// At most `n` a second.
    pub fn per_second(mut self, n: u32) -> Self {
        self.per_second = Some(n.max(1));
        self
    }

    /// Counts what would be replayed, and publishes nothing.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Leaves the replayed dead letters where they are.
    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Published again (in a dry run: would have been).
    pub replayed: u64,
    /// Removed from the dead-letter topic after their replay.
    pub removed: u64,
    /// Not replayed: they name no original topic and the replay none.
    pub no_topic: u64,
    /// Published, but the broker took them for messages it already had
    /// and did not store them (JetStream's duplicate window); they stay on
    /// the dead-letter topic.
    pub duplicates: u64,
}

/// How many dead letters one read asks for.
const SCAN: usize = 256;

/// The dead-letter manager: list, get, stats, replay and purge over one
/// transport's dead-letter topics, the same on every broker.
///
/// ```
/// # async fn example() -> msg_core::Result<()> {
/// use std::sync::Arc;
/// use msg_core::dead_letter::{DeadLetters, Filter, Replay};
///
/// // The in-process broker reads what it retains.
/// let config = msg_memory::MemoryConfig::default().retention(10_000);
/// let broker = msg_memory::MemoryBroker::with_config(config)?;
/// let dlq = DeadLetters::new(Arc::new(broker.clone()), Arc::new(broker));
/// let stats = dlq.stats("orders.dlq").await?;
/// println!("{} dead letters, {:?} by reason", stats.total, stats.by_reason);
/// let report = dlq
///     .replay("orders.dlq", &Filter::new().reason_contains("timeout"), Replay::new().per_second(100))
///     .await?;
/// println!("replayed {}", report.replayed);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    reader: Arc<dyn DynDeadLetterReader>,
    publisher: Arc<dyn DynPublisher>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("capabilities", &self.reader.capabilities())
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A manager reading through `reader` and replaying through
    /// `publisher` (usually the same transport).
    pub fn new(reader: Arc<dyn DynDeadLetterReader>, publisher: Arc<dyn DynPublisher>) -> Self {
        Self { reader, publisher }
    }

    /// What the transport can do on dead-letter topics.
    pub fn capabilities(&self) -> DeadLetterCapabilities {
        self.reader.capabilities()
    }

    fn require(&self, delete: bool, operation: &'static str) -> Result<()> {
        let capabilities = self.capabilities();
        if capabilities.read && (!delete || capabilities.delete) {
            Ok(())
        } else {
            Err(Error::Unsupported {
                operation,
                transport: self.publisher.publisher_capabilities().transport,
            })
        }
    }

    /// Calls `each` with every dead letter of `topic` that `filter` takes,
    /// oldest first, after `after`, until it returns `false`. Returns the
    /// position of the last one read (matched or not).
    async fn scan(
        &self,
        topic: &str,
        filter: &Filter,
        after: Option<&str>,
        mut each: impl FnMut(DeadLetter) -> bool,
    ) -> Result<Option<String>> {
        let mut cursor = after.map(str::to_owned);
        loop {
            let batch = self
                .reader
                .read_boxed(topic, cursor.as_deref(), SCAN)
                .await?;
            let full = batch.len() == SCAN;
            for letter in batch {
                cursor = Some(letter.position.clone());
                if filter.matches(&letter) && !each(letter) {
                    return Ok(cursor);
                }
            }
            if !full {
                return Ok(cursor);
            }
        }
    }

    /// Up to `limit` dead letters of `topic` that `filter` takes, oldest
    /// first, after the position `after` (a previous page's `next`).
    pub async fn list(
        &self,
        topic: &str,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.require(false, "listing dead letters")?;
        let mut letters = Vec::new();
        let last = self
            .scan(topic, filter, after, |letter| {
                letters.push(letter);
                letters.len() < limit
            })
            .await?;
        let next = if letters.len() == limit && limit > 0 {
            last
        } else {
            None
        };
        Ok(Page { letters, next })
    }

    /// The dead letter of `topic` whose message id is `id`.
    pub async fn get(&self, topic: &str, id: Uuid) -> Result<Option<DeadLetter>> {
        self.require(false, "reading dead letters")?;
        let mut found = None;
        self.scan(topic, &Filter::new(), None, |letter| {
            if letter.id() == id {
                found = Some(letter);
                false
            } else {
                true
            }
        })
        .await?;
        Ok(found)
    }

    /// Counts of `topic`: total, oldest, newest, and by reason.
    pub async fn stats(&self, topic: &str) -> Result<Stats> {
        self.require(false, "counting dead letters")?;
        let mut stats = Stats::default();
        self.scan(topic, &Filter::new(), None, |letter| {
            stats.total += 1;
            if let Some(at) = letter.dead_lettered_at() {
                stats.oldest = Some(stats.oldest.map_or(at, |o| o.min(at)));
                stats.newest = Some(stats.newest.map_or(at, |n| n.max(at)));
            }
            *stats
                .by_reason
                .entry(letter.reason().unwrap_or_default().to_owned())
                .or_default() += 1;
            true
        })
        .await?;
        Ok(stats)
    }

    /// Publishes the dead letters of `topic` that `filter` takes again, to
    /// their original topic (or `replay`'s), with their ids, their
    /// dead-letter headers removed, and [`REPLAYED_AT`] and
    /// [`REPLAY_COUNT`] set; then removes them from `topic` unless told to
    /// keep them (a transport that cannot remove keeps them: `removed` says
    /// so).
    pub async fn replay(
        &self,
        topic: &str,
        filter: &Filter,
        replay: Replay,
    ) -> Result<ReplayReport> {
        self.replay_with_progress(topic, filter, replay, |_, _| {})
            .await
    }

    /// [`DeadLetters::replay`], calling `progress(done, of)` after each
    /// dead letter it went through (a command-line tool draws a bar).
    pub async fn replay_with_progress(
        &self,
        topic: &str,
        filter: &Filter,
        replay: Replay,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<ReplayReport> {
        self.require(false, "replaying dead letters")?;
        if let Some(to) = &replay.to {
            crate::raw::topic::validate_topic(to)?;
        }
        let mut chosen = Vec::new();
        self.scan(topic, filter, None, |letter| {
            chosen.push(letter);
            true
        })
        .await?;
        let mut report = ReplayReport::default();
        let pause = replay
            .per_second
            .map(|n| Duration::from_secs_f64(1.0 / f64::from(n)));
        let remove = !replay.keep && !replay.dry_run && self.capabilities().delete;
        let mut published = Vec::new();
        let of = chosen.len() as u64;
        for (done, letter) in chosen.into_iter().enumerate() {
            progress(done as u64, of);
            let Some(to) = replay
                .to
                .clone()
                .or_else(|| letter.original_topic().map(str::to_owned))
            else {
                report.no_topic += 1;
                continue;
            };
            report.replayed += 1;
            if replay.dry_run {
                continue;
            }
            if let Some(pause) = pause
                && report.replayed > 1
            {
                tokio::time::sleep(pause).await;
            }
            let message = replayed(&letter);
            let receipt = self.publisher.publish_boxed(&to, message).await?;
            if receipt.duplicate {
                report.duplicates += 1;
                continue;
            }
            if remove {
                // Removed once published: a crash in between replays it
                // again, with the same id.
                published.push(letter.position);
                if published.len() == SCAN {
                    report.removed += self.reader.delete_boxed(topic, &published).await?;
                    published.clear();
                }
            }
        }
        if !published.is_empty() {
            report.removed += self.reader.delete_boxed(topic, &published).await?;
        }
        progress(of, of);
        Ok(report)
    }

    /// Removes the dead letters of `topic` that `filter` takes; returns how
    /// many.
    pub async fn purge(&self, topic: &str, filter: &Filter) -> Result<u64> {
        self.purge_with_progress(topic, filter, |_, _| {}).await
    }

    /// [`DeadLetters::purge`], calling `progress(done, of)` as it goes.
    pub async fn purge_with_progress(
        &self,
        topic: &str,
        filter: &Filter,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<u64> {
        self.require(true, "purging dead letters")?;
        let mut chosen = Vec::new();
        self.scan(topic, filter, None, |letter| {
            chosen.push(letter.position);
            true
        })
        .await?;
        let mut removed = 0;
        let of = chosen.len() as u64;
        for (i, positions) in chosen.chunks(SCAN).enumerate() {
            progress((i * SCAN) as u64, of);
            removed += self.reader.delete_boxed(topic, positions).await?;
        }
        progress(of, of);
        Ok(removed)
    }
}

/// The message a replay publishes: the original, with its id and key, its
/// dead-letter headers removed, and the replay's headers.
fn replayed(letter: &DeadLetter) -> Message {
    let mut message = letter.message.clone();
    let headers = message.headers_mut();
    for name in [
        headers::DEAD_LETTER_REASON,
        headers::ORIGINAL_TOPIC,
        headers::ATTEMPTS,
        headers::ERROR,
        headers::DEAD_LETTERED_AT,
    ] {
        headers.remove(name);
    }
    headers.insert(REPLAYED_AT, rfc3339(SystemTime::now()));
    headers.insert(REPLAY_COUNT, (letter.replay_count() + 1).to_string());
    message
}
