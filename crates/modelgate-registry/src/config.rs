//! `<repo>/<model>/model.toml`: per-model settings. Unknown keys are errors,
//! so a typo never silently falls back to a default.

use modelgate_rollout::{TriggerOverrides, TriggerRangeError};
use serde::Deserialize;

/// Per-model settings. Every field is optional in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// ORT sessions per version. Default: one per executor thread, so no two
    /// threads share a session. Fewer saves memory and serialises the threads
    /// that share one.
    pub sessions: Option<usize>,
    /// ORT intra-op threads per session (default 1: the executor already runs
    /// one inference per core).
    pub intra_op_threads: usize,
    /// ORT inter-op threads per session (default 1).
    pub inter_op_threads: usize,
    /// Requests that may wait per version; one more is answered
    /// RESOURCE_EXHAUSTED at once.
    pub queue_capacity: usize,
    /// Dynamic batching: queued requests of a version are stacked along the
    /// first dimension up to this many rows and run once (only for models
    /// whose inputs and outputs all have a dynamic first dimension). 1 turns
    /// batching off.
    pub max_batch: usize,
    /// How long a partial batch may wait for more requests, in microseconds
    /// (0: take what is already queued, never wait).
    pub max_queue_delay_us: u64,
    /// The longest one inference of this model may run, in milliseconds,
    /// whatever the client's deadline (none at all, or a long one): a longer
    /// run is stopped through ONNX Runtime's terminate flag and answered
    /// DEADLINE_EXCEEDED. Default: `--max-run-ms` (30000).
    pub max_run_ms: Option<u64>,
    /// One-row requests run inline on the connection's thread, skipping the
    /// hand-over to an inference thread, while this version's one-row runs
    /// are estimated under this many microseconds (0: never). Default:
    /// `--inline-run-us` (50).
    pub inline_run_us: Option<u64>,
    /// The most bytes one declared input or output may take at its smallest
    /// legal shape (and all inputs together); a version over it is FAILED
    /// before anything is allocated for it. Default: `--max-tensor-bytes`
    /// (256 MiB).
    pub max_tensor_bytes: Option<u64>,
    /// What to start, with its defaults, when a new version of this model is
    /// dropped into the repository while serving: `on_new_version = "canary"`,
    /// or as a table to let the canary advance by itself:
    ///
    /// ```toml
    /// [on_new_version]
    /// plan = "canary"
    /// auto_advance = true   # default false: an operator advances each step
    /// ```
    pub on_new_version: NewVersionPlan,
    /// Hard triggers that roll a candidate back by themselves.
    pub triggers: TriggerSettings,
    /// The sequential analysis that lets a step advance or a challenger be
    /// promoted by itself, and the business-metric soft trigger.
    pub analysis: AnalysisSettings,
    /// What the shadow records of this model keep (issue 18).
    pub records: RecordSettings,
}

/// `[records]` in model.toml: what a shadow's prediction record keeps.
///
/// ```toml
/// [records]
/// inputs = true      # default false: inputs may be large or personal
/// max_values = 1024  # elements kept per tensor (default 4096); above it only statistics
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordSettings {
    pub inputs: bool,
    pub max_values: Option<usize>,
}

/// Elements kept per tensor in a record unless `[records] max_values` is set.
pub const DEFAULT_RECORD_MAX_VALUES: usize = 4096;
/// The largest `[records] max_values`: a record is one JSON line or Kafka message.
pub const MAX_RECORD_VALUES_CEILING: usize = 1_000_000;

impl RecordSettings {
    pub fn max_values(&self) -> usize {
        self.max_values.unwrap_or(DEFAULT_RECORD_MAX_VALUES)
    }
}

/// `[analysis]` in model.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSettings {
    /// How much worse a candidate's error rate may be than the champion's,
    /// absolute (0.01 = one percentage point), for a step to advance.
    pub error_margin: f64,
    /// How much worse its mean latency may be, relative to the champion's
    /// (0.2 = 20%)…
    pub latency_margin: f64,
    /// …but never less than this, in milliseconds: differences below it do
    /// not matter next to the network. Default 1 ms (it was 0.1 ms, which
    /// kept a same-model canary of the bundled sub-millisecond model at its
    /// 1% step for minutes: a version serving 1% of the traffic runs colder
    /// than the champion, and its mean was never shown within 0.1 ms). For
    /// models slower than 5 ms the relative `latency_margin` is the larger.
    pub latency_margin_min_ms: f64,
    /// Error rate of the always-valid tests (checked on every tick).
    pub alpha: f64,
    /// A business metric (reported with RecordOutcome) whose regression
    /// beyond `kpi_mde` raises an ALERT during canaries and blue/green.
    pub kpi: Option<String>,
    /// The smallest change of `kpi` that matters, in its units.
    pub kpi_mde: Option<f64>,
    /// Whether a larger `kpi` is better.
    pub kpi_higher_is_better: bool,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            error_margin: 0.01,
            latency_margin: 0.2,
            latency_margin_min_ms: 1.0,
            alpha: 0.05,
            kpi: None,
            kpi_mde: None,
            kpi_higher_is_better: true,
        }
    }
}

