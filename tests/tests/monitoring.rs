//! The operator's monitoring, end to end: a fleet of two real `modelgate
//! serve` replicas (with etcd) scraped every second by a real Prometheus
//! that loads the chart's own rule file, a real Alertmanager routing to a
//! webhook receiver in the test, and the chart's Grafana dashboard, every
//! expression of which is evaluated against that Prometheus while rollouts
//! run.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::fleet::{Etcd, Replica, eventually};
use modelgate_tests::prometheus::{Alertmanager, Prometheus, Webhook};
use modelgate_tests::*;
use serde_json::Value;

const PATIENCE: u64 = 120;
const MODELS: [&str; 3] = ["breast-cancer", "second", "third"];

/// breast-cancer's v1 answers NaN; second and third hold two healthy
/// versions. v2 is each model's champion.
fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, NAN).add("breast-cancer", 2, V2);
    for model in ["second", "third"] {
        repo.add(model, 1, V1).add(model, 2, V2);
    }
    for model in MODELS {
        // An SLA for the latency panels to draw (never reached here).
        repo.config(model, "[triggers]\np99_sla_ms = 1000.0\n");
    }
    repo
}

fn canary(model: &str, candidate: i64) -> pb::StartRolloutRequest {
    let mut plan = canary_plan(candidate, 50, 1_000_000, false);
    plan.model = model.into();
    plan
}

/// `n` keyed requests for `model` to `r`, golden rows in turn.
async fn traffic(r: &Replica, model: &str, from: usize, n: usize) {
    let mut c = r.client().await;
    let g = golden(2);
    for k in from..from + n {
        let mut req = request(model, std::slice::from_ref(&g.rows[k % g.rows.len()]));
        req.routing_key = format!("{model}-{k}");
        c.predict(req).await.expect("requests keep succeeding");
    }
}

/// Waits for an alert named `name` about `model` v`version` to reach the
/// webhook firing, with its trigger label.
fn fires(webhook: &Webhook, name: &str, model: &str, version: &str, trigger: &str) {
    let alert = webhook.wait_for(PATIENCE, name, |a| {
        a["labels"]["alertname"] == name && a["labels"]["model"] == model && a["status"] == "firing"
    });
    assert_eq!(alert["labels"]["version"], version, "{alert:#}");
    assert_eq!(alert["labels"]["trigger"], trigger, "{alert:#}");
}

/// The dashboard as its generator (Grafana's SDK, in a pinned venv) makes it.
fn generated_dashboard() -> String {
    let python = modelgate_tests::python::venv("dashboard", "requirements-dashboard.txt");
    let mut cmd = std::process::Command::new(python);
    cmd.arg("make_dashboard.py").current_dir(root().join("helm/modelgate/dashboards"));
    let out = modelgate_tests::python::run_bounded(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "make_dashboard.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every PromQL expression of the dashboard (panel targets and
/// annotations), each with where it is.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push((format!("annotation {}", a["name"]), a["expr"].as_str().unwrap().to_string()));
    }
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push((
                format!("panel {} ({})", p["title"], t["legendFormat"]),
                t["expr"].as_str().unwrap().into(),
            ));
        }
    }
    exprs
}

/// A query variable: `label_values(selector, label)`.
struct Variable {
    name: String,
    selector: String,
    label: String,
}

fn variables(dashboard: &Value) -> Vec<Variable> {
    let list = dashboard["templating"]["list"].as_array().unwrap();
    list.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap();
            let (selector, label) = inner.rsplit_once(',').unwrap();
            Variable {
                name: v["name"].as_str().unwrap().into(),
                selector: selector.trim().into(),
                label: label.trim().into(),
            }
        })
        .collect()
}

