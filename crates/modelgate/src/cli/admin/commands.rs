//! The admin subcommands as clap types, and the StartRollout request built
//! from `admin start`'s words.

use anyhow::Context;
use clap::{Args, Subcommand};
use modelgate_proto::v1 as pb;

/// `modelgate admin <call>`.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Models, versions, states, signatures, checksums.
    ListModels,
    /// A model's rollout: strategy, stage, weights, per-arm counts.
    GetRollout(ModelArg),
    /// Start a rollout plan for a model.
    Start(Box<StartArgs>),
    /// Canary: set the candidate's share directly.
    SetWeights(SetWeightsArgs),
    /// Canary: next step. Blue/green: switch to green.
    Advance(ModelArg),
    /// Hold the rollout where it is: no automatic advance or promotion
    /// (hard triggers still roll back).
    Pause(ModelArg),
    /// Let a paused rollout go on.
    Resume(ModelArg),
    /// Make a candidate the champion.
    Promote(PromoteArgs),
    /// All traffic back to the champion, at once.
    Rollback(ModelArg),
    /// Stop the rollout: candidate at 0%.
    Abort(ModelArg),
    /// The audit log.
    Events(EventsArgs),
    /// Required sample size per arm.
    SampleSize(SampleSizeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ModelArg {
    /// Model name.
    pub model: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Only if the rollout is still at this stage (numbered from 1, as
    /// get-rollout shows them); else ABORTED and nothing changes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub if_stage: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct SetWeightsArgs {
    /// Model name.
    pub model: String,
    /// The candidate's share, 0-100.
    #[arg(long)]
    pub percent: u32,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// Model name.
    pub model: String,
    /// The version to promote; default the rollout's candidate.
    #[arg(long)]
    pub version: Option<i64>,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this model's events.
    #[arg(long)]
    pub model: Option<String>,
    /// Only events at or after this time: an age (10m, 2h, 1day: that long
    /// ago), an RFC 3339 time (2026-12-07T04:00:00Z) or unix ms.
    #[arg(long, alias = "since-ms")]
    pub since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many (newest last).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct SampleSizeArgs {
    /// Means: the metric's variance σ².
    #[arg(long, requires = "mde")]
    pub variance: Option<f64>,
    /// Means: the minimum detectable effect δ.
    #[arg(long)]
    pub mde: Option<f64>,
    /// Proportions: the baseline rate.
    #[arg(long, requires = "target", conflicts_with = "variance")]
    pub baseline: Option<f64>,
    /// Proportions: the rate to detect.
    #[arg(long)]
    pub target: Option<f64>,
    /// False-positive rate of the test (default 0.05).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Chance of detecting an effect of the MDE (default 0.8).
    #[arg(long)]
    pub power: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Model name.
    pub model: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "", global = true)]
    pub reason: String,
    /// This rollout's p99 latency SLA in ms (over model.toml's).
    #[arg(long, global = true)]
    pub p99_sla_ms: Option<f64>,
    /// This rollout's NaN/Inf output rate limit (over model.toml's).
    #[arg(long, global = true)]
    pub nan_inf_rate: Option<f64>,
    /// This rollout's error-rate multiple of the champion's (over model.toml's).
    #[arg(long, global = true)]
    pub error_ratio: Option<f64>,
    /// This rollout's error-rate floor (over model.toml's).
    #[arg(long, global = true)]
    pub error_rate_floor: Option<f64>,
    /// Requests the candidate must have served since the rollout started
    /// before a trigger may fire (over model.toml's).
    #[arg(long, global = true)]
    pub trigger_min_samples: Option<u64>,
    /// This rollout's chance of a false rollback while every candidate is
    /// at or under its limits, within --budget-hours (over model.toml's
    /// false_alarm_budget, default 0.001).
    #[arg(long, global = true)]
    pub false_alarm_budget: Option<f64>,
    /// The horizon the false-alarm budget covers, in hours (default 24).
    #[arg(long, global = true)]
    pub budget_hours: Option<f64>,
    /// Wait until the rollout ends: exit 0 when it is promoted (or
    /// completes), 3 when it is rolled back, 4 when aborted or replaced. For
    /// scripts and CI pipelines.
    #[arg(long, global = true)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (exit 5; the
    /// rollout goes on). Default: wait as long as it takes.
    #[arg(long, global = true, requires = "wait", value_parser = crate::server::config::seconds(1.0, 31_536_000.0))]
    pub wait_timeout: Option<f64>,
    #[command(subcommand)]
    pub plan: PlanArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PlanArgs {
    /// Load green beside blue, then switch all traffic at once.
    BlueGreen {
        /// The version to switch to.
        #[arg(long)]
        green: i64,
        /// Seconds blue stays loaded after the switch (default 3600).
        #[arg(long)]
        retention_secs: Option<u64>,
    },
    /// Grow the candidate's share in steps.
    Canary {
        /// The version to roll out.
        #[arg(long)]
        candidate: i64,
        /// Step percentages, e.g. 1,5,20,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<u32>,
        /// Minimum seconds per step.
        #[arg(long, default_value_t = 60)]
        step_seconds: u64,
        /// Minimum candidate samples per step.
        #[arg(long, default_value_t = 500)]
        step_samples: u64,
        /// Advance by itself when a step is healthy.
        #[arg(long)]
        auto_advance: bool,
    },
    /// Mirror traffic to versions without affecting replies.
    Shadow {
        /// The versions to mirror traffic to, e.g. 3,4.
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<i64>,
        /// Percent of requests mirrored (default 100).
        #[arg(long)]
        fraction: Option<f64>,
    },
    /// A/B test: `--arm name=version:weight`, at least two.
    AbTest {
        /// An arm, `name=version:weight`; repeat for each (at least two).
        #[arg(long = "arm", required = true)]
        arms: Vec<String>,
        /// The business metric the arms are judged on (RecordOutcome's name).
        #[arg(long)]
        metric: String,
        /// The smallest difference in the metric that matters (absolute).
        #[arg(long)]
        mde: f64,
        /// The metric's variance, for the planned sample size.
        #[arg(long)]
        variance: f64,
        /// False-positive rate of the always-valid test (default 0.05).
        #[arg(long)]
        alpha: Option<f64>,
        /// Chance of detecting a difference of the MDE (default 0.8).
        #[arg(long)]
        power: Option<f64>,
        /// Minimum seconds before the experiment is ready (default 604800,
        /// a week: a full weekly cycle).
        #[arg(long)]
        min_duration_secs: Option<u64>,
        /// Smaller metric values are better (latency, cost).
        #[arg(long)]
        lower_is_better: bool,
    },
    /// Challengers share a fixed slice; promote by hand or automatically.
    ChampionChallenger {
        /// The challenger versions, e.g. 3,4.
        #[arg(long, value_delimiter = ',', required = true)]
        challengers: Vec<i64>,
        /// Percent for all challengers together (default 10).
        #[arg(long)]
        fraction: Option<f64>,
        /// Automatic gate: the KPI to compare (empty: manual gate). The gate
        /// promotes a challenger once a one-sided always-valid test shows its
        /// KPI above the champion's by more than --min-relative-lift, within
        /// an evaluation period; the old champion stays on the slice as a
        /// challenger.
        #[arg(long, default_value = "")]
        auto_kpi: String,
        /// Promote when the challenger's KPI beats the champion's by more
        /// than this fraction of the champion's value, e.g. 0.02 for 2%;
        /// 0 (the default): when it is shown better than the champion.
        #[arg(long = "min-relative-lift", alias = "auto-threshold", default_value_t = 0.0)]
        auto_threshold: f64,
        /// The evaluation period, 1 to 86400 s: the test's sample grows
        /// from each period's start and restarts at the next; α is spread
        /// over a day of periods (a 24 h period gets the model's whole α).
        #[arg(long = "auto-period-secs", alias = "auto-window-secs", default_value_t = 86_400)]
        auto_window_secs: u64,
        /// KPI observations each side needs in the period.
        #[arg(long)]
        auto_min_samples: Option<u64>,
        /// Smaller KPI values are better.
        #[arg(long)]
        auto_lower_is_better: bool,
    },
}

fn parse_arm(s: &str) -> anyhow::Result<pb::AbArm> {
    let (name, rest) = s.split_once('=').context("--arm is name=version:weight")?;
    let (version, weight) = rest.split_once(':').context("--arm is name=version:weight")?;
    Ok(pb::AbArm {
        name: name.to_string(),
        version: version.parse().with_context(|| format!("bad version in --arm {s}"))?,
        weight: weight.parse().with_context(|| format!("bad weight in --arm {s}"))?,
    })
}

/// Builds the StartRollout request from the CLI's words. The reason, the
/// trigger overrides and `--wait` may come before or after the plan's name.
pub fn start_request(a: &StartArgs) -> anyhow::Result<pb::StartRolloutRequest> {
    use pb::start_rollout_request::Plan as P;
    let plan = match &a.plan {
        PlanArgs::BlueGreen { green, retention_secs } => {
            P::BlueGreen(pb::BlueGreenPlan { green: *green, retention_secs: *retention_secs })
        }
        PlanArgs::Canary { candidate, steps, step_seconds, step_samples, auto_advance } => {
            P::Canary(pb::CanaryPlan {
                candidate: *candidate,
                steps: steps
                    .iter()
                    .map(|&percent| pb::CanaryStep {
                        percent,
                        min_duration_secs: *step_seconds,
                        min_samples: *step_samples,
                    })
                    .collect(),
                auto_advance: *auto_advance,
            })
        }
        PlanArgs::Shadow { versions, fraction } => {
            P::Shadow(pb::ShadowPlan { versions: versions.clone(), fraction_percent: *fraction })
        }
        PlanArgs::AbTest {
            arms,
            metric,
            mde,
            variance,
            alpha,
            power,
            min_duration_secs,
            lower_is_better,
        } => P::AbTest(pb::AbTestPlan {
            arms: arms.iter().map(|s| parse_arm(s)).collect::<Result<_, _>>()?,
            metric: metric.clone(),
            mde: *mde,
            alpha: *alpha,
            power: *power,
            variance: *variance,
            min_duration_secs: *min_duration_secs,
            lower_is_better: *lower_is_better,
        }),
        PlanArgs::ChampionChallenger {
            challengers,
            fraction,
            auto_kpi,
            auto_threshold,
            auto_window_secs,
            auto_min_samples,
            auto_lower_is_better,
        } => P::ChampionChallenger(pb::ChampionChallengerPlan {
            challengers: challengers.clone(),
            fraction_percent: *fraction,
            auto_kpi: auto_kpi.clone(),
            auto_threshold: *auto_threshold,
            auto_window_secs: *auto_window_secs,
            auto_min_samples: *auto_min_samples,
            auto_lower_is_better: *auto_lower_is_better,
        }),
    };
    let triggers = pb::TriggerOverrides {
        p99_sla_ms: a.p99_sla_ms,
        nan_inf_rate: a.nan_inf_rate,
        error_ratio: a.error_ratio,
        error_rate_floor: a.error_rate_floor,
        min_samples: a.trigger_min_samples,
        false_alarm_budget: a.false_alarm_budget,
        budget_hours: a.budget_hours,
    };
    let triggers = (triggers != pb::TriggerOverrides::default()).then_some(triggers);
    Ok(pb::StartRolloutRequest {
        model: a.model.clone(),
        plan: Some(plan),
        reason: a.reason.clone(),
        triggers,
    })
}

#[cfg(test)]
mod flags {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        start: StartArgs,
    }

    fn gate_of(args: &[&str]) -> (String, f64, u64) {
        let cli =
            Cli::try_parse_from(["t", "m", "champion-challenger", "--challengers", "2"].iter().chain(args))
                .expect("parses");
        match start_request(&cli.start).unwrap().plan {
            Some(pb::start_rollout_request::Plan::ChampionChallenger(c)) => {
                (c.auto_kpi, c.auto_threshold, c.auto_window_secs)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_lift_and_period_flags_and_their_old_names() {
        // Defaults that can promote: "shown better", a day-long period.
        assert_eq!(gate_of(&["--auto-kpi", "conversion"]), ("conversion".into(), 0.0, 86_400));
        assert_eq!(
            gate_of(&["--auto-kpi", "ctr", "--min-relative-lift", "0.02", "--auto-period-secs", "3600"]),
            ("ctr".into(), 0.02, 3600)
        );
        // The old names still work, hidden from --help.
        assert_eq!(
            gate_of(&["--auto-kpi", "ctr", "--auto-threshold", "0.03", "--auto-window-secs", "600"]),
            ("ctr".into(), 0.03, 600)
        );
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("champion-challenger")
            .expect("the subcommand")
            .render_long_help()
            .to_string();
        assert!(help.contains("--min-relative-lift") && help.contains("--auto-period-secs"), "{help}");
        assert!(!help.contains("--auto-threshold") && !help.contains("--auto-window-secs"), "{help}");
    }

    #[test]
    fn overrides_reason_and_wait_go_before_or_after_the_plan() {
        let canary = ["canary", "--candidate", "2", "--steps", "50,100"];
        let extra = ["--reason", "ticket 42", "--p99-sla-ms", "40", "--false-alarm-budget", "0.01", "--wait"];
        let before: Vec<&str> = ["t", "m"].iter().chain(&extra).chain(&canary).copied().collect();
        let after: Vec<&str> = ["t", "m"].iter().chain(&canary).chain(&extra).copied().collect();
        for args in [before, after] {
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.start.wait, "{args:?}");
            let req = start_request(&cli.start).unwrap();
            assert_eq!(req.reason, "ticket 42", "{args:?}");
            let t = req.triggers.unwrap();
            assert_eq!((t.p99_sla_ms, t.false_alarm_budget), (Some(40.0), Some(0.01)), "{args:?}");
        }
        // --wait-timeout without --wait is refused, wherever it is.
        assert!(
            Cli::try_parse_from(["t", "m", "canary", "--candidate", "2", "--wait-timeout", "60"]).is_err()
        );
    }
}
