//! Champion-challenger cells: wrong promotions of a challenger no better
//! than the threshold (A/A, and exactly at the threshold), and the power to
//! promote a real lift.

use modelgate::decisions::{MetricSummary, StageCounts, observation_of};
use modelgate_registry::ModelConfig;
use modelgate_rollout::{Action, Plan, PromotionGate, StepVerdict};

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, T0, TICK_MS, decided, started, ticks};

/// One champion-challenger setting.
#[derive(Debug, Clone, Copy)]
pub struct CcSetting {
    /// Requests/s; 10% go to the challenger (the default slice).
    pub rate: f64,
    /// Conversion rates of the champion and the challenger.
    pub champion: f64,
    pub challenger: f64,
    /// The gate's minimum relative lift.
    pub threshold: f64,
    /// The gate's evaluation period.
    pub period_secs: u64,
}

/// Poisson draws by inversion of a precomputed CDF (one uniform a draw):
/// the per-tick counts of a fixed mean, exactly Poisson up to 1e-16 tails.
struct Poisson {
    cdf: Vec<f64>,
}

impl Poisson {
    fn new(mean: f64) -> Self {
        let mut cdf = Vec::new();
        let (mut p, mut total) = ((-mean).exp(), 0.0);
        let mut k = 0u32;
        while total < 1.0 - 1e-16 && k < 100_000 {
            total += p;
            cdf.push(total);
            k += 1;
            p *= mean / f64::from(k);
            if p == 0.0 && f64::from(k) > mean {
                break;
            }
        }
        Self { cdf }
    }

    fn draw(&self, rng: &mut Rng) -> u64 {
        let u = rng.uniform();
        self.cdf.partition_point(|&c| c <= u) as u64
    }
}

/// One arm's outcomes in the current evaluation period: the count and the
/// conversions (each outcome 0 or 1).
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: u64,
    ones: u64,
}

impl Sums {
    /// What `OutcomeStore::summary` gives for these 0/1 outcomes: count,
    /// mean and sample variance (0 below two values); none when empty.
    fn summary(self) -> Option<MetricSummary> {
        (self.n > 0).then(|| {
            let (n, s) = (self.n as f64, self.ones as f64);
            let variance = if self.n > 1 { s * (n - s) / (n * (n - 1.0)) } else { 0.0 };
            MetricSummary { n: self.n, mean: s / n, variance }
        })
    }
}

/// Champion-challenger with the automatic gate on `conversion` (500
/// samples each side), the default 10% slice to the challenger, each
/// request converting with its arm's probability (Poisson arrivals, so
/// conversions and non-conversions are independent Poisson counts a tick).
/// Every tick the observation is built by `observation_of`, the function
/// the controller's `observation` calls, from the outcomes since the
/// current evaluation period began (the running sums stand in for the
/// outcome store: outcomes are stamped 1 ms before the tick, and periods
/// start on the store's 10 s buckets, so the sums are what the store's
/// summary since the period start holds), and `Rollout::tick` runs with a
/// Healthy verdict; decided when it promotes the challenger.
pub fn champion_challenger(rng: &mut Rng, s: CcSetting, horizon_s: u64) -> RunOutcome {
    let mut rollout = started(Plan::ChampionChallenger {
        challengers: vec![CANDIDATE],
        fraction_percent: 10.0,
        gate: PromotionGate::Automatic {
            kpi: "conversion".into(),
            threshold: s.threshold,
            window_secs: s.period_secs,
            min_samples: 500,
            higher_is_better: true,
        },
    });
    let alpha = Some(ModelConfig::default().analysis.alpha);
    let dt = TICK_MS as f64 / 1000.0;
    let arms = [(CHAMPION, 0.9, s.champion), (CANDIDATE, 0.1, s.challenger)];
    // Per arm: conversions and non-conversions a tick.
    let draws: Vec<(u64, Poisson, Poisson)> = arms
        .iter()
        .map(|&(v, share, p)| {
            (v, Poisson::new(s.rate * share * dt * p), Poisson::new(s.rate * share * dt * (1.0 - p)))
        })
        .collect();
    let mut counts = StageCounts::epoch_of(&rollout);
    let mut sums = [Sums::default(); 2];
    let mut period_start = T0;
    for tick in 1..=ticks(horizon_s) {
        let now = T0 + tick * TICK_MS;
        // The outcomes of this tick, stamped now − 1, in that instant's period.
        let stamped = rollout.evaluation_period(now - 1).expect("an automatic gate").start_ms;
        if stamped != period_start {
            period_start = stamped;
            sums = [Sums::default(); 2];
        }
        for (i, (v, ones, zeros)) in draws.iter().enumerate() {
            let (one, zero) = (ones.draw(rng), zeros.draw(rng));
            sums[i].n += one + zero;
            sums[i].ones += one;
            *counts.samples.entry(*v).or_insert(0) += one + zero;
        }
        let obs = observation_of(&rollout, alpha, &counts, now, |v, _kpi, since_ms| {
            let i = arms.iter().position(|a| a.0 == v)?;
            // Outcomes before `since_ms` are not in the summary.
            if since_ms == period_start { sums[i].summary() } else { None }
        });
        let events = rollout.tick(now, &obs, &StepVerdict::Healthy);
        if events.iter().any(|e| e.action == Action::Promoted) {
            return decided(tick, counts.samples.get(&CANDIDATE).copied().unwrap_or(0));
        }
    }
    RunOutcome::default()
}

/// The champion-challenger cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let mut out = Vec::new();
    let alpha = ModelConfig::default().analysis.alpha;
    let day = scale.day_s;
    let runs = scale.runs;
    let mut cell = |name: &'static str, s: CcSetting, claim: Claim, runs: u64| {
        let setting = format!(
            "conv {}%/{}%, lift > {}%, period {}, {} req/s, {}",
            s.champion * 100.0,
            s.challenger * 100.0,
            s.threshold * 100.0,
            span(s.period_secs),
            s.rate,
            span(day)
        );
        out.push(Cell {
            name,
            setting,
            claim,
            runs,
            horizon_s: day,
            run: Box::new(move |rng| champion_challenger(rng, s, day)),
        });
    };
    let aa = CcSetting { rate: 20.0, champion: 0.10, challenger: 0.10, threshold: 0.02, period_secs: 3600 };
    // The setting: A/A, threshold 2%, 1 h periods (was a 1 h window).
    cell("cc-aa-promoted", aa, Claim::FalseRate(alpha), runs);
    // The defaults: threshold 0 (so A/A is exactly at H0's boundary), 24 h.
    let defaults = CcSetting { rate: 200.0, threshold: 0.0, period_secs: 86_400, ..aa };
    cell("cc-aa-promoted", defaults, Claim::FalseRate(alpha), runs);
    // A challenger exactly 2% better with a 2% threshold: H0's boundary.
    let boundary = CcSetting { challenger: 0.102, threshold: 0.02, ..defaults };
    cell("cc-at-threshold", boundary, Claim::FalseRate(alpha), runs);
    // Power: a true +10% lift.
    let lift = CcSetting { challenger: 0.11, ..boundary };
    cell("cc-power", lift, Claim::Power, runs);
    cell("cc-power", CcSetting { threshold: 0.0, ..lift }, Claim::Power, runs);
    // The same lift at the 20 req/s (2 req/s to the challenger).
    cell("cc-power", CcSetting { rate: 20.0, ..lift }, Claim::Power, runs);
    out
}
