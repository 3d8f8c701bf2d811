//! The Helm chart rendered by the real Helm engine (`helm-python-sdk`: Helm
//! v4's Go SDK in a PyPI wheel) for the values sets in helm/modelgate/ci/,
//! linted, every object validated (tests/python/helm_render.py: Kubernetes
//! kinds with kubernetes-validate in strict mode against its newest two
//! Kubernetes versions, the Prometheus Operator's kinds against models of
//! its CRD schemas), and the objects' key fields checked here. The record
//! sinks' wiring is also run: the gateway binary, started with exactly the
//! rendered container's args and env (`LocalPod`), writes to a real Kafka
//! broker and a real S3 server.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::kafka::Broker;
use modelgate_tests::process::ServeProcess;
use modelgate_tests::s3::S3Server;
use modelgate_tests::{TestRepo, golden, python, request, root, shadow_plan};
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
    let file = |name: &str| json!({ "name": name, "values_files": [format!("ci/{name}-values.yaml")] });
    let set = |name: &str, values: Value| json!({ "name": name, "set": values });
    let cases = json!([
        file("default"),
        file("fleet"),
        file("hpa"),
        file("tls-monitoring"),
        file("records"),
        set("tls-server-only", json!({ "tls": { "secretName": "modelgate-tls" } })),
        set("client-ca-without-cert", json!({ "tls": { "clientCASecret": "clients-ca" } })),
        set("admin-client-ca-without-cert", json!({ "admin": { "tls": { "clientCASecret": "ops-ca" } } })),
        set("replicas-without-etcd", json!({ "replicaCount": 2 })),
        set("records-nowhere", json!({ "records": { "file": { "enabled": false } } })),
        set("kafka-without-brokers", json!({ "records": { "kafka": { "enabled": true } } })),
        set(
            "sasl-without-password-secret",
            json!({ "records": { "kafka": {
                "enabled": true, "brokers": ["kafka:9092"],
                "sasl": { "mechanism": "PLAIN", "username": "modelgate" }
            } } })
        ),
        set(
            "parquet-credentials-of-another-provider",
            json!({ "records": { "parquet": {
                "enabled": true, "url": "gs://lake/shadow",
                "credentials": { "secretName": "lake", "env": { "AWS_ACCESS_KEY_ID": "id" } }
            } } })
        ),
        set(
            "parquet-region-on-gcs",
            json!({ "records": { "parquet": { "enabled": true, "url": "gs://lake/shadow", "region": "eu" } } })
        ),
        set(
            "parquet-azure-endpoint",
            json!({ "records": { "parquet": {
                "enabled": true, "url": "az://lake/shadow",
                "endpoint": "http://azurite.storage:10000/devstoreaccount1", "allowHttp": true
            } } })
        ),
        // Proves the validators bite: both objects are wrong on purpose.
        set(
            "invalid-on-purpose",
            json!({
                "podSecurityContext": { "runAsUser": "nobody" },
                "monitoring": { "serviceMonitor": { "enabled": true, "interval": "every 15 seconds" } }
            })
        ),
    ]);
    render_cases(&cases)
}

/// Renders `cases` (tests/python/helm_render.py's input) in one Python process.
fn render_cases(cases: &Value) -> Value {
    let python = python::venv("helm", "requirements-helm.txt");
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
    objects_of(case(name))
}

