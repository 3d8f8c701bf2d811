//! The decision simulator (`make bench-decisions`; docs/decisions.md): runs
//! every cell, prints one table and writes its rows as JSON lines to
//! target/bench/decisions.jsonl.

use std::io::Write;

use clap::Parser;
use modelgate_benches::decisions::{self, Scale};

/// How often the controller decides where it should not (A/A) and how fast
/// where it should, on simulated traffic and time.
#[derive(Debug, Parser)]
struct Args {
    /// Simulated rollouts per cell (the champion-challenger cell runs at
    /// most 100, 20 with --quick). Default: 1000, or 100 with --quick.
    #[arg(long)]
    runs: Option<u64>,
    /// A smoke: fewer runs, 10-minute and 2-hour rollouts.
    #[arg(long)]
    quick: bool,
    /// The seed every run's stream is derived from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only cells whose name or setting contains this text.
    #[arg(long)]
    cells: Option<String>,
    /// Where the JSON lines go.
    #[arg(long, default_value = "target/bench/decisions.jsonl")]
    out: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scale = if args.quick {
        Scale::quick(args.runs.unwrap_or(100))
    } else {
        Scale::full(args.runs.unwrap_or(1000))
    };
    let cells: Vec<_> = decisions::cells(scale)
        .into_iter()
        .filter(|c| {
            args.cells.as_ref().is_none_or(|f| c.name.contains(f.as_str()) || c.setting.contains(f.as_str()))
        })
        .collect();
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut jsonl = std::fs::File::create(&args.out)?;
    println!("decision simulator: seed {}, tick {} ms", args.seed, decisions::cells::TICK_MS);
    println!("{}", decisions::header());
    let start = std::time::Instant::now();
    for cell in &cells {
        let row = decisions::run_cell(cell, args.seed);
        println!("{}", decisions::line(&row));
        writeln!(jsonl, "{}", serde_json::to_string(&row)?)?;
    }
    println!("total {:.1} s; rows in {}", start.elapsed().as_secs_f64(), args.out.display());
    Ok(())
}