/// `[triggers]` in model.toml; unset fields keep the strategy notes' defaults
/// (NaN/Inf rate 1%, error rate 5× the champion's, no latency SLA).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerSettings {
    /// p99 latency SLA in milliseconds; enables the latency trigger.
    pub p99_sla_ms: Option<f64>,
    pub nan_inf_rate: Option<f64>,
    pub error_ratio: Option<f64>,
    pub error_rate_floor: Option<f64>,
    /// Requests a candidate must serve before a trigger may fire.
    pub min_samples: Option<u64>,
    /// The hard triggers' false-alarm budget per rollout (0.001) over
    /// `budget_hours` (24).
    pub false_alarm_budget: Option<f64>,
    pub budget_hours: Option<f64>,
    /// Pause the rollout when a soft trigger reaches ALERT (PSI ≥ 0.25).
    pub pause_on_alert: bool,
    /// The sliding window the triggers judge: `window_intervals` intervals
    /// of `window_interval_secs` (default 6 × 10 s).
    pub window_interval_secs: Option<f64>,
    pub window_intervals: Option<usize>,
    /// Feature-importance shift (total variation, 0..1) that warns
    /// (default 0.2) and that alerts (default 0.4).
    pub importance_warn: Option<f64>,
    pub importance_alert: Option<f64>,
}

impl TriggerSettings {
    /// The settings a rollout's trigger overrides can also set, in their
    /// form: what [`TriggerOverrides::validate`] checks for both.
    pub fn overrides(&self) -> TriggerOverrides {
        TriggerOverrides {
            p99_sla_ms: self.p99_sla_ms,
            nan_inf_rate: self.nan_inf_rate,
            error_ratio: self.error_ratio,
            error_rate_floor: self.error_rate_floor,
            min_samples: self.min_samples,
            false_alarm_budget: self.false_alarm_budget,
            budget_hours: self.budget_hours,
        }
    }

    /// The feature-importance shift that warns and the one that alerts.
    pub fn importance_levels(&self) -> (f64, f64) {
        (self.importance_warn.unwrap_or(0.2), self.importance_alert.unwrap_or(0.4))
    }

    /// The window's interval and interval count.
    pub fn window(&self) -> (std::time::Duration, usize) {
        (
            std::time::Duration::from_secs_f64(self.window_interval_secs.unwrap_or(10.0)),
            self.window_intervals.unwrap_or(6),
        )
    }
}

/// The plan a version dropped in while serving starts by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNewVersion {
    /// Nothing: it is READY and waits for an operator.
    #[default]
    None,
    Shadow,
    Canary,
    BlueGreen,
}

/// `on_new_version`: the plan, and whether a canary advances by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewVersionPlan {
    pub plan: OnNewVersion,
    /// A canary's steps advance by themselves once each is healthy and its
    /// minimums are met (as `--auto-advance` does for a canary started by
    /// hand). Only a canary has steps: with another plan it is an error.
    pub auto_advance: bool,
}

impl From<OnNewVersion> for NewVersionPlan {
    fn from(plan: OnNewVersion) -> Self {
        NewVersionPlan { plan, auto_advance: false }
    }
}

impl<'de> Deserialize<'de> for NewVersionPlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            plan: OnNewVersion,
            #[serde(default)]
            auto_advance: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(OnNewVersion),
            Table(Table),
        }
        match Form::deserialize(d) {
            Ok(Form::Name(plan)) => Ok(plan.into()),
            Ok(Form::Table(t)) => Ok(NewVersionPlan { plan: t.plan, auto_advance: t.auto_advance }),
            Err(_) => Err(serde::de::Error::custom(
                "on_new_version must be one of \"none\", \"shadow\", \"canary\", \"blue_green\", \
                 or a table with `plan` (one of those) and `auto_advance` (true or false)",
            )),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            sessions: None,
            intra_op_threads: 1,
            inter_op_threads: 1,
            queue_capacity: 256,
            max_batch: 32,
            max_queue_delay_us: 0,
            max_run_ms: None,
            inline_run_us: None,
            max_tensor_bytes: None,
            on_new_version: NewVersionPlan { plan: OnNewVersion::None, auto_advance: false },
            triggers: TriggerSettings::default(),
            analysis: AnalysisSettings::default(),
            records: RecordSettings::default(),
        }
    }
}

