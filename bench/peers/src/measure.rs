//! What every broker module shares: sizes, payloads, the consumer's
//! counter, medians.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use ruststream::prelude::*;
use ruststream::runtime::{Identity, PublishIdentity, Setup};
use serde::Serialize;
use tokio::sync::Notify;

/// The payload as RustStream publishes bytes: they leave as they are.
#[derive(Outgoing, Serialized)]
struct Blob(Vec<u8>);

/// Publishes one payload and waits for the broker.
async fn publish_one<P: Publisher>(publisher: &P, topic: &str) -> anyhow::Result<()> {
    let blob = Blob(payload());
    publisher
        .message(&blob)
        .to(topic)
        .publish()
        .await
        .map_err(|e| anyhow::anyhow!("publish to {topic}: {e}"))
}

/// Publishes `n` payloads with `window` in flight.
async fn publish_many<P: Publisher>(
    publisher: &P,
    topic: &str,
    n: usize,
    window: usize,
) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| publish_one(publisher, topic))
        .buffer_unordered(window)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Publishes `n` payloads at `rate` per second, one after the other.
async fn publish_at_rate<P: Publisher>(
    publisher: &P,
    topic: &str,
    n: usize,
    rate: u32,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..n {
        tick.tick().await;
        publish_one(publisher, topic).await?;
    }
    Ok(())
}

/// The sizes of msg-bench, so the figures compare.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub rounds: usize,
    pub messages: usize,
    pub window: usize,
    pub rate: u32,
    pub latency_for: Duration,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            rounds: 5,
            messages: 20_000,
            window: 64,
            rate: 1_000,
            latency_for: Duration::from_secs(5),
        }
    }

    pub fn quick() -> Self {
        Self {
            rounds: 2,
            messages: 2_000,
            window: 64,
            rate: 500,
            latency_for: Duration::from_secs(1),
        }
    }

    /// The in-process broker moves 20,000 messages through a bare channel
    /// in about 3 ms, too short to measure steadily: it runs ten times as
    /// many.
    pub fn in_process(self) -> Self {
        Self {
            messages: self.messages * 10,
            ..self
        }
    }

    pub fn latency_messages(&self) -> usize {
        (f64::from(self.rate) * self.latency_for.as_secs_f64()) as usize
    }
}

/// One figure: the metric names are msg-bench's.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub transport: &'static str,
    pub metric: &'static str,
    pub value: f64,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// 256 bytes with the send time in the first 8.
pub fn payload() -> Vec<u8> {
    let mut p = vec![0x5au8; 256];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    p
}

/// What the handler counts, shared as the app's state.
#[derive(Clone, Default)]
pub struct Counter(Arc<Inner>);

#[derive(Default)]
struct Inner {
    expected: AtomicUsize,
    seen: Mutex<Seen>,
    done: Notify,
}

#[derive(Default)]
struct Seen {
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_ns: Vec<u64>,
}

impl Counter {
    pub fn expecting(n: usize) -> Self {
        let c = Counter::default();
        c.0.expected.store(n, Ordering::Release);
        c
    }