fn objects_of(c: &Value) -> Vec<&Value> {
    let name = &c["name"];
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
    for name in ["default", "fleet", "hpa", "tls-monitoring", "tls-server-only", "records"] {
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
    let err = render_error("records-nowhere");
    assert!(err.contains("records.file.enabled: false needs records.kafka or records.parquet"), "{err}");
    let err = render_error("kafka-without-brokers");
    assert!(err.contains("records.kafka.enabled needs records.kafka.brokers"), "{err}");
    let err = render_error("sasl-without-password-secret");
    assert!(
        err.contains("records.kafka.sasl.mechanism needs records.kafka.sasl.passwordSecret.name"),
        "{err}"
    );
    let err = render_error("parquet-credentials-of-another-provider");
    assert!(err.contains("AWS_ACCESS_KEY_ID is not read for gs://lake/shadow"), "{err}");
    let err = render_error("parquet-region-on-gcs");
    assert!(err.contains("records.parquet.region is for s3:// URLs, not gs://lake/shadow"), "{err}");
}

#[test]
fn an_azure_or_gcs_endpoint_goes_into_the_parquet_sink_url() {
    let pod = Pod::of(&objects("parquet-azure-endpoint"));
    let records: Vec<&str> = pod.args().into_iter().filter_map(|a| a.strip_prefix("--records=")).collect();
    assert_eq!(
        records[1],
        "az://lake/shadow?max_bytes=67108864&max_open=5m&max_rows=100000&timeout=30s\
         &endpoint=http%3A%2F%2Fazurite.storage%3A10000%2Fdevstoreaccount1&allow_http=true"
    );
}

#[test]
fn records_go_to_every_sink_with_secrets_only_through_secret_refs() {
    let objects = objects("records");
    let pod = Pod::of(&objects);
    let records: Vec<&str> = pod.args().into_iter().filter_map(|a| a.strip_prefix("--records=")).collect();
    assert_eq!(
        records,
        [
            "file:///var/lib/modelgate/shadow",
            "kafka://kafka-0.kafka:9093,kafka-1.kafka:9093/shadow-records?compression=zstd&batch.size=1000000&linger.ms=50",
            "s3://ml-lake/shadow/modelgate?max_bytes=67108864&max_open=10m&max_rows=50000&timeout=30s&region=eu-west-1",
        ]
    );
    assert_eq!(pod.flag("--records-queue"), Some("4096"));
    assert_eq!(pod.flag("--kafka-security-protocol"), Some("sasl_ssl"));
    assert_eq!(pod.flag("--kafka-ssl-ca"), Some("/etc/modelgate/kafka-tls/ca.crt"));
    assert_eq!(pod.flag("--kafka-ssl-cert"), Some("/etc/modelgate/kafka-tls/tls.crt"));
    assert_eq!(pod.flag("--kafka-ssl-key"), Some("/etc/modelgate/kafka-tls/tls.key"));
    assert_eq!(pod.flag("--kafka-sasl-mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(pod.flag("--kafka-sasl-username"), Some("modelgate"));
    pod.assert_secret_mount("kafka-tls", "modelgate-kafka-tls", "/etc/modelgate/kafka-tls");
    // The file sink's directory is on the state volume.
    assert!(records[0].ends_with(&format!("{}/shadow", pod.mount("state")["mountPath"].as_str().unwrap())));
    // The replica id in every record is the pod's name (downward API).
    assert_eq!(
        pod.env("MODELGATE_REPLICA_ID").unwrap()["valueFrom"],
        json!({ "fieldRef": { "fieldPath": "metadata.name" } })
    );
    // Every secret reaches the container through a secretKeyRef, never as a
    // literal value.
    for (name, secret, key) in [
        ("MODELGATE_KAFKA_SASL_PASSWORD", "modelgate-kafka-user", "password"),
        ("AWS_ACCESS_KEY_ID", "modelgate-s3", "access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "modelgate-s3", "secret-access-key"),
    ] {
        let env = pod.env(name).unwrap_or_else(|| panic!("no env {name}"));
        assert_eq!(
            *env,
            json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
        );
    }
    // Nothing that looks like a credential in the args or any ConfigMap.
    let configmaps: Vec<String> =
        objects.iter().filter(|o| o["kind"] == "ConfigMap").map(|o| o.to_string()).collect();
    for text in pod.args().into_iter().map(str::to_string).chain(configmaps) {
        let lower = text.to_ascii_lowercase();
        for word in ["password", "secret", "aws_", "sasl.password"] {
            assert!(!lower.contains(word), "{word} in {text}");
        }
    }
    // The default keeps today's file sink on the state volume and nothing else.
    let default = Pod::of(&self::objects("default"));
    let default_records: Vec<&str> =
        default.args().into_iter().filter_map(|a| a.strip_prefix("--records=")).collect();
    assert_eq!(default_records, ["file:///var/lib/modelgate/shadow"]);
    assert!(!default.args().iter().any(|a| a.starts_with("--kafka")), "{:?}", default.args());
    assert!(default.env("MODELGATE_KAFKA_SASL_PASSWORD").is_none());
}

/// Secrets the test plays the API server for: secret name → key → value.
type Secrets = HashMap<&'static str, HashMap<&'static str, String>>;

/// The rendered pod as a kubelet would run it, on this machine: every
/// volume a local folder (secret volumes filled from `secrets`), the
/// container's args with the mount paths mapped to those folders and its
/// listeners on loopback ephemeral ports (the pod's own network is not
/// ours), and its env with the downward API and secretKeyRefs resolved.
struct LocalPod {
    args: Vec<String>,
    env: Vec<(String, String)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl LocalPod {
    fn of(pod: &Pod, pod_name: &str, volumes: &HashMap<&str, PathBuf>, secrets: &Secrets) -> Self {
        let mut dirs = Vec::new();
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in pod.container["volumeMounts"].as_array().unwrap() {
            let name = mount["name"].as_str().unwrap();
            let volume = pod.volume(name);
            let local = if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let data =
                    secrets.get(secret).unwrap_or_else(|| panic!("the test provides no secret {secret}"));
                let dir = tempfile::tempdir().unwrap();
                for (key, value) in data {
                    std::fs::write(dir.path().join(key), value).unwrap();
                }
                let path = dir.path().to_path_buf();
                dirs.push(dir);
                path
            } else {
                volumes.get(name).unwrap_or_else(|| panic!("the test maps no volume {name}")).clone()
            };
            mounts.push((mount["mountPath"].as_str().unwrap().to_string(), local));
        }
        // Longest first: a mount inside another one wins.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let args = pod
            .args()
            .into_iter()
            .map(|arg| {
                assert!(!arg.contains("$("), "no kubelet variable expansion here: {arg}");
                for flag in ["--listen", "--metrics-listen", "--admin-listen"] {
                    if arg.starts_with(&format!("{flag}=")) {
                        return format!("{flag}=127.0.0.1:0");
                    }
                }
                mounts.iter().fold(arg.to_string(), |arg, (path, local)| map_path(&arg, path, local))
            })
            .collect();
        let env = pod.container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                if let Some(value) = e["value"].as_str() {
                    return (name, value.to_string());
                }
                let from = &e["valueFrom"];
                if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
                    assert_eq!(field, "metadata.name", "{name}: only the pod name is resolved here");
                    return (name, pod_name.to_string());
                }
                let secret = from["secretKeyRef"]["name"].as_str().unwrap_or_else(|| panic!("{name}: {e}"));
                let key = from["secretKeyRef"]["key"].as_str().unwrap();
                let value = secrets
                    .get(secret)
                    .and_then(|s| s.get(key))
                    .unwrap_or_else(|| panic!("{name}: the test provides no secret {secret} key {key}"));
                (name, value.clone())
            })
            .collect();
        Self { args, env, _dirs: dirs }
    }

    /// `modelgate` with the container's args and nothing but its env (the
    /// image's entrypoint is the binary).
    fn command(&self) -> Command {
        let mut cmd = Command::new(modelgate_tests::binary());
        cmd.args(&self.args).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// `arg` with the container path `mount` replaced by `local` wherever it is
/// a whole path (followed by `/` or the end).
fn map_path(arg: &str, mount: &str, local: &Path) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(at) = rest.find(mount) {
        let after = &rest[at + mount.len()..];
        out.push_str(&rest[..at]);
        if after.is_empty() || after.starts_with('/') {
            out.push_str(&local.display().to_string());
        } else {
            out.push_str(mount);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[test]
fn map_path_replaces_whole_container_paths_only() {
    let local = Path::new("/tmp/x");
    assert_eq!(
        map_path("--records=file:///var/lib/modelgate/shadow", "/var/lib/modelgate", local),
        "--records=file:///tmp/x/shadow"
    );
    assert_eq!(map_path("--models=/models", "/models", local), "--models=/tmp/x");
    assert_eq!(map_path("--models=/models2", "/models", local), "--models=/models2");
}

async fn wait_for_metric(server: &ServeProcess, sink: &str, want: f64) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let written =
            server.metric("modelgate_shadow_records_total", &[("sink", sink), ("outcome", "written")]).await;
        if written >= want {
            return;
        }
        assert!(
            Instant::now() < until,
            "{sink}: {written} of {want} records written; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The chart's records wiring is one the real gateway accepts: the pod the
/// chart renders (Kafka and Parquet on S3 on, S3 keys from a Secret) runs
/// as `modelgate` with exactly its args and env, against a real Kafka-
/// protocol broker (tansu) and a real S3 server (s3s-fs), and the shadow
/// records a shadow rollout makes arrive in both, carrying the pod's name as
/// their replica id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_records_wiring_runs_the_gateway_into_kafka_and_s3() {
    let broker = Broker::start();
    broker.create_topic("shadow-records", 3);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let values = json!({
        "drainSeconds": 1,
        // Every copy must be compared for every record to arrive: without a
        // budget, a copy is never skipped however busy the test machine is.
        "extraArgs": ["--shadow-cpu-budget", "off"],
        "records": {
            "kafka": {
                "enabled": true, "brokers": [broker.bootstrap()], "topic": "shadow-records",
                "options": { "linger.ms": 5 }
            },
            "parquet": {
                "enabled": true, "url": "s3://lake/shadow", "endpoint": s3.endpoint(), "allowHttp": true,
                "region": S3Server::REGION,
                "credentials": {
                    "secretName": "lake-keys",
                    "env": { "AWS_ACCESS_KEY_ID": "access-key-id", "AWS_SECRET_ACCESS_KEY": "secret-access-key" }
                }
            }
        }
    });
    let out = render_cases(&json!([{ "name": "live", "set": values }]));
    let objects = objects_of(&out["cases"][0]);
    let pod = Pod::of(&objects);
    let secrets: Secrets = HashMap::from([(
        "lake-keys",
        HashMap::from([
            ("access-key-id", S3Server::ACCESS_KEY.to_string()),
            ("secret-access-key", S3Server::SECRET_KEY.to_string()),
        ]),
    )]);
    // The chart never sees a secret's value.
    let rendered = serde_json::to_string(&objects).unwrap();
    assert!(!rendered.contains(S3Server::SECRET_KEY) && !rendered.contains(S3Server::ACCESS_KEY));

    let repo = TestRepo::breast_cancer();
    let state = tempfile::tempdir().unwrap();
    let volumes =
        HashMap::from([("models", repo.path().to_path_buf()), ("state", state.path().to_path_buf())]);
    const POD: &str = "mg-modelgate-6d8f9c7b5-x2k4q";
    let local = LocalPod::of(&pod, POD, &volumes, &secrets);
    let mut server = ServeProcess::start(local.command(), &state.path().join("serve.log"))
        .unwrap_or_else(|log| panic!("the rendered args and env did not start the gateway:\n{log}"));

    let plan = shadow_plan("breast-cancer", 1);
    server.admin(None).await.start_rollout(plan).await.unwrap();
    let g = golden(2);
    let n = g.rows.len();
    let mut c = server.client().await;
    for (i, row) in g.rows.iter().enumerate() {
        let mut req = request("breast-cancer", std::slice::from_ref(row));
        req.request_id = format!("req-{i}");
        req.routing_key = format!("user-{i}");
        assert_eq!(c.predict(req).await.unwrap().into_inner().version, 2);
    }
    for sink in ["file", "kafka", "parquet"] {
        wait_for_metric(&server, sink, n as f64).await;
    }
    for i in 0..n {
        let outcome = pb::RecordOutcomeRequest {
            model: "breast-cancer".into(),
            request_id: format!("req-{i}"),
            routing_key: format!("user-{i}"),
            metric: "revenue".into(),
            value: i as f64,
            timestamp_ms: 0,
        };
        assert!(c.record_outcome(outcome).await.unwrap().into_inner().joined);
    }
    for sink in ["file", "kafka", "parquet"] {
        wait_for_metric(&server, sink, 2.0 * n as f64).await;
    }
    // A graceful stop, as the kubelet's SIGTERM: the sinks flush, the
    // Parquet files are uploaded.
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(120)).expect("the gateway exits on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", server.log());
    assert!(!server.log().contains(S3Server::SECRET_KEY), "a secret in the log:\n{}", server.log());
    let ids = |records: Vec<&Value>, kind: &str| {
        let mut ids: Vec<String> = records
            .into_iter()
            .filter(|r| r.get("kind").is_none_or(|k| k == kind))
            .map(|r| {
                assert_eq!(r["replica"], POD, "{r}");
                r["request_id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    let mut want: Vec<String> = (0..n).map(|i| format!("req-{i}")).collect();
    want.sort();

    let python = python::venv("kafka-s3", "requirements-kafka-s3.txt");
    let mut cmd = Command::new(&python);
    cmd.arg(root().join("tests/python/kafka_consume.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", "shadow-records"])
        .args(["--count", &(2 * n).to_string(), "--timeout", "90"]);
    let out = python::run_bounded(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "kafka_consume.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages: Vec<Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m["value"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(messages.len(), 2 * n, "{messages:#?}");
    assert_eq!(ids(messages.iter().collect(), "prediction"), want);
    assert_eq!(ids(messages.iter().collect(), "outcome"), want);

    let mut cmd = Command::new(&python);
    cmd.arg(root().join("tests/python/parquet_read.py")).args(["s3", &s3.endpoint(), "lake/shadow"]);
    cmd.env("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY);
    let out = python::run_bounded(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "parquet_read.py: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |table: &str| seen["pyarrow"][table].as_array().unwrap().iter().collect::<Vec<_>>();
    let log = server.log();
    assert_eq!(
        ids(rows("predictions"), "prediction"),
        want,
        "Parquet predictions on S3; gateway log:\n{log}"
    );
    assert_eq!(ids(rows("outcomes"), "outcome"), want, "Parquet outcomes on S3; gateway log:\n{log}");
    assert!(
        !s3.keys("lake").is_empty()
            && s3.keys("lake").iter().all(|k| k.starts_with("shadow/") && k.contains(POD)),
        "{:?}",
        s3.keys("lake")
    );

    // And the file sink on the state volume, as before.
    let files: Vec<_> = std::fs::read_dir(state.path().join("shadow")).unwrap().flatten().collect();
    let lines: usize = files.iter().map(|f| std::fs::read_to_string(f.path()).unwrap().lines().count()).sum();
    assert_eq!(lines, 2 * n);
}

/// The full records-values.yaml set (TLS with a client certificate, SCRAM,
/// S3 with a region) is accepted by the gateway: started with the rendered
/// args and env, the certificate files from the mounted secret and the SASL
/// password from the secretKeyRef, it becomes ready; without the password's
/// secret it refuses to start, naming the variable. The brokers and the S3
/// endpoint are closed loopback ports: nothing is sent anywhere.
#[test]
fn the_full_records_values_start_the_gateway_and_a_missing_password_stops_it() {
    let held = modelgate_tests::closed_port();
    let closed = held.addr;
    let values = json!({ "records": {
        "kafka": { "brokers": [closed.to_string()] },
        "parquet": { "endpoint": format!("http://{closed}"), "allowHttp": true }
    } });
    let out =
        render_cases(&json!([{ "name": "full", "values_files": ["ci/records-values.yaml"], "set": values }]));
    let objects = objects_of(&out["cases"][0]);
    let pod = Pod::of(&objects);
    let ca = modelgate_tests::pki::Ca::new("kafka-ca");
    let client = ca.client("modelgate", "ml");
    let secrets: Secrets = HashMap::from([
        (
            "modelgate-kafka-tls",
            HashMap::from([("ca.crt", ca.pem()), ("tls.crt", client.cert_pem), ("tls.key", client.key_pem)]),
        ),
        ("modelgate-kafka-user", HashMap::from([("password", "kafka-user-password".to_string())])),
        (
            "modelgate-s3",
            HashMap::from([
                ("access-key-id", "AKIDEXAMPLE".into()),
                ("secret-access-key", "s3-secret".into()),
            ]),
        ),
    ]);
    let repo = TestRepo::breast_cancer();
    let state = tempfile::tempdir().unwrap();
    let volumes =
        HashMap::from([("models", repo.path().to_path_buf()), ("state", state.path().to_path_buf())]);
    let local = LocalPod::of(&pod, "mg-modelgate-0", &volumes, &secrets);
    let mut server = ServeProcess::start(local.command(), &state.path().join("serve.log"))
        .unwrap_or_else(|log| panic!("the rendered args and env did not start the gateway:\n{log}"));
    let log = server.log();
    assert!(
        !log.contains("kafka-user-password") && !log.contains("s3-secret"),
        "a secret in the log:\n{log}"
    );
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(60)).expect("killed");

    // Without the password the SASL sink cannot work: start-up fails
    // naming where the password comes from.
    let mut env_pod = LocalPod::of(&pod, "mg-modelgate-0", &volumes, &secrets);
    env_pod.env.retain(|(k, _)| k != "MODELGATE_KAFKA_SASL_PASSWORD");
    let err =
        ServeProcess::start(env_pod.command(), &state.path().join("serve-2.log")).err().expect("start fails");
    assert!(err.contains("MODELGATE_KAFKA_SASL_PASSWORD"), "{err}");
}
