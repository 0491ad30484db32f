//! Side-by-side benchmarks: msg over each transport next to the raw client
//! it wraps, on the same broker, in one run. `cargo xtask bench` starts the
//! brokers and runs this; see `docs/benchmarks.md`.
//!
//! ```text
//! msg-bench [--quick] [--transport NAME] [--docs] [--peers FILE]
//! ```
//!
//! `--peers FILE` puts RustStream's figures (from `bench/peers`) beside msg's.
//!
//! Each scenario runs on both sides alternately (A B A B ...) and reports
//! medians, since these machines are noisy. `--docs` rewrites the results
//! section of `docs/benchmarks.md` and the chart `docs/benchmarks.svg`.

mod cpu;
mod measure;
mod outbox;
mod raw;
mod report;
mod request;
mod scheduler;
mod side;

use anyhow::{Result, bail};
use measure::{Row, Sizes};
use side::MsgSide;

/// The transports this build compares, and how each gets its broker URL.
const TRANSPORTS: &[&str] = &[
    "memory",
    "redis",
    "nats",
    "amqp",
    "kafka",
    "outbox",
    "scheduler",
    "request",
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut docs = false;
    let mut only = None;
    let mut peers = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--docs" => docs = true,
            "--peers" => match it.next() {
                Some(path) => peers = Some(std::path::PathBuf::from(path)),
                None => bail!("--peers takes the file ruststream-peer wrote"),
            },
            "--transport" => match it.next() {
                Some(name) if TRANSPORTS.contains(&name.as_str()) => only = Some(name.clone()),
                other => bail!(
                    "--transport takes one of {}; got {other:?}",
                    TRANSPORTS.join(", ")
                ),
            },
            other => bail!(
                "unknown argument {other:?}; usage: msg-bench [--quick] [--transport NAME] [--docs] [--peers FILE]"
            ),
        }
    }
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let mut rows: Vec<Row> = Vec::new();
    let mut scheduled = Vec::new();
    let mut requested = Vec::new();
    for transport in TRANSPORTS
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == **t))
    {
        if *transport == "scheduler" {
            // Runners over each store: figures of their own, not msg vs raw.
            scheduled = scheduler::rows(sizes).await?;
            println!("{}", scheduler::table(&scheduled));
            continue;
        }
        if *transport == "request" {
            // Round trips per transport, raw NATS beside msg on NATS.
            requested = request::rows(sizes).await?;
            println!("{}", request::table(&requested));
            continue;
        }
        rows.extend(run(transport, sizes).await?);
        if let Some(path) = &peers {
            report::add_peers(&mut rows, path)?;
        }
        report::print(&rows);
    }
    if docs {
        if !rows.is_empty() {
            report::write_docs(&rows, quick)?;
        }
        if !scheduled.is_empty() {
            scheduler::write_docs(&scheduled, sizes, quick)?;
        }
        if !requested.is_empty() {
            request::write_docs(&requested, sizes, quick)?;
        }
    }
    Ok(())
}

async fn run(transport: &str, sizes: Sizes) -> Result<Vec<Row>> {
    let mut rows = compare(transport, sizes).await?;
    // Each real broker: the outbox relay from PostgreSQL into it.
    if transport != "memory" && transport != "outbox" {
        let conn = msg::connect(&broker_url(transport)?).await?;
        let db = outbox::Database::Postgres(outbox::postgres()?);
        rows.push(outbox::relay_row(transport, &conn, &db, sizes).await?);
    }
    Ok(rows)
}

/// The URL msg connects to for `transport`.
fn broker_url(transport: &str) -> Result<String> {
    let env = |name| msg_testkit::BrokerEnv::get(name).url().to_owned();
    Ok(match transport {
        "redis" => env("redis"),
        "nats" => env("nats").replacen("nats://", "nats+js://", 1),
        "amqp" => env("rabbitmq"),
        "kafka" => format!("{}?fetch.wait.max.ms=10", env("kafka")),
        other => bail!("no broker for {other}"),
    })
}

async fn compare(transport: &str, sizes: Sizes) -> Result<Vec<Row>> {
    match transport {
        "outbox" => {
            // The embedded pair (SQLite into the in-process broker), and
            // what enqueue costs a PostgreSQL transaction.
            let conn = msg::connect("memory://bench-outbox?capacity=1000000").await?;
            let sqlite =
                outbox::relay_row("memory", &conn, &outbox::Database::Sqlite, sizes).await?;
            let url = outbox::postgres()?;
            let pg = outbox::Database::Postgres(url.clone());
            let from_pg = outbox::relay_row("memory", &conn, &pg, sizes).await?;
            let mut rows = vec![sqlite, from_pg];
            rows.extend(outbox::enqueue_rows(&url, sizes).await?);
            Ok(rows)
        }
        "memory" => {
            let conn = msg::connect("memory://bench?retention=1000000&capacity=1000000").await?;
            let raw = raw::memory::RawMemory::default();
            measure::compare(transport, &MsgSide::new(conn), &raw, sizes.in_process()).await
        }
        "redis" => {
            let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
            let conn = msg::connect(&url).await?;
            let raw = raw::redis::RawRedis::connect(&url).await?;
            measure::compare(transport, &MsgSide::new(conn), &raw, sizes).await
        }
        "nats" => {
            // JetStream: confirmed publishes and acked consumption, as the
            // other transports.
            let url = msg_testkit::BrokerEnv::get("nats").url().to_owned();
            let js_url = url.replacen("nats://", "nats+js://", 1);
            let conn = msg::connect(&js_url).await?;
            let raw = raw::nats::RawNats::connect(&url).await?;
            measure::compare(transport, &MsgSide::new(conn), &raw, sizes).await
        }
        "amqp" => {
            let url = msg_testkit::BrokerEnv::get("rabbitmq").url().to_owned();
            let conn = msg::connect(&url).await?;
            let raw = raw::amqp::RawAmqp::connect(&url).await?;
            measure::compare(transport, &MsgSide::new(conn), &raw, sizes).await
        }
        "kafka" => {
            let url = msg_testkit::BrokerEnv::get("kafka").url().to_owned();
            // tansu answers a fetch only when its wait is over, data or
            // not: with librdkafka's 500 ms the latency would be tansu's.
            let conn = msg::connect(&format!("{url}?fetch.wait.max.ms=10")).await?;
            let brokers = url.trim_start_matches("kafka://");
            let raw = raw::kafka::RawKafka::new(brokers)?;
            // A prefetch as large as a run: with the default, msg-kafka
            // pauses the partitions when full and resumes them from an offset
            // inside a stored batch, and tansu 0.6 then skips the rest of
            // that batch (a tansu bug; Kafka serves it). The raw consumer
            // never pauses.
            let msg = MsgSide {
                prefetch: Some(sizes.messages.max(10_000)),
                ..MsgSide::new(conn)
            };
            measure::compare(transport, &msg, &raw, sizes).await
        }
        other => bail!("no benchmark for {other}"),
    }
}
