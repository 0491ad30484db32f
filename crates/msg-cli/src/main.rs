//! `msg`: publish, consume and manage dead letters on any broker that
//! `msg::connect` reaches, from a shell.
//!
//! Exit codes: 0 done; 1 the broker or the operation failed; 2 a usage or
//! configuration error (a bad URL, an unknown scheme, an invalid topic,
//! an operation the transport does not support); 3 `consume --count N`
//! received fewer than N before its timeout.
#![forbid(unsafe_code)]

mod consume;
mod dlq;
mod output;
mod publish;
mod tail;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use output::Output;

const EXAMPLES: &str = "\
Examples:
  export MSG_URL=redis://127.0.0.1:6379
  msg publish orders '{\"id\": 7}' --json --key customer-3
  msg consume orders --group audit --from earliest --count 10
  msg tail 'orders.>'
  msg dlq stats orders.dlq
  msg --output json ping | jq .capabilities";

/// Publish, consume and manage dead letters on any broker msg connects to.
#[derive(Debug, Parser)]
#[command(name = "msg", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// The broker: memory://NAME, redis://, nats:// (core), nats+js://
    /// (JetStream), amqp://, kafka://. Credentials in it are never printed.
    #[arg(short, long, env = "MSG_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// How results are printed: text, or one JSON document per result.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish one message.
    #[command(after_help = publish::EXAMPLES)]
    Publish(publish::Args),
    /// Receive messages and print them; each is acked once printed.
    #[command(after_help = consume::EXAMPLES)]
    Consume(consume::Args),
    /// Print every message on the matching topics as it arrives, until
    /// Ctrl-C.
    #[command(after_help = tail::EXAMPLES)]
    Tail(tail::Args),
    /// List, count, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// List the topics the broker holds, where it can (not RabbitMQ, not
    /// core NATS).
    #[command(after_help = "Example:\n  msg --url kafka://127.0.0.1:9092 topics")]
    Topics,
    /// Connect, and print the server's version (where the client learns
    /// it) and what the transport can do.
    #[command(after_help = "Example:\n  msg --url nats+js://127.0.0.1:4222 ping")]
    Ping,
    /// Print a completion script for a shell.
    #[command(after_help = "Example:\n  msg completions bash > /etc/bash_completion.d/msg")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure and the exit code it ends the process with.
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// A usage or configuration error: exit code 2.
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }

    /// Fewer messages than asked for: exit code 3.
    pub(crate) fn incomplete(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 3,
            error: error.into(),
        }
    }
}

/// msg's errors: the ones a user must fix before trying again are usage
/// errors; the rest are failures.
impl From<msg::Error> for Failure {
    fn from(error: msg::Error) -> Self {
        let code = match error {
            msg::Error::InvalidConfig { .. }
            | msg::Error::InvalidTopic { .. }
            | msg::Error::InvalidHeader { .. }
            | msg::Error::Unsupported { .. } => 2,
            _ => 1,
        };
        Self {
            code,
            error: anyhow::Error::msg(error.chain()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { code: 1, error }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("msg: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line, the whole chain, never a backtrace.
            eprintln!("msg: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let output = cli.output;
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "msg", &mut std::io::stdout());
        return Ok(());
    }
    let Some(url) = cli.url else {
        return Err(Failure::usage(anyhow::anyhow!(
            "no broker: pass --url or set MSG_URL (e.g. redis://127.0.0.1:6379)"
        )));
    };
    let conn = msg::connect(&url).await?;
    let result = match cli.command {
        Command::Publish(args) => publish::run(&conn, args, output).await,
        Command::Consume(args) => consume::run(&conn, args, output).await,
        Command::Tail(args) => tail::run(&conn, args, output).await,
        Command::Dlq(command) => dlq::run(&conn, command, output).await,
        Command::Topics => topics(&conn, output).await,
        Command::Ping => ping(&conn, &url, output).await,
        Command::Completions { .. } => unreachable!("handled above"),
    };
    // Close whatever happened: publishes are flushed, consumers leave.
    let closed = conn.close().await;
    result?;
    closed.map_err(Failure::from)
}

/// Prints the broker's topics.
async fn topics(conn: &msg::Connection, output: Output) -> Result<()> {
    let topics = msg::Subscriber::topics(conn).await?;
    match output {
        Output::Json => output::json(&serde_json::json!({ "topics": topics })),
        Output::Text => topics.iter().for_each(|t| println!("{t}")),
    }
    Ok(())
}

/// Prints the transport's capabilities.
async fn ping(conn: &msg::Connection, url: &str, output: Output) -> Result<()> {
    use msg::Publisher;
    let c = Publisher::capabilities(conn);
    // Where the client does not learn it (RabbitMQ's lapin, librdkafka): null.
    let server = msg::Subscriber::server_version(conn).await?;
    let json = serde_json::json!({
        "url": output::redact(url),
        "transport": c.transport,
        "server": server,
        "capabilities": {
            "persistent": c.persistent,
            "at_least_once": c.at_least_once,
            "consumer_groups": c.consumer_groups,
            "ordering": format!("{:?}", c.ordering),
            "replay": c.replay,
            "wildcards": c.wildcards,
            "native_dead_letter": c.native_dead_letter,
            "native_deliver_at": c.native_deliver_at,
            "native_ttl": c.native_ttl,
            "native_reply_to": c.native_reply_to,
            "max_message_size": c.max_message_size,
            "dead_letters": conn.dead_letters().map(|d| {
                let d = d.capabilities();
                serde_json::json!({ "read": d.read, "delete": d.delete })
            }).ok(),
        },
    });
    match output {
        Output::Json => output::json(&json),
        Output::Text => {
            println!(
                "connected to {} ({}, {})",
                output::redact(url),
                c.transport,
                server.as_deref().unwrap_or("server version unknown")
            );
            if let Some(caps) = json["capabilities"].as_object() {
                for (name, value) in caps {
                    println!("  {name}: {value}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
