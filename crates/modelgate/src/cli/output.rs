//! What the client commands print: `--json` documents, errors (as text or,
//! under `--json`, one JSON object on stderr) and exit statuses.
//!
//! Exit statuses, for scripts:
//! - 0: done (for `--wait`/`--watch`: the rollout was promoted or completed);
//! - 1: the command failed (the call was refused, the gateway unreachable…);
//! - 2: the command line is wrong (clap's own status);
//! - 3: the rollout waited for was rolled back;
//! - 4: the rollout waited for was aborted (or replaced by another);
//! - 5: `--wait-timeout` passed before the rollout ended.

use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::cli::predict::CallError;

/// Exit status of a command that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status when the rollout waited for was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 3;
/// Exit status when the rollout waited for was aborted or replaced.
pub const EXIT_ABORTED: u8 = 4;
/// Exit status when `--wait-timeout` passed first.
pub const EXIT_TIMED_OUT: u8 = 5;

/// An error that ends the command with a particular exit status (a rollout
/// that ended badly, a wait that timed out) rather than [`EXIT_FAILED`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Outcome {
    /// A short machine-readable name: `ROLLED_BACK`, `ABORTED`, `TIMED_OUT`.
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// The process's exit status.
    pub exit: u8,
}

/// Prints `v` as one line of JSON. Fields the API carries as JSON text
/// (`plan_json`, `numbers_json`, `event_json`) are printed as the objects
/// they hold, under their name without `_json` (`plan`, `numbers`, `event`),
/// so `jq .plan.steps` works without a second parse.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut doc = serde_json::to_value(v)?;
    expand_json_text(&mut doc);
    outln!("{doc}");
    Ok(())
}

/// Replaces every `"<name>_json": "<JSON text>"` member, at any depth, by
/// `"<name>": <the parsed value>` (`null` for empty text). Text that does
/// not parse is left as it was, under its own name.
fn expand_json_text(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(expand_json_text),
        Value::Object(members) => {
            let mut out = Map::with_capacity(members.len());
            for (key, mut value) in std::mem::take(members) {
                if let (Some(name), Value::String(text)) = (key.strip_suffix("_json"), &value) {
                    let parsed = if text.is_empty() { Ok(Value::Null) } else { serde_json::from_str(text) };
                    if let Ok(parsed) = parsed {
                        out.insert(name.to_string(), parsed);
                        continue;
                    }
                }
                expand_json_text(&mut value);
                out.insert(key, value);
            }
            *members = out;
        }
        _ => {}
    }
}

/// An error's message with its causes, each said once: transport errors
/// repeat their cause in their own text ("tcp connect error: tcp connect
/// error: Connection refused"), so a cause already said is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    if let Some(call) = e.downcast_ref::<CallError>() {
        return call.to_string();
    }
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if said.is_empty() || text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// A short machine-readable name for what went wrong: the gRPC status code
/// when the gateway refused the call, `UNAVAILABLE` when it could not be
/// reached, the [`Outcome`]'s code, else `FAILED`.
fn error_code(e: &anyhow::Error) -> String {
    if let Some(call) = e.downcast_ref::<CallError>() {
        return crate::cli::code_name(call.0.code()).to_string();
    }
    if let Some(outcome) = e.downcast_ref::<Outcome>() {
        return outcome.code.to_string();
    }
    if e.chain().any(|c| c.downcast_ref::<tonic::transport::Error>().is_some()) {
        return "UNAVAILABLE".to_string();
    }
    "FAILED".to_string()
}

/// Reports a command's error on stderr (`error: …`, or under `--json` one
/// object `{"code": …, "message": …}`) and returns its exit status.
pub fn report_error(e: &anyhow::Error, json: bool) -> ExitCode {
    let message = error_text(e);
    if json {
        let doc = serde_json::json!({ "code": error_code(e), "message": message });
        eprintln!("{doc}");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(e.downcast_ref::<Outcome>().map_or(EXIT_FAILED, |o| o.exit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_members_become_objects_at_any_depth() {
        let mut v = serde_json::json!({
            "plan_json": "{\"strategy\":\"canary\",\"steps\":[1,5]}",
            "events": [{ "numbers_json": "{\"llr\":7.1}", "event_json": "", "reason": "x" }],
            "odd_json": "not json",
        });
        expand_json_text(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "plan": { "strategy": "canary", "steps": [1, 5] },
                "events": [{ "numbers": { "llr": 7.1 }, "event": null, "reason": "x" }],
                "odd_json": "not json",
            })
        );
    }

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error: {0}")]
        struct Repeats(#[source] std::io::Error);
        let e = anyhow::Error::new(Repeats(io)).context("cannot connect to 127.0.0.1:1");
        assert_eq!(error_text(&e), "cannot connect to 127.0.0.1:1: tcp connect error: Connection refused");
    }

    #[test]
    fn a_refused_call_reports_its_grpc_code() {
        let e = anyhow::Error::new(CallError(tonic::Status::not_found("model 'x' is not loaded")));
        assert_eq!(error_code(&e), "NOT_FOUND");
        assert_eq!(error_text(&e), "NOT_FOUND: model 'x' is not loaded");
        let e =
            anyhow::Error::new(Outcome { code: "ROLLED_BACK", message: "m".into(), exit: EXIT_ROLLED_BACK });
        assert_eq!(error_code(&e), "ROLLED_BACK");
    }
}
