//! Hard-trigger cells: false rollbacks at the limits (A/A) and time to
//! roll back a bad canary (power).

use std::time::Duration;

use modelgate::decisions::hard_trigger;
use modelgate_rollout::TriggerConfig;
use modelgate_telemetry::SlidingWindow;

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, TICK_MS, Traffic, arm, decided, ticks};

/// The hard triggers (`control::judge::hard_trigger`, default
/// `TriggerConfig`) on the default sliding windows (6 × 10 s): requests
/// with a NaN/Inf output at rate `nan_champion` / `nan_candidate`; decided
/// when a trigger fires.
pub fn hard_triggers(rng: &mut Rng, traffic: Traffic, nan: [f64; 2], horizon_s: u64) -> RunOutcome {
    let cfg = TriggerConfig::default();
    let windows = [SlidingWindow::standard(), SlidingWindow::standard()];
    let per_tick = traffic.per_tick();
    let mut arms = [arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    let mut candidate_requests = 0;
    let latency = Duration::from_millis(1);
    for tick in 1..=ticks(horizon_s) {
        let now = Duration::from_millis(tick * TICK_MS);
        // This tick's arrivals, recorded just before it.
        let at = now - Duration::from_millis(1);
        for (i, w) in windows.iter().enumerate() {
            let n = rng.poisson(per_tick[i].2);
            for _ in 0..n {
                w.record_at(w.epoch() + at, latency, false, rng.bernoulli(nan[i]));
            }
            if i == 1 {
                candidate_requests += n;
            }
            arms[i].window = w.counts_at(w.epoch() + now);
        }
        if hard_trigger(&cfg, CHAMPION, &arms).is_some() {
            return decided(tick, candidate_requests);
        }
    }
    RunOutcome { candidate_requests, ..RunOutcome::default() }
}

/// The hard-trigger cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let hour = scale.hour_s;
    let mut out = Vec::new();
    let trigger_alpha = modelgate_rollout::TriggerConfig::default().alpha;
    let limit = modelgate_rollout::TriggerConfig::default().nan_inf_rate;
    for (rate, bp) in [(200.0, 5000), (200.0, 500), (20.0, 5000), (20.0, 500)] {
        let traffic = Traffic { rate, candidate_bp: bp };
        out.push(Cell {
            name: "hard-trigger-aa",
            setting: format!(
                "NaN {:.0}% both, {}/{}, {rate:.0} req/s, {}",
                limit * 100.0,
                100 - bp / 100,
                bp / 100,
                span(hour)
            ),
            claim: Claim::FalseRate(trigger_alpha),
            runs: scale.runs,
            horizon_s: hour,
            run: Box::new(move |rng| hard_triggers(rng, traffic, [limit, limit], hour)),
        });
    }
    for times in [1.5, 2.0, 5.0] {
        let traffic = Traffic { rate: 200.0, candidate_bp: 500 };
        out.push(Cell {
            name: "hard-trigger-power",
            setting: format!("NaN {times}x limit on 5% canary, 200 req/s, {}", span(hour)),
            claim: Claim::Power,
            runs: scale.runs,
            horizon_s: hour,
            run: Box::new(move |rng| hard_triggers(rng, traffic, [limit, limit * times], hour)),
        });
    }
    out
}
