//! The decision simulator (`make bench-decisions`, docs/decisions.md): how
//! often the controller's decisions are taken on simulated traffic where
//! they should not be (A/A) and how fast where they should (power), each
//! rate with its Clopper–Pearson 95% interval against the rate the
//! statistics claim.

pub mod cells;
pub mod interval;
pub mod rng;

use std::time::Instant;

use cells::RunOutcome;
pub use interval::clopper_pearson;
use rng::Rng;

/// What a cell's rate is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim {
    /// A false decision rate the code claims (α): the target is an
    /// upper interval end of at most 1.5 × α.
    FalseRate(f64),
    /// A rate that should be high (power); reported, not judged.
    Power,
}

/// Horizons and run counts.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub runs: u64,
    /// Hard-trigger, step and A/B rollouts, seconds.
    pub hour_s: u64,
    /// Champion-challenger rollouts, seconds.
    pub day_s: u64,
    /// At most this many runs of the champion-challenger cell (a 24 h
    /// rollout is ticked 172 800 times).
    pub day_runs: u64,
}

impl Scale {
    /// The full run.
    pub fn full(runs: u64) -> Self {
        Self { runs, hour_s: 3600, day_s: 24 * 3600, day_runs: runs.min(100) }
    }

    /// A smoke: 10-minute and 2-hour rollouts.
    pub fn quick(runs: u64) -> Self {
        Self { runs, hour_s: 600, day_s: 2 * 3600, day_runs: runs.min(20) }
    }
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub cell: String,
    pub setting: String,
    pub runs: u64,
    pub decisions: u64,
    pub rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The claimed α, for A/A cells.
    pub alpha: Option<f64>,
    /// PASS, FAIL, UNSHOWN (the interval straddles the target: more runs
    /// needed) or "-" for power cells.
    pub verdict: &'static str,
    /// Median seconds and candidate requests to the decision, over the runs
    /// that took it.
    pub median_seconds: Option<f64>,
    pub median_candidate_requests: Option<f64>,
    pub horizon_s: u64,
    pub elapsed_s: f64,
    pub seed: u64,
}

/// One cell: a named setting, its claim and its simulation.
pub struct Cell {
    pub name: &'static str,
    pub setting: String,
    pub claim: Claim,
    pub runs: u64,
    pub horizon_s: u64,
    pub(crate) run: Box<dyn Fn(&mut Rng) -> RunOutcome + Sync>,
}

/// Every cell at `scale`.
pub fn cells(scale: Scale) -> Vec<Cell> {
    let mut out = cells::hard::list(scale);
    out.extend(cells::step::list(scale));
    out.extend(cells::ab::list(scale));
    out.extend(cells::cc::list(scale));
    out
}

pub(crate) fn span(seconds: u64) -> String {
    if seconds.is_multiple_of(3600) {
        format!("{} h", seconds / 3600)
    } else {
        format!("{} min", seconds / 60)
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// Runs `cell` `cell.runs` times, each on its own stream of `seed`, on
/// every core (a run's stream depends only on its index, so the table is
/// the same on any number of cores).
pub fn run_cell(cell: &Cell, seed: u64) -> Row {
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outcomes: Vec<RunOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                s.spawn(move || {
                    (t..cell.runs)
                        .step_by(threads)
                        .map(|i| (i, (cell.run)(&mut Rng::for_run(seed, &cell.setting, i))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> =
            handles.into_iter().flat_map(|h| h.join().expect("a simulated run panicked")).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, o)| o).collect()
    });
    let taken: Vec<&RunOutcome> = outcomes.iter().filter(|o| o.decided).collect();
    let decisions = taken.len() as u64;
    let (ci_low, ci_high) = clopper_pearson(decisions, cell.runs, 0.05);
    let (alpha, verdict) = match cell.claim {
        Claim::FalseRate(a) if ci_high <= 1.5 * a => (Some(a), "PASS"),
        Claim::FalseRate(a) if ci_low > 1.5 * a => (Some(a), "FAIL"),
        Claim::FalseRate(a) => (Some(a), "UNSHOWN"),
        Claim::Power => (None, "-"),
    };
    Row {
        cell: cell.name.to_string(),
        setting: cell.setting.clone(),
        runs: cell.runs,
        decisions,
        rate: if cell.runs == 0 { 0.0 } else { decisions as f64 / cell.runs as f64 },
        ci_low,
        ci_high,
        alpha,
        verdict,
        median_seconds: median(taken.iter().map(|o| o.seconds).collect()),
        median_candidate_requests: median(taken.iter().map(|o| o.candidate_requests as f64).collect()),
        horizon_s: cell.horizon_s,
        elapsed_s: start.elapsed().as_secs_f64(),
        seed,
    }
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<21} {:<58} {:>5} {:>5} {:>24} {:>7} {:>8} {:>16} {:>7}",
        "cell", "setting", "runs", "hits", "rate [95% CI]", "alpha", "verdict", "median s / req", "time s"
    )
}

/// One row as a table line.
pub fn line(r: &Row) -> String {
    let rate = format!("{:.4} [{:.4}, {:.4}]", r.rate, r.ci_low, r.ci_high);
    let alpha = r.alpha.map_or("-".to_string(), |a| format!("{a}"));
    let median = match (r.median_seconds, r.median_candidate_requests) {
        (Some(s), Some(n)) => format!("{s:.1} / {n:.0}"),
        _ => "-".to_string(),
    };
    format!(
        "{:<21} {:<58} {:>5} {:>5} {:>24} {:>7} {:>8} {:>16} {:>7.1}",
        r.cell, r.setting, r.runs, r.decisions, rate, alpha, r.verdict, median, r.elapsed_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_of_a_cell_gives_a_row_and_repeats_under_its_seed() {
        let scale = Scale { runs: 5, hour_s: 120, day_s: 120, day_runs: 5 };
        let all = cells(scale);
        for name in ["hard-trigger-power", "ab-aa-srm"] {
            let cell = all.iter().find(|c| c.name == name).expect("the cell exists");
            let (a, b) = (run_cell(cell, 42), run_cell(cell, 42));
            assert_eq!((a.runs, a.decisions), (cell.runs, b.decisions), "{name}");
            assert!(a.ci_low <= a.rate && a.rate <= a.ci_high);
            assert!(line(&a).starts_with(name));
        }
        // 5x the NaN limit on a canary fires within two minutes.
        let power = all.iter().find(|c| c.setting.starts_with("NaN 5x")).expect("the cell exists");
        assert_eq!(run_cell(power, 1).decisions, 5);
    }
}
