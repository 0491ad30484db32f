//! `cargo xtask fuzz`: libFuzzer on the decoders and parsers (`fuzz/`).
//!
//! The machine's one toolchain is stable, and no nightly can be fetched,
//! so the targets are built with cargo-fuzz's `--sanitizer none`: coverage
//! guidance and Rust's own checks (debug assertions, overflow checks, the
//! targets' assertions), without AddressSanitizer, which matters little in
//! a crate that forbids `unsafe`. Each target runs from its corpus in
//! `fuzz/corpus/<target>/`, which keeps what it finds new and is then
//! minimised; a crash stops the run and its input is in
//! `fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cache_dir, cargo_bin, status};

/// The cargo-fuzz release installed into the cache.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

const USAGE: &str = "usage: cargo xtask fuzz [--quick | --seconds N] [TARGET...]

Runs each fuzz target (all when none is named) for N seconds (default 300;
--quick: 30), from its corpus in fuzz/corpus/TARGET, then minimises the
corpus. Prints how many inputs each ran; a crash fails, leaving its input
in fuzz/artifacts/TARGET.";

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = 300;
    let mut named = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => seconds = 30,
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("--seconds takes a number")?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}\n\n{USAGE}"),
            target => named.push(target.to_owned()),
        }
    }
    let dir = root.join("fuzz");
    let all = targets(&dir)?;
    for name in &named {
        if !all.contains(name) {
            bail!("unknown fuzz target {name:?}; known: {}", all.join(", "));
        }
    }
    let targets = if named.is_empty() { all } else { named };
    let cargo_fuzz = install()?;
    let mut report = Vec::new();
    for target in &targets {
        let started = Instant::now();
        let runs = fuzz(&cargo_fuzz, &dir, target, seconds)?;
        minimise(&cargo_fuzz, &dir, target)?;
        let kept = std::fs::read_dir(dir.join("corpus").join(target))?.count();
        println!(
            "fuzz: {target}: {runs} inputs in {:.0} s without a crash; corpus {kept} inputs",
            started.elapsed().as_secs_f64()
        );
        report.push((target.clone(), runs, kept));
    }
    println!("\n| target | inputs run | corpus |\n|---|---|---|");
    for (target, runs, kept) in report {
        println!("| `{target}` | {runs} | {kept} |");
    }
    Ok(())
}

/// The targets `fuzz/Cargo.toml` names.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    Ok(manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            bin.lines()
                .find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect())
}

/// cargo-fuzz from the cache, installed there the first time.
fn install() -> Result<PathBuf> {
    let root = cache_dir()?.join("cargo-fuzz");
    let bin = root.join("bin/cargo-fuzz");
    if bin.exists() {
        return Ok(bin);
    }
    println!(
        "fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        root.display()
    );
    let mut cargo = Command::new(cargo_bin());
    cargo
        .args(["install", "cargo-fuzz", "--locked", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .arg("--root")
        .arg(&root);
    status(cargo)?;
    Ok(bin)
}

fn cargo_fuzz(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    // Invoked as a cargo subcommand: its first argument is `fuzz`.
    cmd.arg("fuzz").current_dir(dir);
    cmd
}

/// Runs `target` for `seconds`; the number of inputs libFuzzer ran.
fn fuzz(bin: &Path, dir: &Path, target: &str, seconds: u64) -> Result<u64> {
    let mut cmd = cargo_fuzz(bin, dir);
    cmd.args(["run", "--sanitizer", "none", "--debug-assertions", target])
        .args(["--", "-print_final_stats=1"])
        .arg(format!("-max_total_time={seconds}"))
        .stderr(Stdio::piped());
    let output = cmd
        .spawn()
        .with_context(|| format!("running cargo fuzz for {target}"))?
        .wait_with_output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // The panic and what libFuzzer says of the input, not the
        // backtraces in between.
        let lines: Vec<&str> = log.lines().collect();
        let from = lines
            .iter()
            .position(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"))
            .unwrap_or(lines.len().saturating_sub(40));
        let shown: Vec<&str> = lines[from..]
            .iter()
            .copied()
            .filter(|l| {
                !l.trim_start().starts_with("at ") && !l.trim_start().starts_with(char::is_numeric)
            })
            .take(40)
            .collect();
        bail!(
            "fuzz target {target} failed ({}); its input is in fuzz/artifacts/{target}/:\n{}",
            output.status,
            shown.join("\n")
        );
    }
    // `stat::number_of_executed_units: N` in the final stats.
    log.lines()
        .find_map(|l| {
            l.strip_prefix("stat::number_of_executed_units:")
                .and_then(|n| n.trim().parse().ok())
        })
        .with_context(|| format!("libFuzzer printed no final stats for {target}:\n{log}"))
}

/// Keeps the smallest set of inputs with the same coverage.
fn minimise(bin: &Path, dir: &Path, target: &str) -> Result<()> {
    let mut cmd = cargo_fuzz(bin, dir);
    cmd.args(["cmin", "--sanitizer", "none", "--debug-assertions", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    status(cmd).with_context(|| format!("minimising the corpus of {target}"))
}
