//! The Helm chart rendered by the real Helm engine (`helm-python-sdk`: Helm
//! v4's Go SDK in a PyPI wheel) for the values sets in helm/modelgate/ci/,
//! linted, every object validated (tests/python/helm_render.py: Kubernetes
//! kinds with kubernetes-validate in strict mode against its newest two
//! Kubernetes versions, the Prometheus Operator's kinds against models of
//! its CRD schemas), and the objects' key fields checked here.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use modelgate_tests::{python, root};
use serde_json::{Value, json};

/// Every case rendered once per test run, shared by the tests below. nextest
/// runs each test in its own process, so the first one renders under a file
/// lock and leaves the result for the others of the same run
/// (`NEXTEST_RUN_ID`); a later run renders again.
fn rendered() -> &'static Value {
    static OUT: OnceLock<Value> = OnceLock::new();
    OUT.get_or_init(|| {
        let Ok(run) = std::env::var("NEXTEST_RUN_ID") else { return render() };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let lock = std::fs::File::create(dir.join("helm-render.lock")).unwrap();
        lock.lock().unwrap();
        let saved = dir.join(format!("helm-render-{run}.json"));
        if let Ok(text) = std::fs::read(&saved) {
            return serde_json::from_slice(&text).unwrap();
        }
        // Earlier runs' results are of no further use.
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("helm-render-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let out = render();
        std::fs::write(&saved, out.to_string()).unwrap();
        out
    })
}

/// One Python process renders every case: the engine's start-up is the slow
/// part.
fn render() -> Value {
    let python = python::venv("helm", "requirements-helm.txt");
    let file = |name: &str| json!({ "name": name, "values_files": [format!("ci/{name}-values.yaml")] });
    let set = |name: &str, values: Value| json!({ "name": name, "set": values });
    let cases = json!([
        file("default"),
        file("fleet"),
        file("hpa"),
        file("tls-monitoring"),
        set("tls-server-only", json!({ "tls": { "secretName": "modelgate-tls" } })),
        set("client-ca-without-cert", json!({ "tls": { "clientCASecret": "clients-ca" } })),
        set("admin-client-ca-without-cert", json!({ "admin": { "tls": { "clientCASecret": "ops-ca" } } })),
        set("replicas-without-etcd", json!({ "replicaCount": 2 })),
        // Proves the validators bite: both objects are wrong on purpose.
        set(
            "invalid-on-purpose",
            json!({
                "podSecurityContext": { "runAsUser": "nobody" },
                "monitoring": { "serviceMonitor": { "enabled": true, "interval": "every 15 seconds" } }
            })
        ),
    ]);
    let cases_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cases_file.path(), cases.to_string()).unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/python/helm_render.py"))
        .arg(root().join("helm/modelgate"))
        .stdin(std::fs::File::open(cases_file.path()).unwrap());
    let out = python::run_bounded(cmd, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm_render.py failed ({}):\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn case(name: &str) -> &'static Value {
    rendered()["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()
}

/// A case that must render, lint clean and validate; its objects.
fn objects(name: &str) -> Vec<&'static Value> {
    let c = case(name);
    assert!(c.get("error").is_none(), "{name} did not render: {}", c["error"]);
    assert_eq!(c["invalid"], json!([]), "{name}: objects that do not validate");
    assert_eq!(c["lint"], json!([]), "{name}: helm lint --strict findings");
    c["objects"].as_array().unwrap().iter().map(|o| &o["object"]).collect()
}

/// The kinds rendered, but ConfigMaps: the Grafana dashboards' ConfigMap
/// is checked beside its own template (it is still validated above).
fn kinds(objects: &[&Value]) -> Vec<String> {
    objects.iter().map(|o| o["kind"].as_str().unwrap().to_string()).filter(|k| k != "ConfigMap").collect()
}

fn one<'a>(objects: &[&'a Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn render_error(name: &str) -> String {
    let c = case(name);
    c["error"].as_str().unwrap_or_else(|| panic!("{name} rendered but must fail")).to_string()
}

struct Pod<'a> {
    spec: &'a Value,
    container: &'a Value,
}

impl<'a> Pod<'a> {
    fn of(objects: &[&'a Value]) -> Self {
        let spec = &one(objects, "Deployment")["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        Self { spec, container: &containers[0] }
    }

    fn args(&self) -> Vec<&'a str> {
        self.container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect()
    }

    /// The value of `--flag=value`, if given.
    fn flag(&self, flag: &str) -> Option<&'a str> {
        let prefix = format!("{flag}=");
        self.args().into_iter().find_map(|a| a.strip_prefix(prefix.as_str()))
    }

