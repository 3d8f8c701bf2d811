//! The report's numbers, accumulated one record at a time in fixed memory:
//! HDR histograms for quantiles, eleven score buckets, a bounded heap for the
//! largest differences. Counts, agreement and the mean difference are
//! defined exactly as the live shadow totals (serving/shadow/stats.rs) are,
//! so a report and GetRollout agree on the same traffic.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::source::{OutputRecord, PredictionRecord, Record, TensorValues};

/// Differences are kept in the histogram as integers of this many units per
/// 1.0: nine decimal places, three significant digits; smaller is zero.
const DIFF_SCALE: f64 = 1e9;
/// Bars of the difference histograms in the HTML page.
const HISTOGRAM_BARS: usize = 30;
/// Elements of a tensor quoted in the largest-differences list.
const QUOTED_ELEMENTS: usize = 8;
/// Replicas named per version; more are counted only (a fleet is small, a
/// corrupt file need not be).
const NAMED_REPLICAS: usize = 64;

/// Which records count.
#[derive(Debug, Clone, Serialize)]
pub struct Filter {
    pub model: String,
    pub shadow_version: Option<u64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Filter {
    fn keeps(&self, p: &PredictionRecord) -> bool {
        self.shadow_version.is_none_or(|v| v == p.shadow_version)
            && self.since_ms.is_none_or(|t| p.ts_ms >= t)
            && self.until_ms.is_none_or(|t| p.ts_ms < t)
    }
}

/// Quantiles of one distribution; `None` with no values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quantiles {
    pub n: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// One version's latency, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub n: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Records whose champion score fell in `[lo, hi)` (the last decile
/// includes 1; scores outside 0–1 get a bucket of their own each side).
#[derive(Debug, Clone, Serialize)]
pub struct ScoreBucket {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Compared records in the bucket.
    pub n: u64,
    /// 1 − the mean agreement of the bucket's label outputs.
    pub disagreement_rate: Option<f64>,
    /// Mean of the bucket's numeric outputs' mean |diff|.
    pub mean_abs_diff: Option<f64>,
}

/// One of the records that differ most.
#[derive(Debug, Clone, Serialize)]
pub struct TopRecord {
    pub request_id: String,
    pub ts_ms: i64,
    pub replica: String,
    pub champion_version: u64,
    /// The output that differs most.
    pub output: String,
    /// Its max |diff|, or for a label-only record its share of disagreeing elements.
    pub diff: f64,
    pub champion: String,
    pub shadow: String,
}

/// What the HTML page draws; not part of `--json`.
#[derive(Debug, Clone, Default)]
pub struct Plots {
    /// (lower edge, upper edge, records) per bar, of each record's max |diff|.
    pub max_abs_diff_bars: Vec<(f64, f64, u64)>,
    /// (ms, share of requests at or below) of each version.
    pub champion_latency_cdf: Vec<(f64, f64)>,
    pub shadow_latency_cdf: Vec<(f64, f64)>,
}

/// Everything the report says about one shadow version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    pub shadow_version: u64,
    pub champion_versions: Vec<u64>,
    pub replicas: Vec<String>,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// Prediction records (compared + errors).
    pub records: u64,
    pub compared: u64,
    pub errors: u64,
    /// Mean agreement over every label output of every compared record: the
    /// live `agreement_rate`.
    pub agreement_rate: Option<f64>,
    pub label_outputs: u64,
    /// Mean of mean |diff| over every numeric output: the live `mean_abs_diff`.
    pub mean_abs_diff: Option<f64>,
    pub numeric_outputs: u64,
    pub shadow_nan_inf: u64,
    /// Outputs that could not be compared (shape, dtype, missing).
    pub mismatched_outputs: u64,
    /// Per compared record: the mean of its outputs' mean |diff|.
    pub record_mean_abs_diff: Quantiles,
    /// Per compared record: the largest of its outputs' max |diff|.
    pub record_max_abs_diff: Quantiles,
    pub champion_latency: Latency,
    pub shadow_latency: Latency,
    /// How the champion's score was read, for the buckets.
    pub score: String,
    pub score_buckets: Vec<ScoreBucket>,
    pub largest_differences: Vec<TopRecord>,
    #[serde(skip)]
    pub plots: Plots,
}

