//! Shadow (dark launch) mechanics: copies run on the shadow executor, their
//! outputs are compared and recorded, and a shadow never changes, fails or
//! holds up a client's reply.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_records_are_written_and_the_client_never_sees_the_shadow() {
    let repo = TestRepo::breast_cancer();
    let shadow_dir = repo.path().join("shadow-out");
    let server = start(&repo, |c| {
        c.shadow_dir = shadow_dir.clone();
        c.shadow_queue = 1000;
    })
    .await;
    // v2 is the champion; v1 shadows it.
    start_shadows(&server, &[1]).await;
    let mut c = client(&server).await;
    let g = golden(2);
    for (i, row) in g.rows.iter().enumerate() {
        let mut req = request("breast-cancer", std::slice::from_ref(row));
        req.request_id = format!("req-{i}");
        req.routing_key = format!("user-{i}");
        let resp = c.predict(req).await.unwrap().into_inner();
        assert_eq!(resp.version, 2, "the client is served by the champion");
        assert_eq!(resp.role, pb::Role::Champion as i32);
        assert_eq!(output(&resp, "label").data, modelgate_runtime::TensorData::Int64(vec![g.labels[i]]));
    }
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    wait_for("16 comparisons", || stats.get("breast-cancer", 1).is_some_and(|t| t.compared == 16)).await;
    let totals = stats.get("breast-cancer", 1).unwrap();
    assert_eq!(totals.dropped, 0);
    // v1 and v2 agree on every golden label.
    assert_eq!(totals.agreement_rate(), Some(1.0));
    assert!(totals.mean_abs_diff().unwrap() < 0.2);
    let replica = server.gateway.replica().to_string();
    server.stop().await.unwrap();

    // The sink was flushed on stop: one record per request, in files named
    // by the replica, no raw routing key.
    let mut lines = Vec::new();
    for f in std::fs::read_dir(&shadow_dir).unwrap() {
        let path = f.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with(&format!("records-{replica}-")), "{name}");
        lines.extend(std::fs::read_to_string(&path).unwrap().lines().map(str::to_string));
    }
    assert_eq!(lines.len(), 16);
    let rec: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(rec["kind"], "prediction");
    assert_eq!(rec["schema"], 1);
    assert_eq!(rec["model"], "breast-cancer");
    assert_eq!((&rec["champion_version"], &rec["champion_role"]), (&2.into(), &"champion".into()));
    assert_eq!((&rec["shadow_version"], &rec["shadow_role"]), (&1.into(), &"shadow".into()));
    assert_eq!(rec["replica"], replica.as_str());
    assert!(rec["request_id"].as_str().unwrap().starts_with("req-"));
    assert_eq!(rec["routing_key_hash"].as_str().unwrap().len(), 16);
    assert!(!lines.iter().any(|l| l.contains("user-")), "the raw routing key never reaches the sink");
    let outputs = rec["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    for o in outputs {
        // Both versions' values, not only how they differ.
        assert_eq!(
            o["champion"]["values"].as_array().unwrap().len() as u64,
            o["champion"]["count"].as_u64().unwrap()
        );
        assert_eq!(o["shadow"]["count"], o["champion"]["count"]);
        assert_eq!(o["champion"]["truncated"], false);
    }
    assert!(rec["inputs"].is_null(), "inputs are recorded only when model.toml asks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_nan_shadows_never_fail_or_alter_replies_and_drops_are_counted() {
    // The highest READY version at start is the champion: v10 (= v2's model).
    let repo = TestRepo::new();
    repo.add("breast-cancer", 3, SLOW).add("breast-cancer", 4, NAN).add("breast-cancer", 5, FAIL);
    repo.add("breast-cancer", 10, V2);
    let server = start(&repo, |c| {
        c.shadow_queue = 2;
        c.shadow_dir = repo.path().join("shadow-out");
    })
    .await;
    start_shadows(&server, &[3, 4, 5]).await;
    let champion = server.gateway.table().get("breast-cancer").unwrap().champion().unwrap().version;
    assert_eq!(champion, 10);
    let mut c = client(&server).await;
    let g = golden(2);
    let mut rows = g.rows.clone();
    rows[0][0] = -1.0; // makes the failing shadow fail; the champion does not care
    for _ in 0..10 {
        let resp = c.predict(request("breast-cancer", &rows)).await.unwrap().into_inner();
        assert_eq!(resp.version, champion as i64);
        // Exactly the champion's answers, whatever the shadows do.
        let mut want = g.labels.clone();
        want[0] = match output(&resp, "label").data {
            modelgate_runtime::TensorData::Int64(v) => v[0],
            _ => panic!("int64 labels"),
        };
        assert_eq!(output(&resp, "label").data, modelgate_runtime::TensorData::Int64(want));
    }
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    wait_for("slow shadow drops counted", || stats.get("breast-cancer", 3).is_some_and(|t| t.dropped > 0))
        .await;
    wait_for("nan shadow compared", || stats.get("breast-cancer", 4).is_some_and(|t| t.compared > 0)).await;
    wait_for("failing shadow errors", || stats.get("breast-cancer", 5).is_some_and(|t| t.errors > 0)).await;
    assert!(stats.get("breast-cancer", 4).unwrap().shadow_nan_inf > 0);
    // The champion's own queue saw only successes.
    let table = server.gateway.table();
    let modelgate_registry::VersionState::Ready(v) =
        &table.get("breast-cancer").unwrap().versions[&champion].state
    else {
        panic!("ready")
    };
    assert_eq!(v.queue.stats().failed.load(Relaxed), 0);
    server.stop().await.unwrap();
}