/// The largest `max_run_ms` (one day).
pub const MAX_RUN_MS_CEILING: u64 = 86_400_000;
/// The largest `inline_run_us`: an inline run holds a connection thread,
/// so it must stay far below anything a client would notice.
pub const MAX_INLINE_RUN_US: u64 = 1_000;
/// The largest `max_tensor_bytes` (1 TiB).
pub const MAX_TENSOR_BYTES_CEILING: u64 = 1 << 40;

/// A model.toml that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("model.toml: {0}")]
    Parse(String),
    #[error("model.toml: {field} must be {expected}, got {got}")]
    Invalid { field: &'static str, expected: &'static str, got: usize },
    #[error("model.toml: {field} must be {expected}, got {got}")]
    InvalidNumber { field: &'static str, expected: &'static str, got: f64 },
    /// A `[triggers]` setting a rollout can also override, refused with the
    /// admin API's words.
    #[error("model.toml: {0}")]
    Trigger(#[from] TriggerRangeError),
}

impl ModelConfig {
    /// Parses and validates a model.toml's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field, got: usize, lo: usize, hi: usize, expected| {
            if (lo..=hi).contains(&got) { Ok(()) } else { Err(ConfigError::Invalid { field, expected, got }) }
        };
        if let Some(s) = self.sessions {
            check("sessions", s, 1, 256, "between 1 and 256")?;
        }
        check("intra_op_threads", self.intra_op_threads, 1, 256, "between 1 and 256")?;
        check("inter_op_threads", self.inter_op_threads, 1, 256, "between 1 and 256")?;
        check("queue_capacity", self.queue_capacity, 1, 1_000_000, "between 1 and 1000000")?;
        check("max_batch", self.max_batch, 1, 65_536, "between 1 and 65536")?;
        if self.max_queue_delay_us > 1_000_000 {
            return Err(ConfigError::Invalid {
                field: "max_queue_delay_us",
                expected: "at most 1000000 (one second)",
                got: usize::try_from(self.max_queue_delay_us).unwrap_or(usize::MAX),
            });
        }
        if let Some(ms) = self.max_run_ms
            && !(1..=MAX_RUN_MS_CEILING).contains(&ms)
        {
            return Err(ConfigError::Invalid {
                field: "max_run_ms",
                expected: "between 1 and 86400000 (one day)",
                got: usize::try_from(ms).unwrap_or(usize::MAX),
            });
        }
        if let Some(us) = self.inline_run_us
            && us > MAX_INLINE_RUN_US
        {
            return Err(ConfigError::Invalid {
                field: "inline_run_us",
                expected: "at most 1000 (one millisecond)",
                got: usize::try_from(us).unwrap_or(usize::MAX),
            });
        }
        if let Some(bytes) = self.max_tensor_bytes
            && !(1..=MAX_TENSOR_BYTES_CEILING).contains(&bytes)
        {
            return Err(ConfigError::Invalid {
                field: "max_tensor_bytes",
                expected: "between 1 and 1099511627776 (1 TiB)",
                got: usize::try_from(bytes).unwrap_or(usize::MAX),
            });
        }
        if self.on_new_version.auto_advance && self.on_new_version.plan != OnNewVersion::Canary {
            return Err(ConfigError::Parse(
                "on_new_version.auto_advance must be false unless the plan is \"canary\" (only a canary has steps to advance)"
                    .into(),
            ));
        }
        let number = |field, got: f64, lo: f64, hi: f64, expected| {
            if got.is_finite() && got >= lo && got <= hi {
                Ok(())
            } else {
                Err(ConfigError::InvalidNumber { field, expected, got })
            }
        };
        if let Some(n) = self.records.max_values {
            check("records.max_values", n, 0, MAX_RECORD_VALUES_CEILING, "between 0 and 1000000")?;
        }
        let t = &self.triggers;
        let rate = "a rate above 0 and at most 1";
        t.overrides().validate()?;
        if let Some(v) = t.window_interval_secs {
            number("triggers.window_interval_secs", v, 0.01, 3600.0, "between 0.01 and 3600 s")?;
        }
        if let Some(v) = t.window_intervals {
            check("triggers.window_intervals", v, 1, 1000, "between 1 and 1000")?;
        }
        let (warn, alert) = t.importance_levels();
        number("triggers.importance_warn", warn, 1e-6, 1.0, "a shift above 0 and at most 1")?;
        number(
            "triggers.importance_alert",
            alert,
            warn,
            1.0,
            "a shift at least importance_warn and at most 1",
        )?;
        let a = &self.analysis;
        number("analysis.error_margin", a.error_margin, 1e-6, 1.0, rate)?;
        number("analysis.latency_margin", a.latency_margin, 0.0, 100.0, "between 0 and 100 (relative)")?;
        number(
            "analysis.latency_margin_min_ms",
            a.latency_margin_min_ms,
            0.0,
            600_000.0,
            "between 0 and 600000 ms",
        )?;
        if a.latency_margin == 0.0 && a.latency_margin_min_ms == 0.0 {
            return Err(ConfigError::InvalidNumber {
                field: "analysis.latency_margin",
                expected: "above 0 when latency_margin_min_ms is 0 (a zero margin can never be shown)",
                got: 0.0,
            });
        }
        number("analysis.alpha", a.alpha, 1e-9, 0.5, "between 0 and 0.5")?;
        match (&a.kpi, a.kpi_mde) {
            (Some(k), _) if k.is_empty() => {
                return Err(ConfigError::Parse(
                    "analysis.kpi must name a metric, got an empty string".into(),
                ));
            }
            (Some(_), Some(mde)) => number("analysis.kpi_mde", mde, 1e-12, f64::MAX, "above 0")?,
            (Some(_), None) => {
                return Err(ConfigError::Parse(
                    "analysis.kpi needs analysis.kpi_mde (the smallest change that matters)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Parse("analysis.kpi_mde is set without analysis.kpi".into()));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_settings_are_parsed_and_checked() {
        assert_eq!(ModelConfig::default().records.max_values(), DEFAULT_RECORD_MAX_VALUES);
        assert!(!ModelConfig::default().records.inputs);
        let c = ModelConfig::parse("[records]\ninputs = true\nmax_values = 16\n").unwrap();
        assert_eq!((c.records.inputs, c.records.max_values()), (true, 16));
        let e = ModelConfig::parse("[records]\nmax_values = 2000000\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "model.toml: records.max_values must be between 0 and 1000000, got 2000000"
        );
        assert!(
            ModelConfig::parse("[records]\ninput = true\n")
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        assert!(ModelConfig::parse("[records]\nmax_values = -1\n").is_err());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
    }

    #[test]
    fn fields_parse() {
        let c = ModelConfig::parse("sessions = 2\nintra_op_threads = 2\nqueue_capacity = 1\n").unwrap();
        assert_eq!(c.sessions, Some(2));
        assert_eq!(c.intra_op_threads, 2);
        assert_eq!(c.queue_capacity, 1);
    }

    #[test]
    fn on_new_version_parses_and_rejects_unknown_plans() {
        assert_eq!(
            ModelConfig::parse("on_new_version = \"shadow\"\n").unwrap().on_new_version,
            OnNewVersion::Shadow.into()
        );
        assert_eq!(
            ModelConfig::parse("on_new_version = \"blue_green\"\n").unwrap().on_new_version,
            OnNewVersion::BlueGreen.into()
        );
        let e = ModelConfig::parse("on_new_version = \"yolo\"\n").unwrap_err();
        assert!(e.to_string().contains("on_new_version must be one of"), "{e}");
    }

    #[test]
    fn on_new_version_as_a_table_can_auto_advance_a_canary() {
        let c = ModelConfig::parse("[on_new_version]\nplan = \"canary\"\nauto_advance = true\n").unwrap();
        assert_eq!(c.on_new_version, NewVersionPlan { plan: OnNewVersion::Canary, auto_advance: true });
        let c = ModelConfig::parse("[on_new_version]\nplan = \"canary\"\n").unwrap();
        assert_eq!(c.on_new_version, NewVersionPlan { plan: OnNewVersion::Canary, auto_advance: false });
        for bad in [
            "[on_new_version]\nplan = \"canary\"\nauto_advanec = true\n",
            "[on_new_version]\nauto_advance = true\n",
        ] {
            let e = ModelConfig::parse(bad).unwrap_err();
            assert!(e.to_string().contains("on_new_version must be one of"), "{bad}: {e}");
        }
        let e = ModelConfig::parse("[on_new_version]\nplan = \"shadow\"\nauto_advance = true\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "model.toml: on_new_version.auto_advance must be false unless the plan is \"canary\" (only a canary has steps to advance)"
        );
    }

    #[test]
    fn trigger_settings_parse_and_reject_typos() {
        let c = ModelConfig::parse("[triggers]\np99_sla_ms = 25.0\nmin_samples = 100\n").unwrap();
        assert_eq!(c.triggers.p99_sla_ms, Some(25.0));
        assert_eq!(c.triggers.min_samples, Some(100));
        assert!(ModelConfig::parse("[triggers]\np99_sla = 25.0\n").is_err());
    }

    #[test]
    fn analysis_settings_parse_and_are_checked() {
        let c = ModelConfig::parse(
            "[analysis]\nerror_margin = 0.05\nlatency_margin = 0.5\nkpi = \"revenue\"\nkpi_mde = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.analysis.error_margin, 0.05);
        assert_eq!(c.analysis.kpi.as_deref(), Some("revenue"));
        let e = ModelConfig::parse("[analysis]\nkpi = \"revenue\"\n").unwrap_err();
        assert!(e.to_string().contains("kpi_mde"), "{e}");
        let e = ModelConfig::parse("[analysis]\nalpha = 2.0\n").unwrap_err();
        assert_eq!(e.to_string(), "model.toml: analysis.alpha must be between 0 and 0.5, got 2");
        let e = ModelConfig::parse("[triggers]\nnan_inf_rate = -1.0\n").unwrap_err();
        assert!(e.to_string().contains("triggers.nan_inf_rate"), "{e}");
        let c = ModelConfig::parse("[triggers]\nwindow_interval_secs = 0.5\nwindow_intervals = 4\n").unwrap();
        assert_eq!(c.triggers.window(), (std::time::Duration::from_millis(500), 4));
        assert_eq!(ModelConfig::default().triggers.importance_levels(), (0.2, 0.4));
        let c = ModelConfig::parse("[triggers]\nimportance_warn = 0.1\nimportance_alert = 0.3\n").unwrap();
        assert_eq!(c.triggers.importance_levels(), (0.1, 0.3));
        let e = ModelConfig::parse("[triggers]\nimportance_warn = 0.5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "model.toml: triggers.importance_alert must be a shift at least importance_warn and at most 1, got 0.4"
        );
        let e = ModelConfig::parse("[triggers]\nimportance_alert = 1.5\n").unwrap_err();
        assert!(e.to_string().contains("triggers.importance_alert"), "{e}");
        let e = ModelConfig::parse("[triggers]\nimportance_warn = 0\n").unwrap_err();
        assert!(e.to_string().contains("triggers.importance_warn"), "{e}");
    }

    /// model.toml's `[triggers]` is refused exactly as the admin API refuses
    /// the same value in a rollout's overrides: one validation, one message.
    #[test]
    fn trigger_settings_are_refused_with_the_admin_apis_words() {
        let cases: [(&str, TriggerOverrides); 7] = [
            ("min_samples = 0", TriggerOverrides { min_samples: Some(0), ..Default::default() }),
            (
                "min_samples = 2000000000",
                TriggerOverrides { min_samples: Some(2_000_000_000), ..Default::default() },
            ),
            ("p99_sla_ms = 0.0", TriggerOverrides { p99_sla_ms: Some(0.0), ..Default::default() }),
            ("nan_inf_rate = 1.5", TriggerOverrides { nan_inf_rate: Some(1.5), ..Default::default() }),
            ("error_ratio = 0.5", TriggerOverrides { error_ratio: Some(0.5), ..Default::default() }),
            (
                "error_ratio = inf",
                TriggerOverrides { error_ratio: Some(f64::INFINITY), ..Default::default() },
            ),
            (
                "error_rate_floor = nan",
                TriggerOverrides { error_rate_floor: Some(f64::NAN), ..Default::default() },
            ),
        ];
        for (line, overrides) in cases {
            let admin = overrides.validate().unwrap_err().to_string();
            let file = ModelConfig::parse(&format!("[triggers]\n{line}\n")).unwrap_err().to_string();
            assert_eq!(file, format!("model.toml: {admin}"), "{line}");
        }
        assert_eq!(
            ModelConfig::parse("[triggers]\nmin_samples = 0\n").unwrap_err().to_string(),
            "model.toml: triggers.min_samples must be between 1 and 1000000000, got 0"
        );
        // And what one accepts the other accepts.
        let c = ModelConfig::parse("[triggers]\nmin_samples = 1\nerror_ratio = 1.0\np99_sla_ms = 0.001\n")
            .unwrap();
        assert_eq!(c.triggers.overrides().validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = ModelConfig::parse("queue_capcity = 4\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `queue_capcity`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_errors() {
        let e = ModelConfig::parse("queue_capacity = 0\n").unwrap_err();
        assert_eq!(e.to_string(), "model.toml: queue_capacity must be between 1 and 1000000, got 0");
    }
}
