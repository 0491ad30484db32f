//! `msg tail`: every message on the matching topics, as it arrives, until
//! Ctrl-C.

use std::io::Write;

use futures::StreamExt;
use msg::{Connection, Subscriber, Subscription};

use crate::Result;
use crate::output::{self, Output};

pub(crate) const EXAMPLES: &str = "\
Examples:
  msg --url nats://127.0.0.1:4222 tail 'orders.>'
  msg tail orders --output json | jq .payload";

/// `msg tail PATTERN`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A topic, or a pattern where the transport has them (`*` one
    /// segment, `>` the rest).
    pattern: String,
}

pub(crate) async fn run(conn: &Connection, args: Args, output: Output) -> Result<()> {
    // A broadcast subscriber of its own, from now on: tailing takes
    // nothing from the consumer groups.
    let mut stream = conn.subscribe(Subscription::new(&args.pattern)).await?;
    eprintln!("tailing {}; Ctrl-C to stop", args.pattern);
    let mut stdout = std::io::stdout().lock();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut stop => break,
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let mut delivery = item?;
        let received = msg::Received {
            message: delivery.message().clone(),
            metadata: delivery.metadata().clone(),
        };
        match output {
            Output::Json => writeln!(stdout, "{}", output::message_json(&received))?,
            Output::Text => write!(stdout, "{}", output::message_pretty(&received))?,
        }
        stdout.flush()?;
        delivery.ack().await?;
    }
    eprintln!("stopped");
    Ok(())
}