/// Scheduling policy (field 41 of /proc/<pid>/task/<tid>/stat) of every thread
/// of this process whose name starts with `prefix`.
fn thread_policies(prefix: &str) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        // The main thread carries the test binary's name (`shadow-<hash>`).
        if dir.file_name().unwrap().to_str() == Some(&std::process::id().to_string()) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
        let comm = comm.trim().to_string();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // The name may contain spaces: fields are counted after its ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        found.push((comm, policy));
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_threads_run_at_idle_priority_and_inference_threads_do_not() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| c.shadow_threads = 2).await;
    let shadow = thread_policies("shadow-");
    let names: Vec<&str> = shadow.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["shadow-0", "shadow-1", "shadow-compare", "shadow-rec-file"], "{shadow:?}");
    for (name, policy) in &shadow {
        assert_eq!(*policy, SCHED_IDLE, "{name} must only get CPU the critical path leaves");
    }
    let infer = thread_policies("infer-");
    assert!(!infer.is_empty());
    for (name, policy) in &infer {
        assert_eq!(*policy, SCHED_OTHER, "{name} serves clients at normal priority");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_cpu_budget_skips_copies_and_never_touches_replies() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.shadow_cpu_cores = Some(1e-6);
        c.shadow_queue = 1000;
    })
    .await;
    start_shadows(&server, &[1]).await;
    let mut c = client(&server).await;
    let g = golden(2);
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    let budget = std::sync::Arc::clone(server.gateway.shadow_cpu_budget().unwrap());
    let accounted = || stats.get("breast-cancer", 1).map_or(0, |t| t.compared + t.errors + t.dropped);
    // A millionth of a core: the first copy's charge (a few hundred µs of
    // CPU, which that budget earns in minutes) puts the budget far past its
    // burst, so every later copy is skipped. Admission is checked when a copy
    // is queued and the charge lands once it has run, so the first copy is
    // waited for before the rest are sent: how many copies slip in before
    // the first charge would otherwise depend on how long a SCHED_IDLE
    // thread waits for a core on a busy machine.
    let mut predict = async |i: usize| {
        let row = &g.rows[i % g.rows.len()];
        let resp = c.predict(request("breast-cancer", std::slice::from_ref(row))).await.unwrap().into_inner();
        assert_eq!(resp.version, 2);
        assert_eq!(
            output(&resp, "label").data,
            modelgate_runtime::TensorData::Int64(vec![g.labels[i % g.rows.len()]])
        );
    };
    predict(0).await;
    wait_for("the first copy compared", || stats.get("breast-cancer", 1).is_some_and(|t| t.compared == 1))
        .await;
    let sent = 200;
    for i in 1..sent {
        predict(i).await;
    }
    wait_for("every copy accounted for", || accounted() == sent as u64).await;
    let t = stats.get("breast-cancer", 1).unwrap();
    let counts = (t.compared, t.errors, t.dropped);
    assert_eq!(
        counts,
        (1, 0, sent as u64 - 1),
        "(compared, errors, dropped): the spent budget skips every later copy"
    );
    assert!(budget.used() > Duration::ZERO, "shadow work was charged");

    // The budget and what it has used are scraped.
    let (code, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("modelgate_shadow_cpu_budget_cores 1e-6")
            || body.contains("modelgate_shadow_cpu_budget_cores 0.000001"),
        "{body}"
    );
    let used: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("modelgate_shadow_cpu_seconds_total "))
        .expect("shadow CPU counter")
        .parse()
        .unwrap();
    assert!(used > 0.0);
    let dropped = body
        .lines()
        .find(|l| l.starts_with("modelgate_shadow_dropped_total{") && l.contains("version=\"1\""))
        .expect("drop counter");
    assert!(dropped.ends_with(&format!(" {}", t.dropped)), "{dropped} vs {counts:?}");
    server.stop().await.unwrap();
}

