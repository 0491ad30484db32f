//! What the suite needs from a transport, and helpers for the cases.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use msg_core::{Capabilities, Connection, Delivery, DeliveryStream, Result};

/// The environment variable naming the file skipped cases are recorded in.
pub const SKIPS_FILE: &str = "MSG_CONFORMANCE_SKIPS";

type ConnectFn = dyn Fn() -> BoxFuture<'static, Result<Connection>> + Send + Sync;
type RestartFn = dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync;
type ForeignFn = dyn Fn(String, Vec<u8>) -> BoxFuture<'static, Result<()>> + Send + Sync;
type PlaceFn = dyn Fn(&str, &str) -> String + Send + Sync;

/// A transport under test: how to connect to it, what it guarantees, and
/// optionally how to restart its broker.
#[derive(Clone)]
pub struct Harness {
    name: String,
    capabilities: Capabilities,
    connect: Arc<ConnectFn>,
    restart: Option<Arc<RestartFn>>,
    foreign: Option<Arc<ForeignFn>>,
    dead_letters_at: Option<Arc<PlaceFn>>,
    timeout: Duration,
    quiet: Duration,
    /// Tells this harness's consumer groups from those of earlier runs.
    run: String,
    /// Environment for child processes a case starts (see
    /// [`Harness::with_child_env`]).
    child_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .field("restart", &self.restart.is_some())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness named `name` (used in topic names and messages); `connect`
    /// opens a new connection to the broker under test each time.
    pub fn new<F, Fut>(name: impl Into<String>, capabilities: Capabilities, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Connection>> + Send + 'static,
    {
        Self {
            name: name.into(),
            capabilities,
            connect: Arc::new(move || Box::pin(connect())),
            restart: None,
            foreign: None,
            dead_letters_at: None,
            timeout: Duration::from_secs(15),
            quiet: Duration::from_millis(300),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            child_env: Vec::new(),
        }
    }

    /// An environment variable for the child processes a case starts
    /// (the consumer [`crate::faults::consumer_killed_mid_stream`] kills),
    /// so that they reach a broker only this process knows: an
    /// in-process mock cluster's address, say.
    pub fn with_child_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.child_env.push((name.into(), value.into()));
        self
    }

    pub(crate) fn child_env(&self) -> &[(String, String)] {
        &self.child_env
    }

    /// How to restart the broker (keeping its data), for the reconnect case.
    pub fn with_restart<F, Fut>(mut self, restart: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.restart = Some(Arc::new(move || Box::pin(restart())));
        self
    }

    /// How long a case waits for an expected message (default 15 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a case waits to be sure that no message comes (default 300 ms).
    pub fn with_quiet_period(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The transport's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the transport guarantees.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// How long to wait for an expected message.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long to wait to be sure nothing comes.
    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    /// Opens a new connection; panics with the transport's error if it fails.
    pub async fn connect(&self) -> Connection {
        match (self.connect)().await {
            Ok(c) => c,
            Err(e) => panic!("{}: connect failed: {}", self.name, e.chain()),
        }
    }

    /// How another client publishes: `publish(topic, payload)` with the
    /// broker's own client, nothing of msg's (no id, no headers), for the
    /// case on foreign messages' ids.
    pub fn with_foreign_publish<F, Fut>(mut self, publish: F) -> Self
    where
        F: Fn(String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.foreign = Some(Arc::new(move |topic, payload| {
            Box::pin(publish(topic, payload))
        }));
        self
    }

    /// Publishes `payload` to `topic` as another client would, if the
    /// harness knows how ([`with_foreign_publish`](Self::with_foreign_publish)).
    pub async fn foreign_publish(&self, topic: &str, payload: &[u8]) -> Option<Result<()>> {
        match &self.foreign {
            Some(publish) => Some(publish(topic.to_owned(), payload.to_vec()).await),
            None => None,
        }
    }

    /// Where the dead-letter manager finds the dead letters of a topic's
    /// consumer group, when not on the dead-letter topic `<topic>.dlq`
    /// (RabbitMQ keeps them in the group's queue `<queue>.dlq`).
    pub fn with_dead_letters_at(
        mut self,
        place: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.dead_letters_at = Some(Arc::new(place));
        self
    }

    /// Where the dead letters of `topic`'s group `group` are read.
    pub fn dead_letters_at(&self, topic: &str, group: &str) -> String {
        match &self.dead_letters_at {
            Some(place) => place(topic, group),
            None => msg_core::dead_letter_topic(topic),
        }
    }

    /// Restarts the broker, if the harness knows how.
    pub async fn restart(&self) -> Option<Result<()>> {
        match &self.restart {
            Some(restart) => Some(restart().await),
            None => None,
        }
    }

    /// A consumer group name unique to this harness: `<name>-<random>`.
    /// Groups outlive a test run on the broker, and one run must not join
    /// the groups another left behind.
    pub fn group(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// Reports that `case` did not run, and why: prints `SKIP <case>:
    /// <reason>` where the test runner does not capture it and, when
    /// `MSG_CONFORMANCE_SKIPS` names a file, appends `<harness> <case>:
    /// <reason>` to it, so that the run's summary counts skipped cases
    /// apart from passed ones (`cargo xtask test` prints it).
    pub fn skip(&self, case: &str, reason: &str) {
        let _ = writeln!(std::io::stderr(), "SKIP {case}: {reason}");
        if let Some(path) = std::env::var_os(SKIPS_FILE) {
            let line = format!("{} {case}: {reason}\n", self.name);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| file.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!("cannot record a skipped case in {path:?}: {e}");
            }
        }
    }

    /// A topic name unique to this run: `ct.<case>.<random>`.
    pub fn topic(&self, case: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("ct.{}.{}", case.replace('_', "-"), &id[..12])
    }
}

/// The next delivery within `timeout`; `None` if the stream ended or nothing
/// came. Panics on a stream error.
pub async fn recv(stream: &mut DeliveryStream, timeout: Duration) -> Option<Delivery> {
    match tokio::time::timeout(timeout, stream.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("stream error: {}", e.chain()),
        Ok(None) | Err(_) => None,
    }
}

/// Receives until `n` distinct message ids arrived, acking each; panics
/// with what was missing when `timeout` passes without progress.
pub async fn collect(stream: &mut DeliveryStream, n: usize, timeout: Duration) -> Vec<Delivery> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while seen.len() < n {
        let Some(mut d) = recv(stream, timeout).await else {
            panic!(
                "received {} of {n} messages before waiting {timeout:?} in vain",
                seen.len()
            );
        };
        d.ack().await.expect("ack");
        if seen.insert(d.message().id()) {
            out.push(d);
        }
    }
    out
}