/// What was read and what was left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Skipped {
    pub other_models: u64,
    pub outcomes: u64,
    pub outside_filter: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    n: u64,
    agreement: Mean,
    diff: Mean,
}

/// A largest-differences candidate, ordered by `diff` (then id, so ties
/// are kept the same whichever order files are read in).
#[derive(Debug)]
struct Ranked(TopRecord);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.diff.total_cmp(&other.0.diff).then_with(|| other.0.request_id.cmp(&self.0.request_id))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("1 µs to 10 min at 3 significant digits are valid bounds")
}

fn diff_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are valid")
}

/// Score buckets: index 0 below 0, 1–10 the deciles of [0, 1], 11 above 1.
const BUCKETS: usize = 12;

struct VersionStats {
    champion_versions: BTreeSet<u64>,
    replicas: BTreeSet<String>,
    first_ts_ms: i64,
    last_ts_ms: i64,
    compared: u64,
    errors: u64,
    agreement: Mean,
    abs_diff: Mean,
    shadow_nan_inf: u64,
    mismatched: u64,
    mean_diff: Histogram<u64>,
    max_diff: Histogram<u64>,
    mean_diff_max: f64,
    max_diff_max: f64,
    champion_latency: Histogram<u64>,
    shadow_latency: Histogram<u64>,
    buckets: [Bucket; BUCKETS],
    top: BinaryHeap<Reverse<Ranked>>,
}

impl VersionStats {
    fn new() -> Self {
        Self {
            champion_versions: BTreeSet::new(),
            replicas: BTreeSet::new(),
            first_ts_ms: i64::MAX,
            last_ts_ms: i64::MIN,
            compared: 0,
            errors: 0,
            agreement: Mean::default(),
            abs_diff: Mean::default(),
            shadow_nan_inf: 0,
            mismatched: 0,
            mean_diff: diff_histogram(),
            max_diff: diff_histogram(),
            mean_diff_max: 0.0,
            max_diff_max: 0.0,
            champion_latency: histogram(),
            shadow_latency: histogram(),
            buckets: [Bucket::default(); BUCKETS],
            top: BinaryHeap::new(),
        }
    }
}

fn scaled(d: f64) -> u64 {
    // Saturates: a difference past 1.8e10 is recorded as the largest value.
    (d * DIFF_SCALE).round() as u64
}

fn is_float(dtype: &str) -> bool {
    matches!(dtype, "FP16" | "FP32" | "FP64" | "BF16")
}

/// The champion's score: its first floating-point output's value when it
/// has one element, else its largest (the top class's probability).
fn champion_score(outputs: &[OutputRecord]) -> Option<f64> {
    let t = &outputs.iter().find(|o| is_float(&o.champion.dtype))?.champion;
    if t.truncated {
        return t.max;
    }
    t.values.iter().flatten().copied().reduce(f64::max)
}

fn bucket_of(score: f64) -> usize {
    if score < 0.0 {
        0
    } else if score > 1.0 {
        BUCKETS - 1
    } else {
        1 + ((score * 10.0).floor() as usize).min(9)
    }
}

/// A tensor in a line: its first elements, or its summary when truncated.
fn quote(t: &TensorValues) -> String {
    let num = |x: f64| format!("{}", (x * 1e6).round() / 1e6);
    if t.truncated {
        let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), num);
        return format!("{} elements, min {} max {} mean {}", t.count, opt(t.min), opt(t.max), opt(t.mean));
    }
    let mut items: Vec<String> = if t.strings.is_empty() {
        t.values.iter().take(QUOTED_ELEMENTS).map(|v| v.map_or_else(|| "NaN".into(), num)).collect()
    } else {
        t.strings.iter().take(QUOTED_ELEMENTS).cloned().collect()
    };
    let total = t.values.len().max(t.strings.len());
    if total > QUOTED_ELEMENTS {
        items.push(format!("… {} more", total - QUOTED_ELEMENTS));
    }
    format!("[{}]", items.join(", "))
}

/// Reads records one at a time into a [`VersionReport`] per shadow version.
pub struct Accumulator {
    filter: Filter,
    top_n: usize,
    versions: BTreeMap<u64, VersionStats>,
    skipped: Skipped,
}

