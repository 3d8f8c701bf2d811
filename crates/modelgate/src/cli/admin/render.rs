//! Rollout status and analysis as text tables (the default output of
//! `status`, `admin get-rollout` and the like, and `analysis`).

use modelgate_proto::v1 as pb;

pub(crate) fn role_name(role: i32) -> String {
    pb::Role::try_from(role)
        .map_or_else(|_| role.to_string(), |r| r.as_str_name().trim_start_matches("ROLE_").to_lowercase())
}

/// An audit event's numbers (JSON text) as `  name=value …`, in the
/// order stored; empty when there are none.
pub(super) fn numbers_text(numbers_json: &str) -> String {
    let Ok(serde_json::Value::Object(numbers)) = serde_json::from_str(numbers_json) else {
        return String::new();
    };
    numbers
        .iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if x.fract() != 0.0 => format!("  {k}={x:.4}"),
            _ => format!("  {k}={v}"),
        })
        .collect()
}

/// A rollout status as text: header, waiting line, and one line per arm with
/// its share and a bar.
pub fn format_status(s: &pb::RolloutStatus) -> String {
    let mut out = String::new();
    if s.rollout_id.is_empty() {
        out.push_str(&format!("{}: champion v{}, no rollout\n", s.model, s.champion));
        return out;
    }
    out.push_str(&format!(
        "{}: {} {} (rollout {}), stage {} of {}, champion v{}\n",
        s.model,
        s.strategy,
        s.state,
        s.rollout_id,
        s.stage,
        s.stages.max(1),
        s.champion
    ));
    if !s.waiting_for.is_empty() {
        out.push_str(&format!("  {}\n", s.waiting_for));
    }
    if s.srm_mismatch {
        out.push_str(&format!(
            "  SAMPLE RATIO MISMATCH: arm counts do not fit the weights (p = {:.2e}); do not trust the comparison\n",
            s.srm_p_value.unwrap_or(0.0)
        ));
    }
    if s.required_samples_per_arm > 0 {
        out.push_str(&format!("  required samples per arm: {}\n", s.required_samples_per_arm));
    }
    for a in &s.alerts {
        out.push_str(&format!("  ALERT {} (v{}): {}\n", a.trigger, a.version, a.reason));
    }
    out.push_str(
        "  arm             version  role        share    requests  errors  total n  total errors  p99 ms\n",
    );
    for a in &s.arms {
        let pct = f64::from(a.weight_bp) / 100.0;
        let bar = "#".repeat((pct / 5.0).round() as usize);
        out.push_str(&format!(
            "  {:<15} v{:<7} {:<11} {:>6.2}%  {:>8}  {:>6}  {:>7}  {:>12}  {:>6.2}  {bar}\n",
            a.name,
            a.version,
            role_name(a.role),
            pct,
            a.requests,
            a.errors,
            a.total_requests,
            a.total_errors,
            a.p99_ms
        ));
    }
    for sh in &s.shadows {
        let pct = |x: f64| if x < 0.0 { "-".to_string() } else { format!("{:.2}%", x * 100.0) };
        let diff = if sh.mean_abs_diff < 0.0 { "-".to_string() } else { format!("{:.5}", sh.mean_abs_diff) };
        out.push_str(&format!(
            "  shadow v{} ({:.0}%): {} compared, agreement {}, mean |diff| {diff}, {} dropped, {} errors, NaN/Inf {}, p99 {:.2} ms\n",
            sh.version,
            f64::from(sh.fraction_bp) / 100.0,
            sh.compared,
            pct(sh.agreement_rate),
            sh.dropped,
            sh.errors,
            sh.shadow_nan_inf,
            sh.p99_ms
        ));
    }
    out
}

fn fmt_interval(i: &Option<pb::Interval>, scale: f64, digits: usize) -> String {
    match i {
        Some(i) => format!("[{:.digits$}, {:.digits$}]", i.low * scale, i.high * scale),
        None => "-".to_string(),
    }
}

