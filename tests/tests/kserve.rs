//! KServe v2 / Open Inference Protocol against NVIDIA's real Python client,
//! `tritonclient[grpc]` from PyPI, in a venv this test makes once
//! (`.cache/venv-tritonclient`, from tests/python/requirements.txt).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::process::Command;

use modelgate_tests::*;

/// The venv's python, made (or remade when the requirements change) first.
fn venv_python() -> PathBuf {
    let root = root();
    let venv = root.join(".cache/venv-tritonclient");
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("requirements.installed");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success();
    assert!(ok, "python3 -m venv failed");
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&stamp, wanted).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let script = root().join("tests/python/kserve_client.py");
    let golden = root().join("models/golden/breast-cancer-2.json");
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(addr).arg(golden).output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Triton client's checks failed:\n{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["routed"]["version"], "2");
    assert_eq!(seen["routed"]["role"], "champion");
    assert_eq!(seen["server_extensions"][0], "model_repository");
    // Every mistake got a status naming what was wrong.
    let errors = seen["errors"].as_object().unwrap();
    assert_eq!(errors.len(), 10);
    assert!(errors["wrong_shape"][1].as_str().unwrap().contains("[16, 29]"));
    assert!(errors["raw_byte_length"][1].as_str().unwrap().contains("119 bytes, expected 120"));
    assert!(errors["unknown_output"][1].as_str().unwrap().contains("'nope'"));
    // ModelInfer went through the same gateway path: it is in the metrics.
    let (_, metrics) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(metrics.lines().any(|l| l.starts_with(
        "modelgate_requests_total{model=\"breast-cancer\",version=\"2\",role=\"champion\",code=\"INVALID_ARGUMENT\"}"
    )));
    server.stop().await.unwrap();
}
