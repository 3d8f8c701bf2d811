//! `<repo>/<model>/model.toml`: per-model settings. Unknown keys are errors,
//! so a typo never silently falls back to a default.

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
    /// What to start, with its defaults, when a new version of this model is
    /// dropped into the repository while serving.
    pub on_new_version: OnNewVersion,
    /// Hard triggers that roll a candidate back by themselves.
    pub triggers: TriggerSettings,
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
    /// Requests a candidate's window needs before a trigger may fire.
    pub min_samples: Option<u64>,
    /// Pause the rollout when a soft trigger reaches ALERT (PSI ≥ 0.25).
    pub pause_on_alert: bool,
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

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            sessions: None,
            intra_op_threads: 1,
            inter_op_threads: 1,
            queue_capacity: 256,
            on_new_version: OnNewVersion::None,
            triggers: TriggerSettings::default(),
        }
    }
}

/// A model.toml that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("model.toml: {0}")]
    Parse(String),
    #[error("model.toml: {field} must be {expected}, got {got}")]
    Invalid { field: &'static str, expected: &'static str, got: usize },
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            OnNewVersion::Shadow
        );
        assert_eq!(
            ModelConfig::parse("on_new_version = \"blue_green\"\n").unwrap().on_new_version,
            OnNewVersion::BlueGreen
        );
        let e = ModelConfig::parse("on_new_version = \"yolo\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `yolo`"), "{e}");
    }

    #[test]
    fn trigger_settings_parse_and_reject_typos() {
        let c = ModelConfig::parse("[triggers]\np99_sla_ms = 25.0\nmin_samples = 100\n").unwrap();
        assert_eq!(c.triggers.p99_sla_ms, Some(25.0));
        assert_eq!(c.triggers.min_samples, Some(100));
        assert!(ModelConfig::parse("[triggers]\np99_sla = 25.0\n").is_err());
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