/// The shadow budget is a ceiling that follows the load: with every core
/// kept busy by normal-priority threads, the budget in effect falls towards
/// its floor (2% of the ceiling) and the gauge says so, while a gateway
/// started with `--shadow-budget-fixed` keeps its whole budget. (The way
/// back up, a quarter of the gap per 200 ms, is unit-tested in
/// modelgate-runtime's budget module: it needs an idle machine, which a
/// test sharing the machine with others cannot count on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_machine_shrinks_the_shadow_budget_unless_it_is_fixed() {
    let repo = TestRepo::breast_cancer();
    let following = start(&repo, |c| c.shadow_cpu_cores = Some(0.1)).await;
    let fixed = start(&repo, |c| {
        c.shadow_cpu_cores = Some(0.1);
        c.shadow_budget_fixed = true;
    })
    .await;
    let budget = std::sync::Arc::clone(following.gateway.shadow_cpu_budget().unwrap());
    let fixed_budget = std::sync::Arc::clone(fixed.gateway.shadow_cpu_budget().unwrap());
    assert_eq!(budget.scale(), 1.0, "the whole ceiling before any load");

    let spin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..2 * cores)
        .map(|_| {
            let spin = std::sync::Arc::clone(&spin);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while spin.load(Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(60);
    while budget.scale() >= 0.25 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scale = budget.scale();
    let (code, body) = http_get(following.metrics_addr.unwrap(), "/metrics").await;
    let fixed_scale = fixed_budget.scale();
    let (_, fixed_body) = http_get(fixed.metrics_addr.unwrap(), "/metrics").await;
    spin.store(false, Relaxed);
    for t in spinners {
        t.join().unwrap();
    }
    assert!(
        scale < 0.25,
        "every core busy for up to 60 s, the budget in effect is still {scale} of its ceiling"
    );
    assert_eq!(fixed_scale, 1.0, "--shadow-budget-fixed keeps the ceiling");
    assert_eq!(code, 200);
    let gauge = |body: &str, name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge(&body, "modelgate_shadow_cpu_budget_cores"), 0.1, "the ceiling is unchanged");
    let effective = gauge(&body, "modelgate_shadow_cpu_budget_effective_cores");
    assert!((0.1 * modelgate_runtime::budget::MIN_SCALE - 1e-9..0.025).contains(&effective), "{effective}");
    assert_eq!(gauge(&fixed_body, "modelgate_shadow_cpu_budget_effective_cores"), 0.1);
    following.stop().await.unwrap();
    fixed.stop().await.unwrap();
}

/// Shadows breast-cancer's champion to `versions` at 100% through the admin
/// API, as an operator does.
async fn start_shadows(server: &modelgate::RunningServer, versions: &[i64]) {
    let plan = pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
            versions: versions.to_vec(),
            fraction_percent: Some(100.0),
        })),
        reason: String::new(),
        triggers: None,
    };
    admin(server, None).await.start_rollout(plan).await.expect("the shadow starts");
}
