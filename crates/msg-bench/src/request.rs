//! Request/reply round trips on each transport: a requester and a reply
//! route on one connection, and on NATS the raw client's own request and
//! reply beside msg as the limit.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use msg::{
    Connection, HandlerError, HandlerOptions, Message, Received, Requester, Router, RunningRouter,
    StartPosition, Subscription, Uuid,
};

use crate::measure::{Sizes, percentile, spread};

/// Requests in flight at once in the throughput run.
const IN_FLIGHT: usize = 64;
/// How long one request may take before the run fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One transport's figures, per round.
#[derive(Debug, Clone)]
pub(crate) struct RequestRow {
    side: String,
    per_sec: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

/// A way to send requests: msg's requester or the raw NATS client.
trait Asker: Sync {
    async fn ask(&self, body: Vec<u8>) -> Result<Vec<u8>>;
}

/// msg: a reply route echoing the payload, and the connection's requester.
struct MsgAsker {
    conn: Connection,
    requester: Requester,
    router: RunningRouter,
    topic: String,
}

impl MsgAsker {
    async fn start(url: &str) -> Result<Self> {
        let conn = msg::connect(url)
            .await
            .with_context(|| format!("connect {url}"))?;
        // A root of its own: on JetStream the route's stream is named after it.
        let topic = format!(
            "reqbench{}.echo",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let router =
            Router::new(conn.clone(), conn.clone())
                .handle_with(
                    Subscription::new(&topic)
                        .group("bench-answer")
                        .start(StartPosition::Earliest)
                        .prefetch(IN_FLIGHT * 4),
                    HandlerOptions::default().reply().concurrency(IN_FLIGHT),
                    |m: Received| async move {
                        Ok::<_, HandlerError>(Message::new(m.payload().clone()))
                    },
                )
                .start()
                .await?;
        let requester = conn.requester().await?.clone();
        // The first request waits for the route to join its group.
        requester
            .request(&topic, Message::new("warm up"), TIMEOUT * 2)
            .await
            .context("the first request")?;
        Ok(Self {
            conn,
            requester,
            router,
            topic,
        })
    }

    async fn stop(self) -> Result<()> {
        self.router.shutdown().await;
        self.conn.close().await?;
        Ok(())
    }
}

impl Asker for MsgAsker {
    async fn ask(&self, body: Vec<u8>) -> Result<Vec<u8>> {
        let reply = self
            .requester
            .request(&self.topic, Message::new(body), TIMEOUT)
            .await?;
        Ok(reply.payload().to_vec())
    }
}

/// Raw NATS: a core subscription answering with `publish(reply)`, and
/// `client.request`.
struct RawNats {
    client: async_nats::Client,
    subject: String,
    responder: tokio::task::JoinHandle<()>,
}

impl RawNats {
    async fn start(url: &str) -> Result<Self> {
        let client = async_nats::connect(url.trim_start_matches("nats://")).await?;
        // Outside every stream: JetStream would answer a request to a
        // subject it stores with its publish acknowledgement.
        let subject = format!("rawreq{}.echo", &Uuid::new_v4().simple().to_string()[..12]);
        let mut requests = client.subscribe(subject.clone()).await?;
        client.flush().await?;
        let answering = client.clone();
        let responder = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = answering.publish(reply, request.payload).await;
                }
            }
        });
        Ok(Self {
            client,
            subject,
            responder,
        })
    }
}

impl Drop for RawNats {
    fn drop(&mut self) {
        self.responder.abort();
    }
}

impl Asker for RawNats {
    async fn ask(&self, body: Vec<u8>) -> Result<Vec<u8>> {
        let reply = tokio::time::timeout(
            TIMEOUT,
            self.client.request(self.subject.clone(), body.into()),
        )
        .await??;
        Ok(reply.payload.to_vec())
    }
}