fn fmt_comparison(c: &Option<pb::Comparison>, scale: f64, unit: &str) -> String {
    match c {
        Some(c) => format!(
            "{:+.3}{unit} CS {} margin {:.3}{unit} p={:.3} {}",
            c.diff * scale,
            fmt_interval(&c.confidence_sequence, scale, 3),
            c.margin * scale,
            c.p_value,
            c.verdict
        ),
        None => "-".to_string(),
    }
}

/// GetAnalysis as text: the verdict, then per arm its numbers, its
/// comparisons with the champion and its triggers, then business metrics.
pub fn format_analysis(a: &pb::Analysis) -> String {
    let mut out = String::new();
    if a.rollout_id.is_empty() {
        out.push_str(&format!("{}: champion v{}, no rollout to analyse\n", a.model, a.champion));
        return out;
    }
    out.push_str(&format!(
        "{}: {} {} (rollout {}), champion v{}, alpha {}\n",
        a.model, a.strategy, a.state, a.rollout_id, a.champion, a.alpha
    ));
    out.push_str(&format!("  verdict: {}", a.verdict));
    if !a.verdict_reason.is_empty() {
        out.push_str(&format!(" ({})", a.verdict_reason));
    }
    out.push('\n');
    if !a.waiting_for.is_empty() {
        out.push_str(&format!("  {}\n", a.waiting_for));
    }
    match (a.srm_log_bayes_factor, a.srm_p_value) {
        (Some(lbf), Some(p)) => out.push_str(&format!(
            "  SRM: sequential test ln BF {lbf:.2}, flags at {:.2} (alpha {}; always-valid p = {p:.3e}); chi2 {:.2} for reference{}\n",
            (1.0 / a.srm_alpha).ln(),
            a.srm_alpha,
            a.srm_chi2.unwrap_or(f64::NAN),
            if a.srm_mismatch { "  MISMATCH: assignment is broken, do not trust the comparison" } else { "" }
        )),
        _ => out.push_str("  SRM: not enough requests yet\n"),
    }
    if a.step_min_samples > 0 || a.required_samples_per_arm > 0 {
        out.push_str(&format!(
            "  sample gates: step {} per candidate, experiment {} per arm\n",
            a.step_min_samples, a.required_samples_per_arm
        ));
    }
    out.push_str(
        "  arm             version  share   stage n   total n  errors (rate, CI)             latency mean ms (CI)          p50     p99  PSI    importance shift\n",
    );
    for arm in &a.arms {
        let psi = arm.psi.map_or("-".to_string(), |p| format!("{p:.3}"));
        let importance = arm.importance_shift.map_or("-".to_string(), |p| format!("{p:.2}"));
        let errors = format!(
            "{} ({:.2}% {})",
            arm.errors,
            arm.error_rate * 100.0,
            fmt_interval(&arm.error_rate_ci, 100.0, 2)
        );
        let latency = format!("{:.3} {}", arm.latency_mean_ms, fmt_interval(&arm.latency_mean_ci, 1.0, 3));
        out.push_str(&format!(
            "  {:<15} v{:<7} {:>5.1}%  {:>7}  {:>8}  {errors:<28}  {latency:<26} {:>6.3}  {:>6.3}  {psi:<6} {importance}\n",
            arm.name,
            arm.version,
            f64::from(arm.weight_bp) / 100.0,
            arm.stage_samples,
            arm.requests,
            arm.p50_ms,
            arm.p99_ms,
        ));
        if arm.errors_vs_champion.is_some() || arm.latency_vs_champion.is_some() {
            out.push_str(&format!(
                "      vs champion: errors {}; latency {}\n",
                fmt_comparison(&arm.errors_vs_champion, 100.0, "pp"),
                fmt_comparison(&arm.latency_vs_champion, 1.0, "ms")
            ));
        }
        for t in &arm.triggers {
            out.push_str(&format!("      trigger {:<13} {:<8} {}\n", t.trigger, t.state, t.text));
        }
    }
    if !a.metrics.is_empty() {
        out.push_str("  metric          arm                 version        n      mean  CI                  p (t, ref)  p (always valid)  decision\n");
        for m in &a.metrics {
            let p = |v: Option<f64>| v.map_or("-".to_string(), |p| format!("{p:.4}"));
            out.push_str(&format!(
                "  {:<15} {:<19} v{:<7} {:>8} {:>9.4}  {:<22}  {:>6}  {:>16}  {}\n",
                m.metric,
                m.arm,
                m.version,
                m.n,
                m.mean,
                fmt_interval(&m.ci, 1.0, 4),
                p(m.p_value),
                p(m.always_valid_p_value),
                m.decision
            ));
            if let Some(line) = deciding_line(m) {
                out.push_str(&line);
            }
        }
    }
    for al in &a.alerts {
        out.push_str(&format!("  ALERT {} (v{}): {}\n", al.trigger, al.version, al.reason));
    }
    out
}

