//! Where the real brokers of `cargo xtask brokers up` are.
//!
//! `cargo xtask brokers up` writes `target/brokers/env` with
//! `MSG_TEST_<NAME>_URL` and `MSG_TEST_<NAME>_RESTART` lines. A variable set
//! in the environment wins over the file; `MSG_TEST_ENV_FILE` names another
//! file. A test that needs a broker that is not up fails, naming the
//! command that starts it: it is never skipped silently.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A running broker: its URL and the command that restarts it.
#[derive(Debug, Clone)]
pub struct BrokerEnv {
    name: String,
    url: String,
    restart: Option<String>,
}

impl BrokerEnv {
    /// The broker `name` (`redis`, `nats`, `rabbitmq`, `postgres`, `kafka`).
    ///
    /// # Panics
    ///
    /// When its URL is set nowhere, with the command that starts it.
    pub fn get(name: &str) -> Self {
        match Self::lookup(name) {
            Some(env) => env,
            None => panic!(
                "no {name} broker: MSG_TEST_{}_URL is set neither in the environment nor in {}.\n\
                 Start one with `cargo xtask brokers up {name}` \
                 (after `cargo xtask brokers install {name}` on a new machine).",
                name.to_uppercase(),
                env_file().display()
            ),
        }
    }

    /// The TLS listener of the broker `name`: its URL trusts the
    /// harness's CA ([`tls_ca`]); restarting restarts the broker.
    ///
    /// # Panics
    ///
    /// When it is set nowhere: TLS listeners are started on the native
    /// path of `cargo xtask brokers up` only.
    pub fn tls(name: &str) -> Self {
        let file = std::fs::read_to_string(env_file()).unwrap_or_default();
        let plain = Self::from_sources(name, &file, |var| std::env::var(var).ok());
        let tls = Self::from_sources(&format!("{name}_TLS"), &file, |var| std::env::var(var).ok());
        match (plain, tls) {
            (Some(plain), Some(tls)) => Self {
                name: name.to_owned(),
                url: tls.url,
                restart: plain.restart,
            },
            _ => panic!(
                "no TLS listener of {name}: MSG_TEST_{}_TLS_URL is set neither in the environment nor in {}.\n\
                 Start the broker with `cargo xtask brokers up --native {name}`, which gives it one \
                 (the Docker path has none).",
                name.to_uppercase(),
                env_file().display()
            ),
        }
    }

    /// The broker `name`, if its URL is set.
    pub fn lookup(name: &str) -> Option<Self> {
        let file = std::fs::read_to_string(env_file()).unwrap_or_default();
        Self::from_sources(name, &file, |var| std::env::var(var).ok())
    }

    /// A variable from `env` wins over a line of `file`.
    fn from_sources(name: &str, file: &str, env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let key = name.to_uppercase();
        let value = |var: &str| env(var).or_else(|| line(file, var));
        Some(Self {
            name: name.to_owned(),
            url: value(&format!("MSG_TEST_{key}_URL"))?,
            restart: value(&format!("MSG_TEST_{key}_RESTART")),
        })
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Restarts the broker with its restart command, keeping its data.
    pub async fn restart(&self) -> msg_core::Result<()> {
        self.restart_after(Duration::ZERO).await
    }

    /// Restarts the broker and keeps it down for `down` in between (an
    /// outage, not a blink), keeping its data.
    pub async fn restart_after(&self, down: Duration) -> msg_core::Result<()> {
        self.run_restart(down, false).await
    }

    /// Kills the broker with SIGKILL, as a crash would, and starts it
    /// again on the data it left: what survives is what the broker's own
    /// durability settings promise.
    pub async fn kill_and_restart(&self) -> msg_core::Result<()> {
        self.run_restart(Duration::ZERO, true).await
    }

    async fn run_restart(&self, down: Duration, kill: bool) -> msg_core::Result<()> {
        let Some(command) = self.restart.clone() else {
            return Err(msg_core::Error::invalid_config(format!(
                "broker {} has no restart command",
                self.name
            )));
        };
        let name = self.name.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .args(["-c", &command])
                .env(RESTART_DOWN_MS, down.as_millis().to_string())
                .env(RESTART_KILL, if kill { "1" } else { "0" })
                .output()
        })
        .await
        .map_err(|e| msg_core::Error::Connection(Box::new(e)))?
        .map_err(|e| msg_core::Error::Connection(Box::new(e)))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(msg_core::Error::Connection(
                format!(
                    "restarting {name} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )
                .into(),
            ))
        }
    }
}

/// The PEM file of the CA that signed the harness brokers' TLS
/// certificates (`MSG_TEST_TLS_CA`).
///
/// # Panics
///
/// When it is set nowhere, naming the command that makes it.
pub fn tls_ca() -> PathBuf {
    harness_file("MSG_TEST_TLS_CA")
}