    fn mount(&self, volume: &str) -> &'a Value {
        let mounts = self.container["volumeMounts"].as_array().unwrap();
        mounts.iter().find(|m| m["name"] == volume).unwrap_or_else(|| panic!("no volumeMount {volume}"))
    }

    fn volume(&self, volume: &str) -> &'a Value {
        let volumes = self.spec["volumes"].as_array().unwrap();
        volumes.iter().find(|v| v["name"] == volume).unwrap_or_else(|| panic!("no volume {volume}"))
    }

    fn env(&self, name: &str) -> Option<&'a Value> {
        self.container["env"].as_array().unwrap().iter().find(|e| e["name"] == name)
    }

    /// A secret volume mounted read-only at `dir`, holding `secret`.
    fn assert_secret_mount(&self, volume: &str, secret: &str, dir: &str) {
        assert_eq!(self.volume(volume)["secret"]["secretName"], secret, "{volume}");
        assert_eq!(self.mount(volume)["mountPath"], dir, "{volume}");
        assert_eq!(self.mount(volume)["readOnly"], true, "{volume}");
    }
}

#[test]
fn every_values_set_renders_lints_and_validates_against_current_kubernetes() {
    let out = rendered();
    let versions = out["kube_versions"].as_array().unwrap();
    assert!(versions.len() >= 2, "validated against {versions:?}");
    assert!(out["helm_sdk"].as_str().unwrap().starts_with("v4."), "{}", out["helm_sdk"]);
    for name in ["default", "fleet", "hpa", "tls-monitoring", "tls-server-only"] {
        let objects = objects(name);
        assert!(kinds(&objects).contains(&"Deployment".to_string()), "{name}: {:?}", kinds(&objects));
    }
}