/// Requests a second with [`IN_FLIGHT`] at once.
async fn per_sec(asker: &impl Asker, n: usize) -> Result<f64> {
    let started = Instant::now();
    let answers: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let body = i.to_le_bytes().to_vec();
            let answer = asker.ask(body.clone()).await?;
            anyhow::ensure!(answer == body, "request {i} got another's reply");
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    answers.into_iter().collect::<Result<()>>()?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Round trip times of `n` requests one after another, in microseconds,
/// sorted.
async fn round_trips(asker: &impl Asker, n: usize) -> Result<Vec<u64>> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        asker.ask(i.to_le_bytes().to_vec()).await?;
        times.push(started.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    Ok(times)
}

/// One round of both measurements into `row`.
async fn round(asker: &impl Asker, sizes: Sizes, row: &mut RequestRow) -> Result<()> {
    row.per_sec.push(per_sec(asker, sizes.messages).await?);
    let times = round_trips(asker, (sizes.messages / 20).max(100)).await?;
    row.p50_us.push(percentile(&times, 50.0));
    row.p99_us.push(percentile(&times, 99.0));
    Ok(())
}

fn row(side: &str) -> RequestRow {
    RequestRow {
        side: side.to_owned(),
        per_sec: Vec::new(),
        p50_us: Vec::new(),
        p99_us: Vec::new(),
    }
}

/// Every transport's figures; on NATS, raw and msg alternate round by
/// round.
pub(crate) async fn rows(sizes: Sizes) -> Result<Vec<RequestRow>> {
    let env = |name| msg_testkit::BrokerEnv::get(name).url().to_owned();
    let nats = env("nats");
    let sides = [
        (
            "memory",
            "memory://bench-request?capacity=1000000&retention=0".to_owned(),
        ),
        ("redis", env("redis")),
        ("nats (core)", nats.clone()),
        (
            "nats (JetStream)",
            nats.replacen("nats://", "nats+js://", 1),
        ),
        ("amqp", env("rabbitmq")),
        // tansu answers a fetch only when its wait is over: see the
        // side-by-side Kafka run.
        ("kafka", format!("{}?fetch.wait.max.ms=10", env("kafka"))),
    ];
    let mut rows = Vec::new();
    let mut raw_row = row("raw async-nats (core request)");
    for (side, url) in sides {
        let mut msg_row = row(&format!("msg on {side}"));
        let asker = MsgAsker::start(&url).await?;
        let raw = if side == "nats (core)" {
            Some(RawNats::start(&nats).await?)
        } else {
            None
        };
        for r in 0..sizes.rounds {
            eprintln!("bench: request/reply on {side} round {}", r + 1);
            if let Some(raw) = &raw {
                round(raw, sizes, &mut raw_row).await?;
            }
            round(&asker, sizes, &mut msg_row).await?;
        }
        asker.stop().await?;
        rows.push(msg_row);
        if raw.is_some() {
            rows.push(raw_row.clone());
        }
    }
    Ok(rows)
}

/// The figures as a markdown table.
pub(crate) fn table(rows: &[RequestRow]) -> String {
    let mut out = format!(
        "| side | thousand requests/s, {IN_FLIGHT} in flight | round trip p50 (µs), one at a time | p99 (µs) |\n|---|---|---|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.side,
            spread(&r.per_sec, 1e3, 1),
            spread(&r.p50_us, 1.0, 0),
            spread(&r.p99_us, 1.0, 0),
        );
    }
    out
}

const BEGIN: &str = "<!-- request/reply results: written by `cargo xtask bench` -->";
const END: &str = "<!-- end of request/reply results -->";

/// Rewrites the request/reply section of docs/benchmarks.md.
pub(crate) fn write_docs(rows: &[RequestRow], sizes: Sizes, quick: bool) -> Result<()> {
    let section = format!(
        "{BEGIN}\n\nMeasured {} on {}{}; medians (and ranges) of {} rounds, raw and msg \
         alternating on NATS.\n\n{}\n{END}",
        crate::report::today(),
        crate::report::machine(),
        if quick { " (a `--quick` run)" } else { "" },
        sizes.rounds,
        table(rows)
    );
    crate::report::replace_section(BEGIN, END, &section)
}
