//! `modelgate shadow report <model> --from <records>`: the offline
//! comparison of a model's shadow versions with its champion, computed from
//! stored records alone (no gateway needed), as a table, `--json` or a
//! self-contained HTML page with plots.

pub mod html;
pub mod source;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::when::{format_ms, parse_when_ms};
use crate::server::config::KafkaFlags;
use source::{ReadTally, SourceOptions};
use stats::{Accumulator, Filter, Quantiles, ScoreBucket, Skipped, VersionReport};

/// `modelgate shadow …`.
#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Compare a model's shadow versions with its champion from stored
    /// records: agreement, output differences, disagreement by score,
    /// latency, the records that differ most.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Model name.
    pub model: String,
    /// Where the records are, as the sinks write them: the file sink's
    /// directory (every `*.jsonl` under it, any number of replicas' files,
    /// merged) or one file; a Kafka topic (`kafka://broker:port[,…]/topic`,
    /// read from the earliest offset up to the end it had when the report
    /// started); Parquet tables (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `parquet+file:///dir`, credentials from the provider's variables).
    #[arg(long)]
    pub from: String,
    /// Only records at or after this time: unix ms, RFC 3339 or an age (`1h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records before this time: unix ms, RFC 3339 or an age (`10m`).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this shadow version.
    #[arg(long)]
    pub version: Option<u64>,
    /// How many of the records that differ most to list (0 to 1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub top: u16,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page with plots to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// How long to wait for a Kafka broker or an object store that does not
    /// answer before giving up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub kafka: KafkaFlags,
}

/// TLS and SASL for `--from kafka://…`: the same flags (and variables) as
/// `modelgate serve` has for its Kafka sink; they win over the URL's keys.
/// The whole report, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub from: String,
    pub filter: Filter,
    pub read: ReadTally,
    pub skipped: Skipped,
    /// One per shadow version, lowest first.
    pub versions: Vec<VersionReport>,
}

/// Reads the records `args` names and builds the report.
pub fn build(args: &ReportArgs) -> anyhow::Result<Report> {
    let when = |flag: &str, s: &Option<String>| {
        s.as_deref().map(|s| parse_when_ms(s).with_context(|| format!("--{flag}"))).transpose()
    };
    let filter = Filter {
        model: args.model.clone(),
        shadow_version: args.version,
        since_ms: when("since", &args.since)?,
        until_ms: when("until", &args.until)?,
    };
    let options = SourceOptions {
        model: args.model.clone(),
        since_ms: filter.since_ms,
        until_ms: filter.until_ms,
        timeout: args.timeout,
        kafka: args.kafka.clone().into(),
    };
    let mut source = source::open(&args.from, &options)?;
    let mut acc = Accumulator::new(filter.clone(), usize::from(args.top));
    let read = source.read(&mut |r| acc.add(r))?;
    let skipped = acc.skipped().clone();
    let versions = acc.finish();
    anyhow::ensure!(
        !versions.is_empty(),
        "no prediction records of model {} in {} match (read {} records: {} of other models, {} outcomes, \
         {} outside --since/--until/--version; {} unreadable lines)",
        args.model,
        source.describe(),
        read.records,
        skipped.other_models,
        skipped.outcomes,
        skipped.outside_filter,
        read.unreadable
    );
    Ok(Report { model: args.model.clone(), from: source.describe(), filter, read, skipped, versions })
}

/// `modelgate shadow report`: reading files, topics and tables is blocking
/// work, so it runs on a blocking thread rather than the runtime's.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || report(&args)).await.context("the report thread failed")?
}

fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let report = build(args)?;
    if report.read.unreadable > 0 {
        eprintln!(
            "warning: skipped {} lines that are not v1 records; first: {}",
            report.read.unreadable,
            report.read.unreadable_examples.join("; ")
        );
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&report))
            .with_context(|| format!("cannot write --html {}", path.display()))?;
    }
    if args.json {
        crate::cli::output::print_json(&report)
    } else {
        out!("{}", table(&report));
        Ok(())
    }
}

/// A number as the report prints it: four significant digits, scientific
/// when tiny or huge.
pub(crate) fn number(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() < 1e-3 || x.abs() >= 1e5 {
        format!("{x:.3e}")
    } else {
        let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
        format!("{x:.digits$}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), number)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.2}%", x * 100.0))
}

/// `0.5–0.6`, `<0`, `>1`.
pub(crate) fn bucket_name(b: &ScoreBucket) -> String {
    match (b.lo, b.hi) {
        (None, _) => "<0".into(),
        (_, None) => ">1".into(),
        (Some(lo), Some(hi)) => format!("{lo:.1}–{hi:.1}"),
    }
}

fn quantile_line(name: &str, q: &Quantiles) -> String {
    format!(
        "    {name:<12} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
        q.n,
        opt(q.p50),
        opt(q.p90),
        opt(q.p99),
        opt(q.max)
    )
}

fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "model {} from {}: {}, {} records ({} of other models, {} outcomes, {} outside the filter)\n",
        r.model,
        r.from,
        r.read.units(),
        r.read.records,
        r.skipped.other_models,
        r.skipped.outcomes,
        r.skipped.outside_filter
    );
    for v in &r.versions {
        let champions: Vec<String> = v.champion_versions.iter().map(|c| format!("v{c}")).collect();
        let _ = write!(
            s,
            "\nshadow v{} beside champion {} ({} to {}, {} replicas)\n\
             \x20 records {}  compared {}  shadow errors {}\n\
             \x20 agreement {} over {} label outputs\n\
             \x20 mean |diff| {} over {} numeric outputs; shadow NaN/Inf {}; outputs not comparable {}\n\
             \x20 difference per record n        p50        p90        p99        max\n",
            v.shadow_version,
            champions.join(", "),
            format_ms(v.first_ts_ms),
            format_ms(v.last_ts_ms),
            v.replicas.len(),
            v.records,
            v.compared,
            v.errors,
            pct(v.agreement_rate),
            v.label_outputs,
            opt(v.mean_abs_diff),
            v.numeric_outputs,
            v.shadow_nan_inf,
            v.mismatched_outputs,
        );
        s += &quantile_line("mean |diff|", &v.record_mean_abs_diff);
        s += &quantile_line("max |diff|", &v.record_max_abs_diff);
        let _ = writeln!(s, "  latency ms         n        p50        p99");
        for (name, l) in [("champion", &v.champion_latency), ("shadow", &v.shadow_latency)] {
            let _ = writeln!(s, "    {name:<12} {:>5} {:>10} {:>10}", l.n, opt(l.p50_ms), opt(l.p99_ms));
        }
        if !v.score_buckets.is_empty() {
            let _ = writeln!(s, "  champion score     n  disagreement  mean |diff|");
            for b in &v.score_buckets {
                let _ = writeln!(
                    s,
                    "    {:<12} {:>5} {:>13} {:>12}",
                    bucket_name(b),
                    b.n,
                    pct(b.disagreement_rate),
                    opt(b.mean_abs_diff)
                );
            }
        }
        if !v.largest_differences.is_empty() {
            let _ = writeln!(s, "  largest differences: request id, output, diff, champion → shadow");
            for t in &v.largest_differences {
                let _ = writeln!(
                    s,
                    "    {}  {}  {}  {} → {}",
                    t.request_id,
                    t.output,
                    number(t.diff),
                    t.champion,
                    t.shadow
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(0.00001234), "1.234e-5");
        assert_eq!(number(1234.5), "1234");
    }
}
