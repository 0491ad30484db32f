//! The results: a table on stdout, the docs section and the ratio chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::measure::Row;

fn value(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" if v >= 1e6 => format!("{:.2} M", v / 1e6),
        "msg/s" if v >= 1e3 => format!("{:.1} k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn compare(row: &Row) -> String {
    if row.higher_is_better {
        format!("{:.2}×", row.compare)
    } else {
        format!("{:+.0} µs", row.compare)
    }
}

/// The results as a markdown table, with RustStream's figures where they
/// were measured.
pub(crate) fn table(rows: &[Row]) -> String {
    let peers = rows.iter().any(|r| r.ruststream.is_some());
    let mut out = String::from("| transport | metric | msg | raw client | msg vs raw |");
    out.push_str(if peers {
        " RustStream |\n|---|---|---|---|---|---|\n"
    } else {
        "\n|---|---|---|---|---|\n"
    });
    for r in rows {
        let _ = write!(
            out,
            "| {} | {} | {} {} | {} {} | {} |",
            r.transport,
            r.metric,
            value(r.msg, r.unit),
            r.unit,
            value(r.raw, r.unit),
            r.unit,
            compare(r)
        );
        if peers {
            match r.ruststream {
                Some(v) => {
                    let _ = write!(out, " {} {} |", value(v, r.unit), r.unit);
                }
                None => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Puts RustStream's figures (JSON lines of `{transport, metric, value}`,
/// as `ruststream-peer` prints them) beside the rows they match.
pub(crate) fn add_peers(rows: &mut [Row], path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Figure {
        transport: String,
        metric: String,
        value: f64,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let f: Figure = serde_json::from_str(line).with_context(|| format!("{line:?}"))?;
        if let Some(row) = rows
            .iter_mut()
            .find(|r| r.transport == f.transport && r.metric == f.metric)
        {
            row.ruststream = Some(f.value);
        }
    }
    Ok(())
}

pub(crate) fn print(rows: &[Row]) {
    println!("\n{}", table(rows));
}

/// The throughput ratios as horizontal bars, with the 0.95 goal marked.
pub(crate) fn svg(rows: &[Row]) -> String {
    let bars: Vec<&Row> = rows.iter().filter(|r| r.higher_is_better).collect();
    let (left, width, bar, gap) = (330.0, 400.0, 18.0, 8.0);
    let height = 40.0 + bars.len() as f64 * (bar + gap);
    let max = bars
        .iter()
        .map(|r| r.compare)
        .fold(1.2_f64, f64::max)
        .min(3.0);
    let x = |ratio: f64| left + width * (ratio.min(max) / max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"16\" font-weight=\"bold\">msg throughput / raw client throughput (goal ≥ 0.95)</text>\n",
        left + width + 70.0
    );
    for (i, r) in bars.iter().enumerate() {
        let y = 28.0 + i as f64 * (bar + gap);
        let colour = if r.compare >= 0.95 {
            "#2e7d32"
        } else {
            "#c62828"
        };
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\">{} · {}</text>\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}×</text>",
            y + 13.0,
            r.transport,
            r.metric,
            x(r.compare) - left,
            x(r.compare) + 4.0,
            y + 13.0,
            r.compare
        );
    }
    let goal = x(0.95);
    let _ = writeln!(
        out,
        "<line x1=\"{goal:.1}\" y1=\"24\" x2=\"{goal:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n</svg>",
        height - 4.0
    );
    out
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

const BEGIN: &str = "<!-- side-by-side results: written by `cargo xtask bench` -->";
const END: &str = "<!-- end of side-by-side results -->";

/// Rewrites the results section of docs/benchmarks.md and the chart.
pub(crate) fn write_docs(rows: &[Row], quick: bool) -> Result<()> {
    let dir = docs_dir();
    std::fs::write(dir.join("benchmarks.svg"), svg(rows))?;
    let machine = machine();
    let section = format!(
        "{BEGIN}\n\nMeasured {} on {machine}{}; medians of alternating runs.\n\n{}\n![msg vs raw throughput](benchmarks.svg)\n\n{END}",
        today(),
        if quick { " (a `--quick` run)" } else { "" },
        table(rows)
    );
    replace_section(BEGIN, END, &section)
}

/// Puts `section` (which starts with `begin` and ends with `end`) into
/// docs/benchmarks.md in place of the one there, or at its end.
pub(crate) fn replace_section(begin: &str, end: &str, section: &str) -> Result<()> {
    let path = docs_dir().join("benchmarks.md");
    let text = std::fs::read_to_string(&path).context("docs/benchmarks.md")?;
    let text = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(&path, text)?;
    println!("bench: wrote {}", path.display());
    Ok(())
}

pub(crate) fn machine() -> String {
    format!(
        "{}; clients: fred 10.1, async-nats 0.51, lapin 4.12, \
         rdkafka 0.39 (librdkafka 2.12.1); brokers as `cargo xtask brokers` starts them: \
         Redis 7.0, nats-server 2.15 (JetStream, file store), RabbitMQ 3.10, tansu 0.6 (SQLite storage)",
        cores()
    )
}

/// The machine's cores and CPU.
pub(crate) fn cores() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu})")
}

pub(crate) fn today() -> String {
    msg::raw::time::rfc3339(std::time::SystemTime::now())[..10].to_owned()
}
