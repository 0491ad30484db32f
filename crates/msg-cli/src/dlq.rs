//! `msg dlq`: the dead-letter manager from a shell.

use std::time::SystemTime;

use msg::dead_letter::{DeadLetter, DeadLetters, Filter, Replay};
use msg::raw::time::{parse_rfc3339, rfc3339};
use msg::{Connection, Uuid};
use serde_json::{Value, json};

use crate::output::{self, Output};
use crate::{Failure, Result};

/// `msg dlq ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Count the dead letters of a topic, by reason.
    #[command(after_help = "Example:\n  msg dlq stats orders.dlq")]
    Stats {
        /// The dead-letter topic.
        topic: String,
    },
    /// List dead letters, oldest first, a page at a time.
    #[command(
        after_help = "Examples:\n  msg dlq list orders.dlq --reason timeout --limit 20\n  msg dlq list orders.dlq --after 1700000000000-3"
    )]
    List {
        /// The dead-letter topic.
        topic: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this position (a previous page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one dead letter, by message id.
    #[command(
        after_help = "Example:\n  msg dlq show orders.dlq 0190c3a4-7b1e-7cc1-9a51-1f2e3d4c5b6a"
    )]
    Show {
        /// The dead-letter topic.
        topic: String,
        /// The message id.
        id: Uuid,
    },
    /// Publish dead letters again, to their original topic or another.
    #[command(
        after_help = "Examples:\n  msg dlq replay orders.dlq --reason timeout --dry-run\n  msg dlq replay orders.dlq --reason timeout --rate 100\n  msg dlq replay orders.dlq --to orders.retry --keep"
    )]
    Replay {
        /// The dead-letter topic.
        topic: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Publish to this topic instead of each one's original topic.
        #[arg(long)]
        to: Option<String>,
        /// At most this many a second.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<u32>,
        /// Count what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave the replayed dead letters where they are.
        #[arg(long)]
        keep: bool,
    },
    /// Remove dead letters.
    #[command(
        after_help = "Examples:\n  msg dlq purge orders.dlq --reason 'bad payload' --dry-run\n  msg dlq purge orders.dlq --reason 'bad payload' --yes"
    )]
    Purge {
        /// The dead-letter topic.
        topic: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Count what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove them (purge asks for this, so that no typo removes all).
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters a command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct FilterArgs {
    /// Those whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Those whose error (or reason) contains this text, e.g. "decode failed".
    #[arg(long)]
    error: Option<String>,
    /// Those consumed from this topic.
    #[arg(long)]
    original_topic: Option<String>,
    /// Those dead-lettered at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Those dead-lettered before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Those delivered at least this many times.
    #[arg(long)]
    min_attempts: Option<u32>,
    /// Only those that failed again after a replay (true) or never
    /// replayed (false).
    #[arg(long)]
    replayed: Option<bool>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        let time = |flag: &str, value: &Option<String>| -> Result<Option<SystemTime>> {
            value
                .as_deref()
                .map(|v| {
                    parse_rfc3339(v).map_err(|e| {
                        Failure::usage(anyhow::anyhow!("--{flag} {v:?}: {}", e.chain()))
                    })
                })
                .transpose()
        };
        let mut filter = Filter::new();
        if let Some(reason) = &self.reason {
            filter = filter.reason_contains(reason);
        }
        if let Some(error) = &self.error {
            filter = filter.error_contains(error);
        }
        if let Some(topic) = &self.original_topic {
            filter = filter.original_topic(topic);
        }
        if let Some(since) = time("since", &self.since)? {
            filter = filter.since(since);
        }
        if let Some(until) = time("until", &self.until)? {
            filter = filter.until(until);
        }
        if let Some(n) = self.min_attempts {
            filter = filter.min_attempts(n);
        }
        if let Some(replayed) = self.replayed {
            filter = filter.replayed(replayed);
        }
        Ok(filter)
    }
}

