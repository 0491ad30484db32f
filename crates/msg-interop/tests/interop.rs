//! CloudEvents between msg and the official CloudEvents Python SDK, over
//! each real broker with that broker's usual Python client
//! (`tests/peer.py`): an event the SDK and client write reaches an msg
//! handler whole, and an event msg writes is read whole by the SDK.
//!
//! The brokers are those of `cargo xtask brokers up redis nats rabbitmq
//! kafka`; the Python side is a virtual environment `cargo xtask test`
//! makes (`MSG_INTEROP_PYTHON` names its interpreter).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use msg::{Event, JsonCodec, Publisher, StartPosition, Subscriber, Subscription};
use msg_testkit::{BrokerEnv, recv};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn python() -> PathBuf {
    let python = std::env::var_os("MSG_INTEROP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("MSG_XTASK_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("msg-xtask"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/msg-xtask"))
                })?;
            Some(cache.join("interop-venv/bin/python"))
        })
        .filter(|p| p.exists());
    python.unwrap_or_else(|| {
        panic!(
            "no Python with the CloudEvents SDK and the brokers' clients: \
             `cargo xtask test --transport interop` installs them (or set MSG_INTEROP_PYTHON)"
        )
    })
}

fn peer() -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer.py"))
        .kill_on_drop(true);
    cmd
}

fn topic() -> String {
    format!("interop.{}", uuid::Uuid::now_v7().simple())
}

/// 2026-12-02T10:00:00.25+01:00, the time of the Python side's event.
fn python_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_202_000_250)
}

/// Python publishes its event; msg, subscribed first, reads it.
async fn from_python(broker: &str, env: &str, url: &str) {
    let conn = msg::connect(url).await.expect("connect");
    let topic = topic();
    let mut stream = conn
        .subscribe(
            Subscription::new(&topic)
                .group("interop")
                .start(StartPosition::Earliest),
        )
        .await
        .expect("subscribe");
    let env_url = BrokerEnv::get(env).url().to_owned();
    let published = peer()
        .args(["publish", broker, &env_url, &topic])
        .output()
        .await
        .expect("python runs");
    assert!(
        published.status.success(),
        "peer.py publish {broker}: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let mut delivery = recv(&mut stream, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the Python event did not arrive over {broker}"));
    let event = Event::<Value>::from_message(delivery.message(), &JsonCodec)
        .unwrap_or_else(|e| panic!("{broker}: {:?} is not an event: {e}", delivery.message()));
    delivery.ack().await.expect("ack");
    assert_eq!(event.id, "py-1", "{broker}");
    assert_eq!(event.source, "/python/orders", "{broker}");
    assert_eq!(event.ty, "com.example.order.created", "{broker}");
    assert_eq!(
        event.subject.as_deref(),
        Some("order 1 \u{2713}"),
        "{broker}"
    );
    assert_eq!(event.time, Some(python_time()), "{broker}");
    assert_eq!(
        event.datacontenttype.as_deref(),
        Some("application/json"),
        "{broker}"
    );
    assert_eq!(
        event.extensions,
        [("region".to_owned(), "eu-west".to_owned())],
        "{broker}"
    );
    assert_eq!(
        event.data,
        json!({"order": 1, "from": "python"}),
        "{broker}"
    );
    conn.close().await.expect("close");
}

