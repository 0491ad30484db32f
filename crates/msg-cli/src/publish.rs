//! `msg publish`.

use std::io::Read;

use anyhow::Context;
use msg::{Connection, Message, Position, Publisher};
use serde_json::json;

use crate::output::{self, Output};
use crate::{Failure, Result};

pub(crate) const EXAMPLES: &str = "\
Examples:
  msg publish orders 'order 7'
  msg publish orders '{\"id\": 7}' --json --key customer-3 --header tenant=acme
  msg publish orders --file order.bin
  cat order.json | msg publish orders - --json";

/// `msg publish TOPIC [PAYLOAD]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The topic.
    topic: String,
    /// The payload; `-` reads it from standard input. Empty when left out
    /// and no --file is given.
    payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, conflicts_with = "payload")]
    file: Option<std::path::PathBuf>,
    /// The payload is JSON: check that it parses, and set the content type.
    #[arg(long)]
    json: bool,
    /// The ordering key.
    #[arg(long)]
    key: Option<String>,
    /// A header, as name=value; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
}

pub(crate) async fn run(conn: &Connection, args: Args, output: Output) -> Result<()> {
    let payload = match (&args.payload, &args.file) {
        (Some(p), _) if p == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the payload from standard input")?;
            buf
        }
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("reading the payload from {}", path.display()))
            .map_err(Failure::usage)?,
        (None, None) => Vec::new(),
    };
    let mut message = Message::new(payload);
    if args.json {
        serde_json::from_slice::<serde_json::Value>(message.payload())
            .map_err(|e| Failure::usage(anyhow::anyhow!("the payload is not JSON: {e}")))?;
        message = message.with_content_type("application/json");
    }
    if let Some(key) = args.key {
        message = message.with_key(key);
    }
    for header in &args.headers {
        let Some((name, value)) = header.split_once('=') else {
            return Err(Failure::usage(anyhow::anyhow!(
                "--header {header:?}: write it as name=value"
            )));
        };
        message.headers_mut().try_insert(name, value)?;
    }
    let id = message.id();
    let receipt = conn.publish(&args.topic, message).await?;
    let position = receipt.position.as_ref().map(|p| match p {
        Position::Offset { partition, offset } => {
            json!({ "partition": partition, "offset": offset })
        }
        Position::Sequence { stream, sequence } => {
            json!({ "stream": stream, "sequence": sequence })
        }
        Position::EntryId(id) => json!({ "entry_id": id }),
        other => json!(format!("{other:?}")),
    });
    match output {
        Output::Json => output::json(&json!({
            "id": id.to_string(),
            "topic": args.topic,
            "position": position,
            "duplicate": receipt.duplicate,
        })),
        Output::Text => match position {
            Some(position) => println!("published {id} to {} at {position}", args.topic),
            None => println!("published {id} to {}", args.topic),
        },
    }
    Ok(())
}