impl Accumulator {
    pub fn new(filter: Filter, top_n: usize) -> Self {
        Self { filter, top_n, versions: BTreeMap::new(), skipped: Skipped::default() }
    }

    pub fn add(&mut self, record: Record) {
        let p = match record {
            Record::Outcome(_) => {
                self.skipped.outcomes += 1;
                return;
            }
            Record::Prediction(p) if p.model != self.filter.model => {
                self.skipped.other_models += 1;
                return;
            }
            Record::Prediction(p) if !self.filter.keeps(&p) => {
                self.skipped.outside_filter += 1;
                return;
            }
            Record::Prediction(p) => p,
        };
        let top_n = self.top_n;
        let s = self.versions.entry(p.shadow_version).or_insert_with(VersionStats::new);
        s.champion_versions.insert(p.champion_version);
        if s.replicas.len() < NAMED_REPLICAS {
            s.replicas.insert(p.replica.clone());
        }
        s.first_ts_ms = s.first_ts_ms.min(p.ts_ms);
        s.last_ts_ms = s.last_ts_ms.max(p.ts_ms);
        if p.shadow_error.is_some() {
            s.errors += 1;
            return;
        }
        s.compared += 1;
        let _ = s.champion_latency.record(p.champion_latency_us.max(1));
        let _ = s.shadow_latency.record(p.shadow_latency_us.max(1));

        let mut record_mean = Mean::default();
        let mut record_agreement = Mean::default();
        let mut record_max: Option<f64> = None;
        // The output that differs most, and by how much.
        let mut worst: Option<(usize, f64)> = None;
        for (i, o) in p.outputs.iter().enumerate() {
            if let Some(a) = o.agreement {
                s.agreement.add(a);
                record_agreement.add(a);
                if record_max.is_none() && worst.is_none_or(|(_, d)| 1.0 - a > d) {
                    worst = Some((i, 1.0 - a));
                }
            }
            if let Some(m) = o.mean_abs_diff {
                s.abs_diff.add(m);
                record_mean.add(m);
            }
            if let Some(m) = o.max_abs_diff {
                // A numeric difference outranks a label one: a max |diff| is what the list sorts by.
                if record_max.is_none_or(|r| m > r) {
                    record_max = Some(m);
                    worst = Some((i, m));
                }
            }
            if o.mismatch.is_some() {
                s.mismatched += 1;
            }
            s.shadow_nan_inf += o.shadow_nan_inf;
        }
        if let Some(m) = record_mean.get() {
            let _ = s.mean_diff.record(scaled(m));
            s.mean_diff_max = s.mean_diff_max.max(m);
        }
        if let Some(m) = record_max {
            let _ = s.max_diff.record(scaled(m));
            s.max_diff_max = s.max_diff_max.max(m);
        }
        if let Some(score) = champion_score(&p.outputs) {
            let b = &mut s.buckets[bucket_of(score)];
            b.n += 1;
            b.agreement.sum += record_agreement.sum;
            b.agreement.n += record_agreement.n;
            b.diff.sum += record_mean.sum;
            b.diff.n += record_mean.n;
        }
        if let (Some((i, diff)), true) = (worst, top_n > 0) {
            let beats_last = s.top.len() < top_n || s.top.peek().is_some_and(|Reverse(r)| diff > r.0.diff);
            if beats_last {
                let o = &p.outputs[i];
                s.top.push(Reverse(Ranked(TopRecord {
                    request_id: p.request_id.clone(),
                    ts_ms: p.ts_ms,
                    replica: p.replica.clone(),
                    champion_version: p.champion_version,
                    output: o.name.clone(),
                    diff,
                    champion: quote(&o.champion),
                    shadow: o.shadow.as_ref().map_or_else(|| "-".into(), quote),
                })));
                if s.top.len() > top_n {
                    s.top.pop();
                }
            }
        }
    }

    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// The report of every shadow version seen, lowest version first.
    pub fn finish(self) -> Vec<VersionReport> {
        self.versions.into_iter().map(|(v, s)| version_report(v, s)).collect()
    }
}