/// Which test decides a treatment arm, its statistic against the threshold
/// and n per arm; `None` for the control.
fn deciding_line(m: &pb::MetricResult) -> Option<String> {
    if m.decision == "control" {
        return None;
    }
    Some(match m.statistic {
        Some(stat) => format!(
            "      decided by {}: always-valid p {stat:.4} {} alpha {} at n {} (control) and {} (this arm); diff CS {}; Welch's p does not decide\n",
            m.deciding_test,
            if stat <= m.threshold { "<=" } else { ">" },
            m.threshold,
            m.control_n,
            m.n,
            fmt_interval(&m.diff_confidence_sequence, 1.0, 4)
        ),
        None => {
            format!("      no decision before {} per arm (now {} and {})\n", m.min_samples, m.control_n, m.n)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(metrics: Vec<pb::MetricResult>) -> pb::Analysis {
        pb::Analysis {
            model: "m".into(),
            rollout_id: "r".into(),
            strategy: "ab_test".into(),
            state: "running".into(),
            srm_p_value: Some(0.5),
            srm_log_bayes_factor: Some(0.69),
            srm_chi2: Some(1.2),
            srm_alpha: 0.001,
            metrics,
            ..Default::default()
        }
    }

    /// The analysis says which test decides, its statistic against the
    /// threshold and n per arm; the SRM line names the sequential test.
    #[test]
    fn analysis_names_the_deciding_test_and_n_per_arm() {
        let row = |decision: &str, statistic: Option<f64>| pb::MetricResult {
            metric: "score".into(),
            arm: "treatment".into(),
            version: 2,
            n: 812,
            decision: decision.into(),
            deciding_test: if statistic.is_some() { "msprt".into() } else { String::new() },
            statistic,
            threshold: 0.05,
            control_n: 790,
            min_samples: 30,
            ..Default::default()
        };
        let text = format_analysis(&analysis(vec![row("better", Some(0.0123))]));
        assert!(
            text.contains(
                "decided by msprt: always-valid p 0.0123 <= alpha 0.05 at n 790 (control) and 812 (this arm)"
            ),
            "{text}"
        );
        assert!(text.contains("SRM: sequential test ln BF 0.69, flags at 6.91 (alpha 0.001"), "{text}");
        let text = format_analysis(&analysis(vec![row("collecting", Some(0.31))]));
        assert!(text.contains("always-valid p 0.3100 > alpha 0.05"), "{text}");
        let text = format_analysis(&analysis(vec![row("collecting", None)]));
        assert!(text.contains("no decision before 30 per arm (now 790 and 812)"), "{text}");
        let mut control = row("control", None);
        control.arm = "control".into();
        assert!(!format_analysis(&analysis(vec![control])).contains("decision before"));
    }
}