#[test]
fn validation_catches_a_wrong_kubernetes_field_and_a_wrong_crd_field() {
    let c = case("invalid-on-purpose");
    let invalid: Vec<&str> = c["invalid"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for version in rendered()["kube_versions"].as_array().unwrap() {
        let wanted = format!("Deployment/mg-modelgate against Kubernetes {}", version.as_str().unwrap());
        assert!(
            invalid.iter().any(|m| m.starts_with(&wanted) && m.contains("securityContext.runAsUser")),
            "{invalid:#?}"
        );
    }
    assert!(
        invalid.iter().any(|m| m.starts_with("ServiceMonitor/mg-modelgate") && m.contains("interval")),
        "{invalid:#?}"
    );
}

#[test]
fn default_serves_the_model_mount_with_the_state_dir_plaintext_and_non_root() {
    let objects = objects("default");
    assert_eq!(kinds(&objects), ["Deployment", "Service"]);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = Pod::of(&objects);
    assert_eq!(pod.args()[0], "serve");
    assert_eq!(pod.flag("--models"), pod.mount("models")["mountPath"].as_str());
    assert_eq!(pod.flag("--models"), Some("/models"));
    assert_eq!(pod.volume("models")["persistentVolumeClaim"]["claimName"], "modelgate-models");
    assert_eq!(pod.flag("--state-dir"), pod.mount("state")["mountPath"].as_str());
    assert_eq!(pod.flag("--state-dir"), Some("/var/lib/modelgate"));
    assert_eq!(pod.flag("--listen"), Some("0.0.0.0:50051"));
    assert_eq!(pod.flag("--metrics-listen"), Some("0.0.0.0:9464"));
    // No token and no mutual TLS: the admin RPC stays on the pod's loopback.
    assert_eq!(pod.flag("--admin-listen"), Some("127.0.0.1:50052"));
    assert_eq!(pod.flag("--state"), None);
    assert!(
        !pod.args().iter().any(|a| a.starts_with("--tls") || a.starts_with("--etcd")),
        "{:?}",
        pod.args()
    );
    let ports = &pod.container["ports"];
    assert_eq!(
        *ports,
        json!([
            { "name": "grpc", "containerPort": 50051 },
            { "name": "metrics", "containerPort": 9464 },
            { "name": "admin", "containerPort": 50052 }
        ])
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(pod.container[probe]["grpc"]["port"], 50051, "{probe}");
    }
    assert_eq!(
        pod.env("MODELGATE_REPLICA_ID").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(pod.env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none());
    // Non-root as the image's user, on the pod and the container.
    for ctx in [&pod.spec["securityContext"], &pod.container["securityContext"]] {
        assert_eq!(ctx["runAsNonRoot"], true);
        assert_eq!(ctx["runAsUser"], 65532);
        assert_eq!(ctx["runAsGroup"], 65532);
    }
    assert_eq!(pod.spec["securityContext"]["fsGroup"], 65532);
    assert_eq!(pod.container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod.container["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(
        pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap()
            > pod.flag("--drain-seconds").unwrap().parse().unwrap()
    );

    let service = one(&objects, "Service");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(service["spec"]["selector"], *selector);
    assert_eq!(
        service["spec"]["ports"],
        json!([
            { "name": "grpc", "port": 50051, "targetPort": "grpc", "appProtocol": "grpc" },
            { "name": "metrics", "port": 9464, "targetPort": "metrics" }
        ])
    );
    let notes = case("default")["notes"].as_str().unwrap();
    assert!(notes.contains("grpcurl -plaintext localhost:50051 list"), "{notes}");
}

#[test]
fn fleet_shares_state_in_secured_etcd_with_a_disruption_budget() {
    let objects = objects("fleet");
    assert_eq!(kinds(&objects), ["Deployment", "PodDisruptionBudget", "Service", "Service"]);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = Pod::of(&objects);
    assert_eq!(
        pod.flag("--state"),
        Some("etcd://etcd-0.etcd:2379,etcd-1.etcd:2379,etcd-2.etcd:2379/modelgate/mg")
    );
    assert_eq!(pod.flag("--etcd-audit-keep"), Some("50000"));
    assert_eq!(pod.flag("--etcd-ca"), Some("/etc/modelgate/etcd-tls/ca.crt"));
    assert_eq!(pod.flag("--etcd-cert"), Some("/etc/modelgate/etcd-tls/tls.crt"));
    assert_eq!(pod.flag("--etcd-key"), Some("/etc/modelgate/etcd-tls/tls.key"));
    assert_eq!(pod.flag("--etcd-user"), Some("modelgate"));
    assert_eq!(pod.flag("--etcd-password-file"), Some("/etc/modelgate/etcd-password/password"));
    pod.assert_secret_mount("etcd-tls", "modelgate-etcd-tls", "/etc/modelgate/etcd-tls");
    pod.assert_secret_mount("etcd-password", "modelgate-etcd-password", "/etc/modelgate/etcd-password");
    // The local copy of the fleet state and the shadow records still need it.
    assert_eq!(pod.flag("--state-dir"), pod.mount("state")["mountPath"].as_str());
    // The token guards the admin RPC, so it leaves loopback, with a Service.
    assert_eq!(pod.flag("--admin-listen"), Some("0.0.0.0:50052"));
    let token = &pod.env("MODELGATE_ADMIN_TOKEN").unwrap()["valueFrom"]["secretKeyRef"];
    assert_eq!(*token, json!({ "name": "modelgate-admin", "key": "token" }));
    let admin =
        objects.iter().find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "mg-modelgate-admin");
    assert_eq!(admin.unwrap()["spec"]["ports"][0]["targetPort"], "admin");

    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
    let notes = case("fleet")["notes"].as_str().unwrap();
    assert!(notes.contains("Fleet mode: every replica shares rollout state in etcd://"), "{notes}");
}

#[test]
fn hpa_owns_the_replica_count_of_a_fleet() {
    let objects = objects("hpa");
    let deployment = one(&objects, "Deployment");
    assert!(deployment["spec"].get("replicas").is_none(), "the HPA owns replicas: {}", deployment["spec"]);
    let hpa = one(&objects, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"] })
    );
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    let metric = &hpa["spec"]["metrics"][0]["resource"];
    assert_eq!(metric["name"], "cpu");
    assert_eq!(metric["target"], json!({ "type": "Utilization", "averageUtilization": 60 }));
    assert_eq!(Pod::of(&objects).flag("--state"), Some("etcd://etcd.modelgate-system:2379/fleets/prod"));
    assert_eq!(one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
}

#[test]
fn tls_monitoring_and_otlp_mount_the_secrets_and_carry_the_alert_rules() {
    let objects = objects("tls-monitoring");
    let pod = Pod::of(&objects);
    assert_eq!(pod.flag("--tls-cert"), Some("/etc/modelgate/tls/tls.crt"));
    assert_eq!(pod.flag("--tls-key"), Some("/etc/modelgate/tls/tls.key"));
    assert_eq!(pod.flag("--tls-client-ca"), Some("/etc/modelgate/client-ca/ca.crt"));
    assert_eq!(pod.flag("--admin-tls-cert"), Some("/etc/modelgate/admin-tls/tls.crt"));
    assert_eq!(pod.flag("--admin-tls-key"), Some("/etc/modelgate/admin-tls/tls.key"));
    assert_eq!(pod.flag("--admin-client-ca"), Some("/etc/modelgate/admin-client-ca/ca.crt"));
    pod.assert_secret_mount("tls", "modelgate-tls", "/etc/modelgate/tls");
    pod.assert_secret_mount("client-ca", "modelgate-clients-ca", "/etc/modelgate/client-ca");
    pod.assert_secret_mount("admin-tls", "modelgate-admin-tls", "/etc/modelgate/admin-tls");
    pod.assert_secret_mount("admin-client-ca", "modelgate-operators-ca", "/etc/modelgate/admin-client-ca");
    // Mutual TLS guards the admin RPC without a token.
    assert_eq!(pod.flag("--admin-listen"), Some("0.0.0.0:50052"));
    // The kubelet's gRPC probe cannot speak TLS: TCP probes on the port.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(pod.container[probe]["tcpSocket"]["port"], 50051, "{probe}");
        assert!(pod.container[probe].get("grpc").is_none(), "{probe}");
    }
    let env = |name: &str| pod.env(name).unwrap_or_else(|| panic!("no env {name}"))["value"].clone();
    assert_eq!(env("OTEL_EXPORTER_OTLP_ENDPOINT"), "http://otel-collector.observability:4317");
    assert_eq!(env("OTEL_TRACES_SAMPLER"), "parentbased_traceidratio");
    assert_eq!(env("OTEL_TRACES_SAMPLER_ARG"), "0.25");
    assert_eq!(env("OTEL_RESOURCE_ATTRIBUTES"), "deployment.environment=ci");
    assert_eq!(env("OTEL_SERVICE_NAME"), "mg-modelgate");

    let service =
        objects.iter().find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "mg-modelgate").unwrap();
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let service_labels = service["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(service_labels.get(k), Some(v), "the ServiceMonitor must select the Service");
    }
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{ "port": "metrics", "path": "/metrics", "interval": "30s" }])
    );
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "metrics"));

    let rule = one(&objects, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let rules = &rendered()["alert_rules"];
    assert!(!rules["groups"].as_array().unwrap().is_empty());
    assert_eq!(rule["spec"], *rules, "the PrometheusRule must carry rules/modelgate-alerts.yaml unchanged");

    // The dashboard, for Grafana's sidecar: its label, the folder annotation,
    // and the committed JSON unchanged.
    let dashboards = one(&objects, "ConfigMap");
    assert_eq!(dashboards["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboards["metadata"]["annotations"]["grafana_folder"], "modelgate");
    let shipped: Value =
        serde_json::from_str(dashboards["data"]["modelgate-rollout.json"].as_str().unwrap()).unwrap();
    let committed =
        std::fs::read_to_string(root().join("helm/modelgate/dashboards/modelgate-rollout.json")).unwrap();
    assert_eq!(shipped, serde_json::from_str::<Value>(&committed).unwrap());
    assert!(!kinds(&self::objects("default")).contains(&"ConfigMap".to_string()), "no dashboard by default");

    let notes = case("tls-monitoring")["notes"].as_str().unwrap();
    assert!(!notes.contains("-plaintext"), "{notes}");
    assert!(notes.contains("grpcurl -cacert ca.crt -cert me.crt -key me.key"), "{notes}");
    assert!(notes.contains("--admin-addr https://localhost:50052"), "{notes}");
}

#[test]
fn notes_never_say_plaintext_with_tls_on() {
    let objects = objects("tls-server-only");
    let pod = Pod::of(&objects);
    assert_eq!(pod.flag("--tls-cert"), Some("/etc/modelgate/tls/tls.crt"));
    assert_eq!(pod.flag("--tls-client-ca"), None);
    let notes = case("tls-server-only")["notes"].as_str().unwrap();
    assert!(!notes.contains("-plaintext"), "{notes}");
    assert!(notes.contains("grpcurl -cacert ca.crt -servername"), "{notes}");
}

#[test]
fn values_that_cannot_work_fail_the_render_with_what_is_missing() {
    let err = render_error("client-ca-without-cert");
    assert!(err.contains("tls.clientCASecret (mutual TLS) needs tls.secretName"), "{err}");
    let err = render_error("admin-client-ca-without-cert");
    assert!(err.contains("admin.tls.clientCASecret (mutual TLS) needs admin.tls.secretName"), "{err}");
    let err = render_error("replicas-without-etcd");
    assert!(err.contains("needs fleet.etcd.endpoints"), "{err}");
}