fn diff_quantiles(h: &Histogram<u64>, max: f64) -> Quantiles {
    if h.is_empty() {
        return Quantiles::default();
    }
    // HDR answers the highest value equivalent to the bucket; the exact max caps it.
    let q = |q: f64| Some((h.value_at_quantile(q) as f64 / DIFF_SCALE).min(max));
    Quantiles { n: h.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: Some(max) }
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |q: f64| Some(h.value_at_quantile(q) as f64 / 1000.0);
    Latency { n: h.len(), p50_ms: ms(0.5), p99_ms: ms(0.99) }
}

fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=200).map(|i| i as f64 / 200.0).map(|q| (h.value_at_quantile(q) as f64 / 1000.0, q)).collect()
}

fn bars(h: &Histogram<u64>, max: f64) -> Vec<(f64, f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    if max <= 0.0 {
        // Every record identical: one bar at 0 rather than bars on an invented scale.
        return vec![(0.0, 0.0, h.len())];
    }
    let width = max / HISTOGRAM_BARS as f64;
    let mut counts = vec![0u64; HISTOGRAM_BARS];
    for v in h.iter_recorded() {
        let x = (h.median_equivalent(v.value_iterated_to()) as f64 / DIFF_SCALE).min(max);
        let i = ((x / width).floor() as usize).min(HISTOGRAM_BARS - 1);
        counts[i] += v.count_at_value();
    }
    counts.into_iter().enumerate().map(|(i, n)| (i as f64 * width, (i + 1) as f64 * width, n)).collect()
}

