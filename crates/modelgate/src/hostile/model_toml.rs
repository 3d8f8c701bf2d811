//! Target `model_toml`: a model.toml's text through the repository's parser
//! and validation.

use modelgate_registry::ModelConfig;

/// Target `model_toml`: a model.toml's text as the repository parses and
/// validates it.
pub fn fuzz_model_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelConfig::parse(text) {
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()));
            let (interval, intervals) = config.triggers.window();
            assert!(!interval.is_zero() && intervals >= 1, "a valid window is not empty");
            let settings = crate::control::analysis::Settings::of(&config);
            assert!(settings.alpha > 0.0 && settings.alpha < 1.0);
            assert!(config.max_batch >= 1 && config.queue_capacity >= 1);
            assert_eq!(ModelConfig::parse(text).as_ref(), Ok(&config), "parsing is deterministic");
        }
        Err(e) => assert!(e.to_string().starts_with("model.toml: "), "{e}"),
    }
}