    pub fn record(&self, payload: &[u8]) {
        let now = Instant::now();
        let mut seen = self.0.seen.lock().expect("lock");
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        if let Some(sent) = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            seen.latencies_ns.push(now_ns().saturating_sub(sent));
        }
        seen.count += 1;
        if seen.count == self.0.expected.load(Ordering::Acquire) {
            self.0.done.notify_one();
        }
    }

    pub async fn done(&self, within: Duration) -> anyhow::Result<()> {
        let wait = async {
            loop {
                let notified = self.0.done.notified();
                if self.0.seen.lock().expect("lock").count
                    >= self.0.expected.load(Ordering::Acquire)
                {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| anyhow::anyhow!("not every message arrived within {within:?}"))
    }

    /// Messages per second from the first to the last.
    pub fn rate(&self) -> f64 {
        let seen = self.0.seen.lock().expect("lock");
        match (seen.first, seen.last) {
            (Some(f), Some(l)) if l > f => (seen.count - 1) as f64 / (l - f).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// p50, p99, p999 in microseconds.
    pub fn latencies(&self) -> [f64; 3] {
        let mut l = self.0.seen.lock().expect("lock").latencies_ns.clone();
        l.sort_unstable();
        [50.0, 99.0, 99.9].map(|p| {
            if l.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * l.len() as f64).ceil() as usize;
            l[rank.clamp(1, l.len()) - 1] as f64 / 1_000.0
        })
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// RustStream on one broker, as the scenarios use it.
pub trait Peer {
    /// The topic of one scenario, ready to be published to: created where
    /// the broker needs that, declared for consumers when `filled` (the
    /// scenario fills it before its consumer starts).
    async fn topic(&self, scenario: &str, filled: bool) -> anyhow::Result<String>;
    /// What publishes to the scenario's topic.
    fn publisher(&self) -> impl Publisher;
    /// Starts an app whose one handler reads `topic` into `counter`.
    async fn consumer(&self, topic: &str, counter: &Counter) -> anyhow::Result<RunningApp>;
}

/// The payload as a handler sees it: the delivery's bytes.
#[derive(Deserialized)]
pub struct Frame<'a>(pub &'a [u8]);

/// The handler the brokers that read a plain name mount: counts and acks.
#[subscriber]
pub async fn take(frame: &Frame<'_>, ctx: &mut Context<'_, (), Counter>) -> HandlerOutcome {
    ctx.state().record(frame.0);
    HandlerOutcome::ack()
}

/// An app whose state is `counter`, to mount one consumer on.
pub fn app(counter: &Counter) -> RustStream<Identity, Counter, PublishIdentity, Setup> {
    let state = counter.clone();
    RustStream::new(AppInfo::new("bench", "0.0.0"))
        .on_startup(async move |()| Ok::<_, std::convert::Infallible>(state))
}

/// Starts a consuming app.
pub async fn start(
    app: RustStream<ruststream::runtime::Identity, Counter>,
) -> anyhow::Result<RunningApp> {
    app.start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the app: {e}"))
}

async fn stop(running: RunningApp) -> anyhow::Result<()> {
    running
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))
}

/// Confirmed publishes per second.
async fn publish_rate(peer: &impl Peer, sizes: Sizes) -> anyhow::Result<f64> {
    let topic = peer.topic("publish", false).await?;
    let started = Instant::now();
    publish_many(&peer.publisher(), &topic, sizes.messages, sizes.window).await?;
    Ok(sizes.messages as f64 / started.elapsed().as_secs_f64())
}

/// A pre-filled topic consumed through an app: messages per second.
async fn consume_rate(peer: &impl Peer, sizes: Sizes) -> anyhow::Result<f64> {
    let topic = peer.topic("consume", true).await?;
    publish_many(&peer.publisher(), &topic, sizes.messages, 64).await?;
    let counter = Counter::expecting(sizes.messages);
    let running = peer.consumer(&topic, &counter).await?;
    counter.done(Duration::from_secs(120)).await?;
    stop(running).await?;
    Ok(counter.rate())
}

/// Latencies at a fixed rate: p50, p99, p999 in microseconds.
async fn latencies(peer: &impl Peer, sizes: Sizes) -> anyhow::Result<[f64; 3]> {
    let topic = peer.topic("latency", false).await?;
    let n = sizes.latency_messages();
    let counter = Counter::expecting(n);
    let running = peer.consumer(&topic, &counter).await?;
    publish_at_rate(&peer.publisher(), &topic, n, sizes.rate).await?;
    counter.done(Duration::from_secs(60)).await?;
    stop(running).await?;
    Ok(counter.latencies())
}

/// Runs every scenario `sizes.rounds` times; the medians as figures.
pub async fn rounds(
    transport: &'static str,
    peer: &impl Peer,
    sizes: Sizes,
) -> anyhow::Result<Vec<Figure>> {
    let (mut publish, mut consume) = (Vec::new(), Vec::new());
    let mut latency = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..sizes.rounds {
        eprintln!("ruststream-peer: {transport} round {}", round + 1);
        publish.push(publish_rate(peer, sizes).await?);
        consume.push(consume_rate(peer, sizes).await?);
        for (v, l) in latency.iter_mut().zip(latencies(peer, sizes).await?) {
            v.push(l);
        }
    }
    Ok(figures(transport, publish, consume, latency))
}

/// Medians of the rounds, as figures named like msg-bench's rows.
fn figures(
    transport: &'static str,
    publish: Vec<f64>,
    consume: Vec<f64>,
    latency: [Vec<f64>; 3],
) -> Vec<Figure> {
    let [p50, p99, p999] = latency;
    vec![
        Figure {
            transport,
            metric: "publish (confirmed, 64 in flight)",
            value: median(publish),
        },
        Figure {
            transport,
            metric: "consume through the router",
            value: median(consume),
        },
        Figure {
            transport,
            metric: "latency p50",
            value: median(p50),
        },
        Figure {
            transport,
            metric: "latency p99",
            value: median(p99),
        },
        Figure {
            transport,
            metric: "latency p999",
            value: median(p999),
        },
    ]
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{:x}", now_ns())
}

/// Unsettled deliveries one subscriber may hold where the broker has such a
/// limit: msg's default, and what msg-bench's raw sides use.
pub const PREFETCH: u16 = 256;
