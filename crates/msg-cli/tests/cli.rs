//! The built `msg` binary, run as a user runs it, against the real brokers
//! `cargo xtask brokers up redis nats` starts.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use msg::{Message, Publisher, StartPosition, Subscriber, Subscription, Uuid};
use msg_testkit::{BrokerEnv, recv};
use serde_json::Value;

fn msg(args: &[&str]) -> Output {
    msg_with_input(args, None)
}

fn msg_with_input(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msg"))
        .args(args)
        .env_remove("MSG_URL")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run msg");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("msg ran")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One JSON document per line.
fn documents(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn topic(name: &str) -> String {
    format!("cli.{name}.{}", &Uuid::new_v4().simple().to_string()[..10])
}

#[test]
fn every_command_explains_itself_with_examples() {
    for command in [
        &["publish"][..],
        &["consume"],
        &["tail"],
        &["topics"],
        &["ping"],
        &["completions"],
        &["dlq", "stats"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "replay"],
        &["dlq", "purge"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = msg(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Example"), "{args:?} has no example");
    }
    let out = msg(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("_msg()"),
        "a bash completion function"
    );
}

#[test]
fn bad_urls_are_one_line_usage_errors() {
    for (url, says) in [
        ("no-scheme", "needs a scheme"),
        ("foo://host", "no transport for URL scheme \"foo\""),
        ("redis://127.0.0.1:6379?nonsense=1", "nonsense"),
    ] {
        let out = msg(&["--url", url, "ping"]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("msg: error: "), "{err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(
            !err.contains("backtrace") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = msg(&["ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("MSG_URL"), "{}", stderr(&out));
}

#[test]
fn credentials_are_never_printed() {
    // Nothing listens on port 1: the connection fails.
    let out = msg(&["--url", "amqp://guest:s3cret-pw@127.0.0.1:1/%2f", "ping"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("s3cret-pw"), "{all}");
    let redis = BrokerEnv::get("redis").url().to_owned();
    let with_user = redis.replacen("redis://", "redis://default:s3cret-pw@", 1);
    let out = msg(&["--url", &with_user, "ping"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("s3cret-pw"), "{all}");
}

/// publish → consume through the binary, on a real broker.
fn round_trip(url: &str) {
    let t = topic("roundtrip");
    let out = msg(&[
        "--url",
        url,
        "--output",
        "json",
        "publish",
        &t,
        r#"{"id": 7}"#,
        "--json",
        "--key",
        "customer-3",
        "--header",
        "tenant=acme",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let published = &documents(&out)[0];
    let id = published["id"].as_str().expect("an id").to_owned();
    let out = msg_with_input(&["--url", url, "publish", &t, "-"], Some(b"from stdin"));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = msg(&[
        "--url",
        url,
        "--output",
        "json",
        "consume",
        &t,
        "--from",
        "earliest",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = documents(&out);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["key"], "customer-3");
    assert_eq!(got[0]["payload"], r#"{"id": 7}"#);
    assert_eq!(got[0]["headers"]["tenant"], "acme");
    assert_eq!(got[0]["headers"]["content-type"], "application/json");
    assert_eq!(got[1]["payload"], "from stdin");

    let out = msg(&["--url", url, "--output", "json", "topics"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let topics = &documents(&out)[0]["topics"];
    assert!(
        topics.as_array().unwrap().iter().any(|x| x == t.as_str()),
        "{t} in {topics}"
    );

    // Fewer than asked for: exit code 3, after the timeout.
    let out = msg(&[
        "--url",
        url,
        "consume",
        &t,
        "--from",
        "earliest",
        "--count",
        "5",
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("received 2 of 5"), "{}", stderr(&out));
}

#[test]
fn publish_then_consume_on_redis() {
    round_trip(BrokerEnv::get("redis").url());
}

#[test]
fn publish_then_consume_on_nats_jetstream() {
    let url = BrokerEnv::get("nats")
        .url()
        .replacen("nats://", "nats+js://", 1);
    round_trip(&url);
}

#[test]
fn ping_reports_capabilities() {
    let url = BrokerEnv::get("redis").url().to_owned();
    let out = msg(&["--url", &url, "--output", "json", "ping"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = &documents(&out)[0];
    assert_eq!(doc["transport"], "redis");
    let server = doc["server"].as_str().expect("Redis says its version");
    assert!(server.starts_with("Redis "), "{server}");
    let nats = BrokerEnv::get("nats").url().to_owned();
    let out = msg(&["--url", &nats, "--output", "json", "ping"]);
    let server = documents(&out)[0]["server"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(server.starts_with("nats-server 2."), "{server}");
    assert_eq!(doc["capabilities"]["consumer_groups"], true);
    assert_eq!(doc["capabilities"]["dead_letters"]["delete"], true);
}

/// Six messages dead-lettered with two reasons, then stats, list,
/// replay and purge through the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_redis() {
    let url = BrokerEnv::get("redis").url().to_owned();
    let t = topic("dlq");
    let dlq = format!("{t}.dlq");
    let conn = msg::connect(&url).await.unwrap();
    let mut stream = conn
        .subscribe(
            Subscription::new(&t)
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    for i in 0..6 {
        conn.publish(&t, Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
    for _ in 0..6 {
        let mut d = recv(&mut stream, Duration::from_secs(10))
            .await
            .expect("a delivery");
        let i: u32 = std::str::from_utf8(d.message().payload()).unwrap()[1..]
            .parse()
            .unwrap();
        let reason = if i.is_multiple_of(2) {
            "timeout calling billing"
        } else {
            "bad payload"
        };
        d.dead_letter(reason).await.unwrap();
    }
    let run = |args: Vec<&str>| {
        let url = url.clone();
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec![
                    "--url".to_owned(),
                    url,
                    "--output".to_owned(),
                    "json".to_owned(),
                ];
                all.extend(args);
                msg(&all.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };
    let out = run(vec!["dlq", "stats", &dlq]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = &documents(&out)[0];
    assert_eq!(stats["total"], 6);
    assert_eq!(stats["by_reason"]["bad payload"], 3);
    assert_eq!(stats["by_reason"]["timeout calling billing"], 3);

    let out = run(vec![
        "dlq", "list", &dlq, "--reason", "timeout", "--limit", "2",
    ])
    .await;
    let page = &documents(&out)[0];
    assert_eq!(page["letters"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().expect("a next page").to_owned();
    let out = run(vec![
        "dlq", "list", &dlq, "--reason", "timeout", "--after", &next,
    ])
    .await;
    assert_eq!(documents(&out)[0]["letters"].as_array().unwrap().len(), 1);
    let first = page["letters"][0]["id"].as_str().unwrap().to_owned();
    let out = run(vec!["dlq", "show", &dlq, &first]).await;
    assert_eq!(documents(&out)[0]["reason"], "timeout calling billing");
    assert_eq!(documents(&out)[0]["original_topic"], t.as_str());

    let out = run(vec!["dlq", "replay", &dlq, "--reason", "timeout"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(documents(&out)[0]["replayed"], 3);
    assert_eq!(documents(&out)[0]["removed"], 3);
    for _ in 0..3 {
        let mut d = recv(&mut stream, Duration::from_secs(10))
            .await
            .expect("a replay");
        assert_eq!(d.message().header("msg-replay-count"), Some("1"));
        d.ack().await.unwrap();
    }

    let out = run(vec!["dlq", "purge", &dlq]).await;
    assert_eq!(out.status.code(), Some(2), "purge without --yes refuses");
    let out = run(vec!["dlq", "purge", &dlq, "--dry-run"]).await;
    assert_eq!(documents(&out)[0]["removed"], 3);
    let out = run(vec!["dlq", "purge", &dlq, "--yes"]).await;
    assert_eq!(documents(&out)[0]["removed"], 3);
    let out = run(vec!["dlq", "stats", &dlq]).await;
    assert_eq!(documents(&out)[0]["total"], 0);
    conn.close().await.unwrap();
}

/// The CLI reference in docs/cli.md is the binary's own help: it cannot
/// drift. `MSG_WRITE_DOCS=1` rewrites it.
#[test]
fn the_reference_in_the_docs_is_the_help() {
    let mut text = String::from(
        "# The `msg` command-line tool\n\n\
         Generated from the binary's `--help` (a test checks that it is).\n\
         Install it with `cargo install --path crates/msg-cli`.\n\n\
         Every transport is compiled in. A `memory://NAME` broker lives inside\n\
         one `msg` process, so what one command publishes the next cannot\n\
         consume: use it to try the commands, and a real broker for the rest.\n\
         On RabbitMQ, the `dlq` commands take a group's dead-letter queue\n\
         (`<queue>.dlq`, e.g. `orders:billing.dlq`); see\n\
         [operations](operations.md).\n",
    );
    for command in [
        &[][..],
        &["publish"],
        &["consume"],
        &["tail"],
        &["dlq"],
        &["dlq", "stats"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "replay"],
        &["dlq", "purge"],
        &["topics"],
        &["ping"],
        &["completions"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = msg(&args);
        let title = if command.is_empty() {
            "msg".to_owned()
        } else {
            format!("msg {}", command.join(" "))
        };
        text.push_str(&format!("\n## `{title}`\n\n```text\n{}```\n", stdout(&out)));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    if std::env::var_os("MSG_WRITE_DOCS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let docs = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        docs == text,
        "docs/cli.md is not the help of the binary: run MSG_WRITE_DOCS=1 cargo test -p msg-cli --test cli"
    );
}

/// `msg tail` in a terminal (a pty from util-linux's `script`): it prints
/// messages as they arrive, and Ctrl-C typed at the terminal stops it
/// cleanly (exit code 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_as_messages_arrive_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};

    let url = BrokerEnv::get("nats").url().to_owned();
    let root = topic("tail");
    // `exec`: the tool is the terminal's foreground process itself, so
    // the Ctrl-C reaches it alone. script(1) runs the command with
    // `$SHELL -c`; bash execs a lone command, dash does not and dies of
    // the SIGINT itself (exit 130) while the tool stops cleanly. SHELL is
    // pinned to dash so the test runs alike wherever it runs.
    let command = format!(
        "exec {} --url {url} tail '{root}.>'",
        env!("CARGO_BIN_EXE_msg")
    );
    let mut child = Command::new("script")
        .args([
            "--quiet",
            "--flush",
            "--return",
            "--command",
            &command,
            "/dev/null",
        ])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1), from util-linux, runs the tool in a pty");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let terminal = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(terminal).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = async |want: &str, seen: &mut Vec<String>| {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.recv().await {
                seen.push(line.clone());
                if line.contains(want) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "waited for {want:?}; the terminal showed {seen:#?}"
        );
    };
    wait_for("Ctrl-C to stop", &mut seen).await;
    let conn = msg::connect(&url).await.unwrap();
    for (i, sub) in ["a", "b.c", "d"].iter().enumerate() {
        conn.publish(
            &format!("{root}.{sub}"),
            Message::new(format!("tailed {i}")),
        )
        .await
        .unwrap();
        // Each shows before the next is sent: printed as it arrives.
        wait_for(&format!("tailed {i}"), &mut seen).await;
    }
    // Ctrl-C, typed at the terminal.
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    wait_for("stopped", &mut seen).await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "tail ended with {status}; the terminal showed {seen:#?}"
    );
    conn.close().await.unwrap();
}