/// msg publishes an event in its transport's binding; Python, listening
/// first, reads it with the SDK. `percent_encoded`: the binding writes
/// values percent-encoded (the HTTP-style ones: Redis, NATS).
async fn to_python(
    broker: &str,
    env: &str,
    url: &str,
    listens_from_now: bool,
    percent_encoded: bool,
) {
    let conn = msg::connect(url).await.expect("connect");
    let topic = topic();
    let env_url = BrokerEnv::get(env).url().to_owned();
    let mut child = peer()
        .args(["consume", broker, &env_url, &topic])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    // What it says after `ready`, for the failure message.
    let mut said_after_ready = None;
    if listens_from_now {
        // Wait until it listens: what is published before is not for it.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(
            matches!(&ready, Ok(Ok(Some(l))) if l == "ready"),
            "peer.py consume {broker} did not get ready: {ready:?}"
        );
        said_after_ready = Some(tokio::spawn(async move {
            let mut said = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                said.push(line);
            }
            said.join("\n")
        }));
    }
    let event = Event::new("/msg/orders", "com.example.order.paid", json!({"order": 2}))
        .with_id("msg-1")
        .with_subject("order 2 \u{2713}")
        .with_extension("region", "eu-west");
    let event = Event {
        time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_205_600_500)),
        ..event
    };
    let binding = Publisher::capabilities(&conn).cloudevents;
    let message = event.to_message(&JsonCodec, binding).expect("encode");
    conn.publish(&topic, message).await.expect("publish");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("python finished")
        .expect("python ran");
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if let Some(said) = said_after_ready {
        stderr.push_str(&said.await.unwrap_or_default());
    }
    assert!(
        output.status.success(),
        "peer.py consume {broker}: {stderr}"
    );
    let read: Value = serde_json::from_slice(&output.stdout).expect("peer.py prints JSON");
    let attributes = &read["attributes"];
    assert_eq!(attributes["id"], "msg-1", "{broker}: {read}");
    assert_eq!(attributes["source"], "/msg/orders", "{broker}: {read}");
    assert_eq!(
        attributes["type"], "com.example.order.paid",
        "{broker}: {read}"
    );
    assert_eq!(attributes["specversion"], "1.0", "{broker}: {read}");
    let subject = attributes["subject"].as_str().unwrap_or_default();
    if percent_encoded {
        // The binding percent-encodes values; the SDK (1.12) hands them
        // over still encoded, where the binding says receivers decode.
        assert_eq!(subject, "order%202%20%E2%9C%93", "{broker}: {read}");
        assert_eq!(
            msg::raw::url::percent_decode(subject).as_deref(),
            Ok("order 2 \u{2713}"),
            "{broker}: {read}"
        );
    } else {
        assert_eq!(subject, "order 2 \u{2713}", "{broker}: {read}");
    }
    assert_eq!(
        attributes["time"], "2026-12-02T10:00:00.5Z",
        "{broker}: {read}"
    );
    assert_eq!(
        attributes["datacontenttype"], "application/json",
        "{broker}: {read}"
    );
    assert_eq!(attributes["region"], "eu-west", "{broker}: {read}");
    assert_eq!(read["data"], json!({"order": 2}), "{broker}: {read}");
    conn.close().await.expect("close");
}

fn url(env: &str) -> String {
    BrokerEnv::get(env).url().to_owned()
}

#[tokio::test]
async fn kafka_both_ways() {
    from_python("kafka", "kafka", &url("kafka")).await;
    to_python("kafka", "kafka", &url("kafka"), false, false).await;
}

#[tokio::test]
async fn redis_both_ways() {
    from_python("redis", "redis", &url("redis")).await;
    to_python("redis", "redis", &url("redis"), false, true).await;
}

#[tokio::test]
async fn nats_both_ways() {
    from_python("nats", "nats", &url("nats")).await;
    to_python("nats", "nats", &url("nats"), true, true).await;
}

#[tokio::test]
async fn rabbitmq_both_ways() {
    from_python("rabbitmq", "rabbitmq", &url("rabbitmq")).await;
    to_python("rabbitmq", "rabbitmq", &url("rabbitmq"), true, false).await;
}

/// What the assertions above compare with is what the Python side writes.
#[test]
fn the_python_time_is_the_one_peer_py_writes() {
    let peer = include_str!("peer.py");
    assert!(peer.contains("2026-12-02T10:00:00.25+01:00"));
    assert_eq!(
        msg::raw::time::rfc3339(python_time()),
        "2026-12-02T09:00:00.25Z"
    );
}
