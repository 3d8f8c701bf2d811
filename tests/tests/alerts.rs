//! The chart's alert rules, checked and unit-tested with Prometheus's own
//! promtool (Debian package `prometheus`, installed by `make test-deps`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let rules = modelgate_tests::root().join("helm/modelgate/rules");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&rules)
        .output()
        .expect("promtool is installed (make test-deps; Debian package prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let said = promtool(&["check", "rules", "modelgate-alerts.yaml"]);
    assert!(said.contains("SUCCESS: 15 rules found"), "{said}");
    let said = promtool(&["test", "rules", "modelgate-alerts.test.yaml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}