/// The template variables as Grafana fills them in: the job, all three
/// models (a multi-value selection becomes a regex), the rate window.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$job", "modelgate")
        .replace("$model", &format!("({})", MODELS.join("|")));
    assert!(!out.contains('$'), "a variable the test does not fill in: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_reach_alertmanager_and_every_dashboard_query_has_data() {
    let began = Instant::now();
    let repo = repo();
    let etcd = Etcd::start();
    let dirs = tempfile::tempdir().unwrap();
    let url = etcd.url("monitoring-test");
    let replicas: Vec<Replica> =
        ["a", "b"].iter().map(|id| Replica::start(&repo, &url, id, &dirs.path().join(id))).collect();
    let (a, b) = (&replicas[0], &replicas[1]);
    eventually(PATIENCE, "both replicas on etcd, one leading", || async {
        let mut leaders = 0.0;
        for r in &replicas {
            if r.metric("modelgate_fleet_store_connected").await != Some(1.0) {
                return None;
            }
            leaders += r.metric("modelgate_fleet_leader").await.unwrap_or(0.0);
        }
        (leaders == 1.0).then_some(())
    })
    .await;

    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook);
    let rules = root().join("helm/modelgate/rules/modelgate-alerts.yaml");
    let prometheus = Prometheus::start(&[a.metrics, b.metrics], &[rules], Some(alertmanager.port));
    eventually(PATIENCE, "prometheus to scrape both replicas", || async {
        (prometheus.targets_up() == 2).then_some(())
    })
    .await;
    let loaded = prometheus.alert_rules();
    for name in ["ModelgateAutomaticRollback", "ModelgateManualRollback", "ModelgateFleetStoreUnreachable"] {
        assert!(loaded.iter().any(|n| n == name), "{name} not loaded: {loaded:?}\n{}", prometheus.log());
    }

    // 1. A NaN canary that the gateway rolls back by itself.
    let mut admin = a.admin().await;
    admin.start_rollout(canary("breast-cancer", 1)).await.unwrap();
    // The rollout's label sets exist at 0 before the first event, on every
    // replica: the rollback is an increase from 0 to Prometheus.
    eventually(PATIENCE, "the rollback counters at 0 in Prometheus", || async {
        (prometheus
            .query(
                r#"modelgate_rollbacks_total{model="breast-cancer",version="1",trigger="nan_inf_rate"} == 0"#,
            )
            .len()
            == 2)
            .then_some(())
    })
    .await;
    let mut sent = 0;
    while rollout_status(&mut admin, "breast-cancer").await.state != "rolled_back" {
        traffic(b, "breast-cancer", sent, 20).await;
        sent += 20;
        assert!(began.elapsed() < Duration::from_secs(600), "no rollback");
    }
    fires(&webhook, "ModelgateAutomaticRollback", "breast-cancer", "1", "nan_inf_rate");

    // 2. An operator's rollback.
    admin.start_rollout(canary("second", 1)).await.unwrap();
    traffic(a, "second", 0, 40).await;
    admin
        .rollback(pb::RolloutRequest {
            model: "second".into(),
            reason: "monitoring test".into(),
            expected_stage: None,
        })
        .await
        .unwrap();
    fires(&webhook, "ModelgateManualRollback", "second", "1", "manual");

    // 3. Rollouts running while a person watches the dashboard: a canary of
    // second and a shadow of third (v1 against v2 shifts its predictions:
    // a PSI alert).
    admin.start_rollout(canary("second", 1)).await.unwrap();
    let shadow = pb::StartRolloutRequest {
        model: "third".into(),
        plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
            versions: vec![1],
            fraction_percent: None,
        })),
        ..Default::default()
    };
    admin.start_rollout(shadow).await.unwrap();
    let mut from = 1000;
    eventually(PATIENCE, "a PSI alert on third's shadow, in Prometheus", || {
        let start = from;
        from += 100;
        let prometheus = &prometheus;
        async move {
            for r in [a, b] {
                traffic(r, "second", start, 50).await;
                traffic(r, "third", start, 50).await;
            }
            (!prometheus.query(r#"modelgate_alerts_total{model="third",trigger="psi"} > 0"#).is_empty())
                .then_some(())
        }
    })
    .await;

    let generated = generated_dashboard();
    let committed_path = root().join("helm/modelgate/dashboards/modelgate-rollout.json");
    let committed = std::fs::read_to_string(&committed_path).unwrap();
    assert_eq!(
        committed.trim_end(),
        generated.trim_end(),
        "{} is not what make_dashboard.py makes: run it again",
        committed_path.display()
    );
    let dashboard: Value = serde_json::from_str(&committed).unwrap();
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 20, "{exprs:#?}");
    for Variable { name, selector, label } in variables(&dashboard) {
        let values = prometheus.query(&format!("group by ({label}) ({})", substitute(&selector)));
        assert!(!values.is_empty(), "variable {name}: no values of {label} in {selector}");
    }
    for (what, expr) in &exprs {
        let promql = substitute(expr);
        eventually(PATIENCE, &format!("{what} to have data: {promql}"), || {
            let secs = began.elapsed().as_secs() + 10;
            let found = prometheus.query_range(&promql, secs);
            async move { (!found.is_empty()).then_some(()) }
        })
        .await;
    }
    drop(etcd);
}