/// The PEM file of a CA that signed no certificate a harness broker shows
/// (`MSG_TEST_TLS_OTHER_CA`): a client trusting only it must refuse them.
///
/// # Panics
///
/// When it is set nowhere, naming the command that makes it.
pub fn other_ca() -> PathBuf {
    harness_file("MSG_TEST_TLS_OTHER_CA")
}

/// A client certificate and its key (PEM files) of the harness's CA, for
/// mutual TLS (`MSG_TEST_TLS_CLIENT_CERT`, `MSG_TEST_TLS_CLIENT_KEY`): a
/// broker that checks client certificates takes it.
///
/// # Panics
///
/// When they are set nowhere, naming the command that makes them.
pub fn tls_client() -> (PathBuf, PathBuf) {
    (
        harness_file("MSG_TEST_TLS_CLIENT_CERT"),
        harness_file("MSG_TEST_TLS_CLIENT_KEY"),
    )
}

/// A client certificate and its key of the other CA
/// ([`other_ca`]): a broker that checks client certificates refuses it.
///
/// # Panics
///
/// When they are set nowhere, naming the command that makes them.
pub fn other_tls_client() -> (PathBuf, PathBuf) {
    (
        harness_file("MSG_TEST_TLS_OTHER_CLIENT_CERT"),
        harness_file("MSG_TEST_TLS_OTHER_CLIENT_KEY"),
    )
}

fn harness_file(var: &str) -> PathBuf {
    let file = std::fs::read_to_string(env_file()).unwrap_or_default();
    std::env::var(var)
        .ok()
        .or_else(|| line(&file, var))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{var} is set neither in the environment nor in {}: \
                 `cargo xtask brokers up --native` makes the harness's CA",
                env_file().display()
            )
        })
}

/// The value of `var` in an env file's text.
fn line(file: &str, var: &str) -> Option<String> {
    file.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == var)
        .map(|(_, v)| v.trim().to_owned())
}

/// How long `cargo xtask brokers restart` keeps a broker down, in
/// milliseconds (default 0).
const RESTART_DOWN_MS: &str = "MSG_BROKERS_RESTART_DOWN_MS";
/// Asks the restart command for a SIGKILL instead of a clean stop.
const RESTART_KILL: &str = "MSG_BROKERS_RESTART_KILL";

/// The env file `cargo xtask brokers up` writes.
pub fn env_file() -> PathBuf {
    if let Some(file) = std::env::var_os("MSG_TEST_ENV_FILE") {
        return PathBuf::from(file);
    }
    // crates/msg-testkit -> the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/brokers/env")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_environment_and_names_the_command_when_missing() {
        // `set_var` needs `unsafe` in edition 2024: use a name nobody sets.
        let missing = std::panic::catch_unwind(|| BrokerEnv::get("no-such-broker")).unwrap_err();
        let text = missing
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains("cargo xtask brokers up no-such-broker"),
            "{text}"
        );
        assert!(BrokerEnv::lookup("no-such-broker").is_none());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file =
            "# comment\nMSG_TEST_REDIS_URL=redis://127.0.0.1:1\nMSG_TEST_REDIS_RESTART=true\n";
        let from_file = BrokerEnv::from_sources("redis", file, |_| None).unwrap();
        assert_eq!(from_file.url(), "redis://127.0.0.1:1");
        assert_eq!(from_file.restart.as_deref(), Some("true"));
        let env =
            |var: &str| (var == "MSG_TEST_REDIS_URL").then(|| "redis://elsewhere:2".to_owned());
        assert_eq!(
            BrokerEnv::from_sources("redis", file, env).unwrap().url(),
            "redis://elsewhere:2"
        );
        assert!(BrokerEnv::from_sources("nats", file, |_| None).is_none());
    }

    #[tokio::test]
    async fn restart_runs_the_command_and_reports_failure() {
        let ok =
            BrokerEnv::from_sources("x", "MSG_TEST_X_URL=u\nMSG_TEST_X_RESTART=true", |_| None)
                .unwrap();
        ok.restart().await.unwrap();
        let failing = BrokerEnv::from_sources(
            "x",
            "MSG_TEST_X_URL=u\nMSG_TEST_X_RESTART=echo boom >&2; exit 3",
            |_| None,
        )
        .unwrap();
        let err = failing.restart().await.unwrap_err();
        assert!(err.chain().contains("boom"), "{}", err.chain());
        let none = BrokerEnv::from_sources("x", "MSG_TEST_X_URL=u", |_| None).unwrap();
        assert!(none.restart().await.is_err());
    }
}