fn version_report(shadow_version: u64, s: VersionStats) -> VersionReport {
    let score_buckets = s
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| b.n > 0)
        .map(|(i, b)| {
            let (lo, hi) = match i {
                0 => (None, Some(0.0)),
                i if i == BUCKETS - 1 => (Some(1.0), None),
                i => (Some((i - 1) as f64 / 10.0), Some(i as f64 / 10.0)),
            };
            ScoreBucket {
                lo,
                hi,
                n: b.n,
                disagreement_rate: b.agreement.get().map(|a| 1.0 - a),
                mean_abs_diff: b.diff.get(),
            }
        })
        .collect();
    let mut top: Vec<TopRecord> = s.top.into_iter().map(|Reverse(r)| r.0).collect();
    top.sort_by(|a, b| b.diff.total_cmp(&a.diff).then_with(|| a.request_id.cmp(&b.request_id)));
    VersionReport {
        shadow_version,
        champion_versions: s.champion_versions.into_iter().collect(),
        replicas: s.replicas.into_iter().collect(),
        first_ts_ms: s.first_ts_ms,
        last_ts_ms: s.last_ts_ms,
        records: s.compared + s.errors,
        compared: s.compared,
        errors: s.errors,
        agreement_rate: s.agreement.get(),
        label_outputs: s.agreement.n,
        mean_abs_diff: s.abs_diff.get(),
        numeric_outputs: s.abs_diff.n,
        shadow_nan_inf: s.shadow_nan_inf,
        mismatched_outputs: s.mismatched,
        record_mean_abs_diff: diff_quantiles(&s.mean_diff, s.mean_diff_max),
        record_max_abs_diff: diff_quantiles(&s.max_diff, s.max_diff_max),
        champion_latency: latency(&s.champion_latency),
        shadow_latency: latency(&s.shadow_latency),
        score:
            "the champion's first floating-point output: its value, or its largest element (top probability)"
                .into(),
        score_buckets,
        largest_differences: top,
        plots: Plots {
            max_abs_diff_bars: bars(&s.max_diff, s.max_diff_max),
            champion_latency_cdf: cdf(&s.champion_latency),
            shadow_latency_cdf: cdf(&s.shadow_latency),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::shadow_report::source::SCHEMA_VERSION;

    fn tensor(dtype: &str, values: &[f64]) -> TensorValues {
        TensorValues {
            dtype: dtype.into(),
            shape: vec![1, values.len() as i64],
            values: values.iter().map(|&v| Some(v)).collect(),
            strings: Vec::new(),
            truncated: false,
            count: values.len() as u64,
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            mean: None,
        }
    }

    /// A compared record of a model with one probability output: champion
    /// `p` against shadow `q` (the positive class's probability).
    pub(crate) fn prediction(id: &str, shadow_version: u64, p: f64, q: f64) -> PredictionRecord {
        let d = (p - q).abs();
        let label = |x: f64| f64::from(u8::from(x >= 0.5));
        PredictionRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 1_796_616_000_000,
            request_id: id.into(),
            model: "m".into(),
            replica: "r-0".into(),
            champion_version: 1,
            champion_role: "champion".into(),
            shadow_version,
            shadow_role: "shadow".into(),
            routing_key_hash: None,
            champion_latency_us: 1_000,
            shadow_latency_us: 2_000,
            shadow_error: None,
            outputs: vec![
                OutputRecord {
                    name: "label".into(),
                    champion: tensor("INT64", &[label(p)]),
                    shadow: Some(tensor("INT64", &[label(q)])),
                    elements: 1,
                    max_abs_diff: None,
                    mean_abs_diff: None,
                    agreement: Some(if label(p) == label(q) { 1.0 } else { 0.0 }),
                    champion_nan_inf: 0,
                    shadow_nan_inf: 0,
                    mismatch: None,
                },
                OutputRecord {
                    name: "probabilities".into(),
                    champion: tensor("FP32", &[1.0 - p, p]),
                    shadow: Some(tensor("FP32", &[1.0 - q, q])),
                    elements: 2,
                    max_abs_diff: Some(d),
                    mean_abs_diff: Some(d),
                    agreement: None,
                    champion_nan_inf: 0,
                    shadow_nan_inf: 0,
                    mismatch: None,
                },
            ],
            inputs: None,
        }
    }

    fn filter() -> Filter {
        Filter { model: "m".into(), shadow_version: None, since_ms: None, until_ms: None }
    }

    fn report(records: impl IntoIterator<Item = PredictionRecord>, top: usize) -> Vec<VersionReport> {
        let mut acc = Accumulator::new(filter(), top);
        records.into_iter().for_each(|r| acc.add(Record::Prediction(r)));
        acc.finish()
    }

    #[test]
    fn counts_agreement_and_mean_diff_are_the_live_totals_definitions() {
        let mut failed = prediction("e", 2, 0.9, 0.9);
        failed.shadow_error = Some("boom".into());
        failed.outputs.truncate(1);
        failed.outputs[0].shadow = None;
        failed.outputs[0].agreement = None;
        let r = report(
            [
                prediction("a", 2, 0.9, 0.8),
                prediction("b", 2, 0.6, 0.4),
                prediction("c", 2, 0.2, 0.2),
                failed,
            ],
            10,
        );
        let v = &r[0];
        assert_eq!((v.shadow_version, v.records, v.compared, v.errors), (2, 4, 3, 1));
        // Labels: a agrees, b disagrees (0.6 vs 0.4), c agrees.
        assert!((v.agreement_rate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(v.label_outputs, 3);
        assert!((v.mean_abs_diff.unwrap() - 0.3 / 3.0).abs() < 1e-12);
        assert_eq!(v.numeric_outputs, 3);
        assert_eq!((v.champion_latency.n, v.champion_latency.p50_ms), (3, Some(1.0)));
        assert_eq!(v.shadow_latency.p99_ms, Some(2.0));
    }

    #[test]
    fn quantiles_of_a_thousand_differences_are_within_hdr_precision() {
        let records = (1..=1000).map(|i| prediction(&format!("r{i}"), 2, 0.5, 0.5 + i as f64 / 10_000.0));
        let v = &report(records, 3)[0];
        let q = &v.record_max_abs_diff;
        let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * 2e-3;
        assert_eq!(q.n, 1000);
        assert!(near(q.p50, 0.05) && near(q.p90, 0.09) && near(q.p99, 0.099), "{q:?}");
        assert!((q.max.unwrap() - 0.1).abs() < 1e-12);
        assert!(near(v.record_mean_abs_diff.p90, 0.09));
        let ids: Vec<&str> = v.largest_differences.iter().map(|t| t.request_id.as_str()).collect();
        assert_eq!(ids, ["r1000", "r999", "r998"]);
        assert_eq!(v.largest_differences[0].output, "probabilities");
        assert!(v.largest_differences[0].shadow.contains("0.6"), "{:?}", v.largest_differences[0]);
        let bars = &v.plots.max_abs_diff_bars;
        assert_eq!(bars.len(), HISTOGRAM_BARS);
        assert_eq!(bars.iter().map(|b| b.2).sum::<u64>(), 1000);
    }

    #[test]
    fn identical_outputs_draw_one_bar_at_zero() {
        let v = &report((0..5).map(|i| prediction(&format!("r{i}"), 2, 0.3, 0.3)), 1)[0];
        assert_eq!(v.plots.max_abs_diff_bars, [(0.0, 0.0, 5)]);
        assert_eq!(v.record_max_abs_diff.p99, Some(0.0));
        assert_eq!(v.plots.champion_latency_cdf.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn disagreement_is_bucketed_by_the_champions_top_probability() {
        // Top probability 0.55 (bucket 0.5–0.6): the labels flip. 0.95: they agree.
        let records = [
            prediction("a", 2, 0.55, 0.45),
            prediction("b", 2, 0.45, 0.55),
            prediction("c", 2, 0.95, 0.9),
            prediction("d", 2, 0.05, 0.1),
        ];
        let v = &report(records, 0)[0];
        let b: Vec<(Option<f64>, u64, Option<f64>)> =
            v.score_buckets.iter().map(|b| (b.lo, b.n, b.disagreement_rate)).collect();
        assert_eq!(b, [(Some(0.5), 2, Some(1.0)), (Some(0.9), 2, Some(0.0))]);
        assert!((v.score_buckets[1].mean_abs_diff.unwrap() - 0.05).abs() < 1e-12);
        assert!(v.largest_differences.is_empty());
    }

    #[test]
    fn filters_versions_and_other_records_are_counted_apart() {
        let mut acc = Accumulator::new(
            Filter { shadow_version: Some(3), since_ms: Some(1_000), until_ms: Some(2_000), ..filter() },
            5,
        );
        let at = |id: &str, v: u64, ts: i64| {
            let mut p = prediction(id, v, 0.5, 0.5);
            p.ts_ms = ts;
            Record::Prediction(p)
        };
        acc.add(at("in", 3, 1_500));
        acc.add(at("early", 3, 999));
        acc.add(at("late", 3, 2_000));
        acc.add(at("v2", 2, 1_500));
        let mut other = prediction("x", 3, 0.5, 0.5);
        other.model = "other".into();
        acc.add(Record::Prediction(other));
        let s = acc.skipped().clone();
        assert_eq!((s.other_models, s.outside_filter, s.outcomes), (1, 3, 0));
        let r = acc.finish();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].shadow_version, r[0].records), (3, 1));
    }

    #[test]
    fn truncated_and_label_only_records_still_rank() {
        let mut p = prediction("big", 2, 0.5, 0.5);
        p.outputs.remove(1);
        p.outputs[0].agreement = Some(0.25);
        let mut t = tensor("FP32", &[]);
        (t.truncated, t.count, t.max) = (true, 100_000, Some(0.7));
        p.outputs.push(OutputRecord {
            name: "embedding".into(),
            champion: t.clone(),
            shadow: Some(t),
            elements: 0,
            max_abs_diff: None,
            mean_abs_diff: None,
            agreement: None,
            champion_nan_inf: 0,
            shadow_nan_inf: 0,
            mismatch: Some("too large to compare".into()),
        });
        let v = &report([p], 1)[0];
        assert_eq!(v.mismatched_outputs, 1);
        assert_eq!(v.largest_differences[0].output, "label");
        assert!((v.largest_differences[0].diff - 0.75).abs() < 1e-12);
        assert_eq!(v.score_buckets[0].lo, Some(0.7));
        assert_eq!(
            v.largest_differences[0].champion,
            "[1]",
            "a label quotes its elements; a truncated tensor its summary: {}",
            quote(&p_truncated())
        );
        assert_eq!(quote(&p_truncated()), "100000 elements, min - max 0.7 mean -");
    }

    fn p_truncated() -> TensorValues {
        let mut t = tensor("FP32", &[]);
        (t.truncated, t.count, t.max, t.min) = (true, 100_000, Some(0.7), None);
        t
    }
}