pub(crate) async fn run(conn: &Connection, command: Command, output: Output) -> Result<()> {
    let dlq = conn.dead_letters()?;
    match command {
        Command::Stats { topic } => stats(&dlq, &topic, output).await,
        Command::List {
            topic,
            filter,
            limit,
            after,
        } => {
            let page = dlq
                .list(&topic, &filter.filter()?, after.as_deref(), limit)
                .await?;
            match output {
                Output::Json => output::json(&json!({
                    "letters": page.letters.iter().map(letter_json).collect::<Vec<_>>(),
                    "next": page.next,
                })),
                Output::Text => {
                    for letter in &page.letters {
                        println!(
                            "{}  {}  attempts={}  {}",
                            letter.position(),
                            letter.id(),
                            letter.attempts().map_or("?".to_owned(), |a| a.to_string()),
                            letter.reason().unwrap_or("(no reason)")
                        );
                    }
                    if let Some(next) = page.next {
                        println!("more: --after {next}");
                    }
                }
            }
            Ok(())
        }
        Command::Show { topic, id } => match dlq.get(&topic, id).await? {
            Some(letter) => {
                let value = letter_json(&letter);
                match output {
                    Output::Json => output::json(&value),
                    Output::Text => println!(
                        "{}",
                        serde_json::to_string_pretty(&value).unwrap_or_default()
                    ),
                }
                Ok(())
            }
            None => Err(anyhow::anyhow!("no dead letter {id} on {topic}").into()),
        },
        Command::Replay {
            topic,
            filter,
            to,
            rate,
            dry_run,
            keep,
        } => {
            let mut replay = Replay::new();
            if let Some(to) = to {
                replay = replay.to(to);
            }
            if let Some(rate) = rate {
                replay = replay.per_second(rate);
            }
            if dry_run {
                replay = replay.dry_run();
            }
            if keep {
                replay = replay.keep();
            }
            let bar = progress_bar(output, "replaying");
            let report = dlq
                .replay_with_progress(&topic, &filter.filter()?, replay, |done, of| {
                    bar.set_length(of);
                    bar.set_position(done);
                })
                .await;
            bar.finish_and_clear();
            let report = report?;
            match output {
                Output::Json => output::json(&json!({
                    "dry_run": dry_run,
                    "replayed": report.replayed,
                    "removed": report.removed,
                    "no_topic": report.no_topic,
                    "duplicates": report.duplicates,
                })),
                Output::Text => {
                    let verb = if dry_run { "would replay" } else { "replayed" };
                    println!("{verb} {}, removed {}", report.replayed, report.removed);
                    if report.no_topic > 0 {
                        println!("{} name no original topic: give --to", report.no_topic);
                    }
                    if report.duplicates > 0 {
                        println!(
                            "{} taken by the broker for duplicates, kept",
                            report.duplicates
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Purge {
            topic,
            filter,
            dry_run,
            yes,
        } => {
            let filter = filter.filter()?;
            let removed = if dry_run {
                count(&dlq, &topic, &filter).await?
            } else if yes {
                let bar = progress_bar(output, "purging");
                let removed = dlq
                    .purge_with_progress(&topic, &filter, |done, of| {
                        bar.set_length(of);
                        bar.set_position(done);
                    })
                    .await;
                bar.finish_and_clear();
                removed?
            } else {
                return Err(Failure::usage(anyhow::anyhow!(
                    "purge removes dead letters for good: add --yes (or --dry-run to count them)"
                )));
            };
            match output {
                Output::Json => output::json(&json!({ "dry_run": dry_run, "removed": removed })),
                Output::Text if dry_run => println!("would remove {removed}"),
                Output::Text => println!("removed {removed}"),
            }
            Ok(())
        }
    }
}

async fn stats(dlq: &DeadLetters, topic: &str, output: Output) -> Result<()> {
    let stats = dlq.stats(topic).await?;
    match output {
        Output::Json => output::json(&json!({
            "topic": topic,
            "total": stats.total,
            "oldest": stats.oldest.map(rfc3339),
            "newest": stats.newest.map(rfc3339),
            "by_reason": stats.by_reason,
        })),
        Output::Text => {
            println!("{topic}: {} dead letters", stats.total);
            if let (Some(oldest), Some(newest)) = (stats.oldest, stats.newest) {
                println!("  from {} to {}", rfc3339(oldest), rfc3339(newest));
            }
            let mut reasons: Vec<_> = stats.by_reason.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            for (reason, n) in reasons {
                println!(
                    "  {n:>8}  {}",
                    if reason.is_empty() {
                        "(no reason)"
                    } else {
                        reason
                    }
                );
            }
        }
    }
    Ok(())
}

/// A progress bar on standard error, drawn only for people at a terminal
/// (indicatif draws nothing when standard error is not one).
fn progress_bar(output: Output, what: &'static str) -> indicatif::ProgressBar {
    if output == Output::Json {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// How many dead letters `filter` takes.
async fn count(dlq: &DeadLetters, topic: &str, filter: &Filter) -> Result<u64> {
    let mut n = 0;
    let mut after = None;
    loop {
        let page = dlq.list(topic, filter, after.as_deref(), 1_000).await?;
        n += page.letters.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(n),
        }
    }
}

fn letter_json(letter: &DeadLetter) -> Value {
    let received = msg::Received {
        message: letter.message().clone(),
        metadata: msg::Metadata::new(letter.original_topic().unwrap_or_default()),
    };
    let mut value = output::message_json(&received);
    value["position"] = Value::String(letter.position().to_owned());
    value["reason"] = json!(letter.reason());
    value["error"] = json!(letter.error());
    value["original_topic"] = json!(letter.original_topic());
    value["attempts"] = json!(letter.attempts());
    value["dead_lettered_at"] = json!(letter.dead_lettered_at().map(rfc3339));
    value["replay_count"] = json!(letter.replay_count());
    if let Some(object) = value.as_object_mut() {
        object.remove("attempt");
        object.remove("topic");
    }
    value
}
