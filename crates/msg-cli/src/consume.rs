//! `msg consume`.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use msg::{Connection, StartPosition, Subscriber, Subscription};

use crate::output::{self, Output};
use crate::{Failure, Result};

pub(crate) const EXAMPLES: &str = "\
Examples:
  msg consume orders --from earliest --count 10
  msg consume 'orders.*' --group audit --format pretty
  msg consume orders --format raw --count 1 --timeout 5 > order.bin";

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum From {
    /// Every message the broker still has.
    Earliest,
    /// Only those published from now on.
    Latest,
}

/// How each message is printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One JSON document per message: id, topic, key, headers, payload,
    /// and the CloudEvent when it is one.
    Json,
    /// The payload alone, as it is, followed by a newline.
    Raw,
    /// Headers and payload for people; CloudEvents as events.
    Pretty,
}

/// `msg consume TOPIC`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The topic, or a pattern where the transport has them (`*` one
    /// segment, `>` the rest).
    topic: String,
    /// Join this consumer group (else: a broadcast subscriber of its own).
    #[arg(long)]
    group: Option<String>,
    /// Where to start.
    #[arg(long, value_enum, default_value_t = From::Latest)]
    from: From,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<usize>,
    /// Stop when nothing came for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// How each message is printed (default: pretty, or json with
    /// --output json).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

pub(crate) async fn run(conn: &Connection, args: Args, output: Output) -> Result<()> {
    let format = args.format.unwrap_or(match output {
        Output::Json => Format::Json,
        Output::Text => Format::Pretty,
    });
    let mut subscription = Subscription::new(&args.topic).start(match args.from {
        From::Earliest => StartPosition::Earliest,
        From::Latest => StartPosition::Latest,
    });
    if let Some(group) = &args.group {
        subscription = subscription.group(group);
    }
    let idle = match args.timeout {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(secs) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--timeout {secs}: give a number of seconds"
            )));
        }
        None => None,
    };
    let mut stream = conn.subscribe(subscription).await?;
    let mut received = 0usize;
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|n| received < n) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => stream.next().await,
        };
        let Some(item) = next else { break };
        let mut delivery = item?;
        let written = match format {
            Format::Json => writeln!(
                stdout,
                "{}",
                output::message_json(&delivery_received(&delivery))
            ),
            Format::Raw => stdout
                .write_all(delivery.message().payload())
                .and_then(|()| stdout.write_all(b"\n")),
            Format::Pretty => write!(
                stdout,
                "{}",
                output::message_pretty(&delivery_received(&delivery))
            ),
        };
        written.and_then(|()| stdout.flush())?;
        // Printed: settled. A message that cannot be printed (a closed
        // pipe) stays unsettled and comes again.
        delivery.ack().await?;
        received += 1;
    }
    match args.count {
        Some(n) if received < n => Err(Failure::incomplete(anyhow::anyhow!(
            "received {received} of {n} messages"
        ))),
        _ => Ok(()),
    }
}

/// What a handler would see of `delivery`.
fn delivery_received(delivery: &msg::Delivery) -> msg::Received {
    msg::Received {
        message: delivery.message().clone(),
        metadata: delivery.metadata().clone(),
    }
}
