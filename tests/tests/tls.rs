//! Transport security with real certificates made in the test: TLS on the
//! Predict and admin listeners, rotation while serving (the kubelet's
//! symlink swap), a corrupt replacement, mutual TLS on the admin listener
//! with the client certificate as the audit log's "who", the CLI's TLS
//! flags, and bad flags.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modelgate::cli::ClientTls;
use modelgate::cli::admin::AdminConn;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use modelgate_tests::pki::{Ca, SecretDir, write};
use modelgate_tests::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::Channel;

const POLL: Duration = Duration::from_millis(200);

/// The Predict client of a TLS listener, trusting `ca`.
async fn tls_client(addr: SocketAddr, ca: &Path) -> Result<PredictClient<Channel>, String> {
    let tls = ClientTls { tls_ca: Some(ca.to_path_buf()), ..Default::default() };
    let channel = tls
        .endpoint("--addr", &addr.to_string())
        .map_err(|e| format!("{e:#}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(PredictClient::new(channel))
}

async fn predict_once(c: &mut PredictClient<Channel>) -> Result<i64, String> {
    tokio::time::timeout(Duration::from_secs(10), c.predict(request("breast-cancer", &rows(1))))
        .await
        .map_err(|_| "timed out".to_string())?
        .map(|r| r.into_inner().version)
        .map_err(|s| format!("{s:?}"))
}

/// The leaf certificate the listener at `addr` presents to a new connection.
async fn served_cert(addr: SocketAddr, ca_pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// The value of one series on the gateway's `/metrics`, 0 when absent.
async fn metric(server: &modelgate::RunningServer, series: &str) -> f64 {
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    body.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Polls `check` every 50 ms until it holds, failing after `secs` seconds.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < until, "gave up after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_over_tls_works_and_plaintext_to_the_tls_port_fails() {
    let ca = Ca::new("serving CA");
    let secret = SecretDir::new();
    secret.publish(&ca.server("gateway"), &ca.pem());
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.tls = Some(secret.files(None));
        c.tls_poll = POLL;
    })
    .await;

    // Clients that connect and never say hello hold no one up: each
    // handshake waits in its own task.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let mut c = tls_client(server.addr, &secret.ca()).await.unwrap();
    assert_eq!(predict_once(&mut c).await.unwrap(), 2);
    drop(idle);

    // A plaintext HTTP/2 client gets no answer from a TLS port.
    let plain = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        predict_once(&mut PredictClient::new(channel)).await
    };
    let plain = tokio::time::timeout(Duration::from_secs(15), plain)
        .await
        .expect("a plaintext client is refused, not hung");
    assert!(plain.is_err(), "plaintext Predict on a TLS port must fail");

    // A client that trusts another CA refuses the gateway's certificate.
    let other = Ca::new("someone else");
    let other_ca = write(repo.path(), "other-ca.pem", &other.pem());
    let refused = match tls_client(server.addr, &other_ca).await {
        Ok(mut c) => predict_once(&mut c).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(refused.is_err(), "a certificate from an untrusted CA must not be accepted");

    // The serving certificate's expiry is exported, and the listener still serves.
    let not_after = metric(&server, r#"modelgate_tls_cert_not_after_seconds{listener="predict"}"#).await;
    assert!(not_after > 1.7e9, "notAfter gauge: {not_after}");
    assert_eq!(predict_once(&mut c).await.unwrap(), 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_without_a_failed_request() {
    let ca = Ca::new("serving CA");
    let secret = SecretDir::new();
    let first = ca.server("gateway-1");
    secret.publish(&first, &ca.pem());
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.tls = Some(secret.files(None));
        c.tls_poll = POLL;
    })
    .await;
    let addr = server.addr;
    assert_eq!(served_cert(addr, &ca.pem()).await, first.der);

    // Requests all through the rotation: on a connection opened before it,
    // and on a new connection every round.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn({
        let (stop, ok, ca) = (Arc::clone(&stop), Arc::clone(&ok), secret.ca());
        async move {
            let mut long_lived = tls_client(addr, &ca).await.unwrap();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match predict_once(&mut long_lived).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.push(format!("long-lived: {e}"));
                        0
                    }
                };
                let fresh = match tls_client(addr, &ca).await {
                    Ok(mut c) => predict_once(&mut c).await,
                    Err(e) => Err(e),
                };
                match fresh {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.push(format!("new connection: {e}"));
                        0
                    }
                };
            }
            failures
        }
    });
    eventually(10, "traffic before the rotation", || async { ok.load(Ordering::Relaxed) >= 10 }).await;

    let second = ca.server("gateway-2");
    secret.publish(&second, &ca.pem());
    eventually(10, "new connections to get the new certificate", || async {
        served_cert(addr, &ca.pem()).await == second.der
    })
    .await;
    let at_rotation = ok.load(Ordering::Relaxed);
    eventually(10, "traffic after the rotation", || async { ok.load(Ordering::Relaxed) >= at_rotation + 10 })
        .await;
    stop.store(true, Ordering::Relaxed);
    let failures = traffic.await.unwrap();
    assert!(failures.is_empty(), "requests failed during the rotation: {failures:?}");

    assert_eq!(metric(&server, r#"modelgate_tls_reloads_total{listener="predict",outcome="ok"}"#).await, 1.0);
    assert_eq!(
        metric(&server, r#"modelgate_tls_reloads_total{listener="predict",outcome="error"}"#).await,
        0.0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replacement_keeps_the_old_certificate_serving() {
    let ca = Ca::new("serving CA");
    let secret = SecretDir::new();
    let good = ca.server("gateway");
    secret.publish(&good, &ca.pem());
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.tls = Some(secret.files(None));
        c.tls_poll = POLL;
    })
    .await;

    // Half a certificate, written in place: a copy caught mid-write.
    let next = ca.server("gateway-next");
    secret.overwrite_cert(&next.cert_pem[..next.cert_pem.len() / 2]);
    let failed = r#"modelgate_tls_reloads_total{listener="predict",outcome="error"}"#;
    eventually(10, "the failed reload to be counted", || async { metric(&server, failed).await >= 1.0 })
        .await;
    assert_eq!(served_cert(server.addr, &ca.pem()).await, good.der, "the old certificate still serves");
    let mut c = tls_client(server.addr, &secret.ca()).await.unwrap();
    assert_eq!(predict_once(&mut c).await.unwrap(), 2);

    // The whole file arrives: the next poll takes it.
    secret.publish(&next, &ca.pem());
    eventually(10, "the repaired certificate to serve", || async {
        served_cert(server.addr, &ca.pem()).await == next.der
    })
    .await;
    assert_eq!(metric(&server, r#"modelgate_tls_reloads_total{listener="predict",outcome="ok"}"#).await, 1.0);
    server.stop().await.unwrap();
}

/// An admin connection over TLS trusting `ca`, with an optional client identity.
fn admin_conn(server: &modelgate::RunningServer, ca: &Path, identity: Option<(&Path, &Path)>) -> AdminConn {
    AdminConn {
        admin_addr: server.admin_addr.to_string(),
        token: None,
        json: false,
        tls: ClientTls {
            tls_ca: Some(ca.to_path_buf()),
            tls_cert: identity.map(|(c, _)| c.to_path_buf()),
            tls_key: identity.map(|(_, k)| k.to_path_buf()),
            tls_server_name: None,
        },
    }
}

/// Connects and lists the models; any failure (connect or call) as text.
async fn list_models(conn: &AdminConn) -> Result<Vec<pb::ModelInfo>, String> {
    let call = async {
        let mut a = modelgate::cli::admin::connect(conn).await.map_err(|e| format!("{e:#}"))?;
        a.list_models(pb::ListModelsRequest {})
            .await
            .map(|r| r.into_inner().models)
            .map_err(|s| format!("{s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(15), call).await.map_err(|_| "timed out".to_string())?
}

/// A client certificate and key on disk.
fn client_files(dir: &Path, ca: &Ca, cn: &str) -> (PathBuf, PathBuf) {
    let issued = ca.client(cn, "ops");
    (write(dir, &format!("{cn}.crt"), &issued.cert_pem), write(dir, &format!("{cn}.key"), &issued.key_pem))
}

struct MutualAdmin {
    repo: TestRepo,
    serving: Ca,
    clients: Ca,
    secret: SecretDir,
}

impl MutualAdmin {
    fn new() -> Self {
        let serving = Ca::new("serving CA");
        let clients = Ca::new("operators CA");
        let secret = SecretDir::new();
        secret.publish(&serving.server("gateway-admin"), &serving.pem());
        Self { repo: TestRepo::breast_cancer(), serving, clients, secret }
    }

    async fn start(&self, tokens: Vec<modelgate::Token>) -> modelgate::RunningServer {
        let client_ca = write(self.repo.path(), "operators-ca.pem", &self.clients.pem());
        start(&self.repo, |c| {
            c.admin_tls = Some(self.secret.files(Some(client_ca)));
            c.admin_tokens = tokens;
            c.tls_poll = POLL;
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_admin_refuses_strangers_and_audits_the_certificate_subject() {
    let m = MutualAdmin::new();
    let server = m.start(Vec::new()).await;
    let ca = m.secret.ca();

    let no_cert = list_models(&admin_conn(&server, &ca, None)).await;
    assert!(no_cert.is_err(), "a client without a certificate must be refused: {no_cert:?}");

    let rogue = Ca::new("operators CA"); // same name, different key
    let (rc, rk) = client_files(m.repo.path(), &rogue, "mallory");
    let rogue_cert = list_models(&admin_conn(&server, &ca, Some((&rc, &rk)))).await;
    assert!(rogue_cert.is_err(), "a certificate from another CA must be refused: {rogue_cert:?}");

    let (ac, ak) = client_files(m.repo.path(), &m.clients, "alice");
    let conn = admin_conn(&server, &ca, Some((&ac, &ak)));
    assert_eq!(list_models(&conn).await.unwrap()[0].name, "breast-cancer");
    let mut alice = modelgate::cli::admin::connect(&conn).await.unwrap();
    alice.start_rollout(canary_plan(1, 10, 100, false)).await.unwrap();
    let events = alice.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert_eq!(events[0].who, "CN=alice, O=ops", "the audit log names the certificate's subject");

    // The Predict listener stays plaintext: TLS is per listener.
    let mut c = client(&server).await;
    assert!(c.predict(request("breast-cancer", &rows(1))).await.is_ok());
    let _ = &m.serving;
    server.stop().await.unwrap();
}

/// A Predict client trusting `ca`, presenting `identity` if given.
async fn mutual_client(addr: SocketAddr, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<i64, String> {
    let tls = ClientTls {
        tls_ca: Some(ca.to_path_buf()),
        tls_cert: identity.map(|(c, _)| c.to_path_buf()),
        tls_key: identity.map(|(_, k)| k.to_path_buf()),
        tls_server_name: None,
    };
    let call = async {
        let channel = tls
            .endpoint("--addr", &addr.to_string())
            .map_err(|e| format!("{e:#}"))?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        predict_once(&mut PredictClient::new(channel)).await
    };
    tokio::time::timeout(Duration::from_secs(15), call).await.map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_predict_serves_only_clients_with_a_certificate_the_ca_signed() {
    let serving = Ca::new("serving CA");
    let clients = Ca::new("client apps CA");
    let secret = SecretDir::new();
    secret.publish(&serving.server("gateway"), &serving.pem());
    let repo = TestRepo::breast_cancer();
    let client_ca = write(repo.path(), "apps-ca.pem", &clients.pem());
    let server = start(&repo, |c| {
        c.tls = Some(secret.files(Some(client_ca)));
        c.tls_poll = POLL;
    })
    .await;
    let ca = secret.ca();

    let none = mutual_client(server.addr, &ca, None).await;
    assert!(none.is_err(), "no client certificate, no prediction: {none:?}");
    let rogue = Ca::new("client apps CA"); // same name, another key
    let (rc, rk) = client_files(repo.path(), &rogue, "intruder");
    let forged = mutual_client(server.addr, &ca, Some((&rc, &rk))).await;
    assert!(forged.is_err(), "a certificate from another CA is refused: {forged:?}");
    let (ac, ak) = client_files(repo.path(), &clients, "checkout-service");
    assert_eq!(mutual_client(server.addr, &ca, Some((&ac, &ak))).await.unwrap(), 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_and_a_certificate_are_both_named_and_both_needed() {
    let m = MutualAdmin::new();
    let server = m.start(vec![modelgate::Token::new("deploy-bot", "s3cret")]).await;
    let (bc, bk) = client_files(m.repo.path(), &m.clients, "ci-runner");
    let mut conn = admin_conn(&server, &m.secret.ca(), Some((&bc, &bk)));

    // A certificate without the token: the token is still required.
    let e = list_models(&conn).await.unwrap_err();
    assert!(e.contains("Unauthenticated"), "{e}");

    conn.token = Some("s3cret".into());
    let mut a = modelgate::cli::admin::connect(&conn).await.unwrap();
    a.start_rollout(canary_plan(1, 10, 100, false)).await.unwrap();
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert_eq!(events[0].who, "deploy-bot (cert CN=ci-runner, O=ops)");
    server.stop().await.unwrap();
}

/// A `modelgate serve` process and the addresses its ready lines name.
struct Served {
    child: Child,
    addr: String,
    admin: String,
    lines: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(repo: &TestRepo, extra: &[&std::ffi::OsStr]) -> Served {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--models"])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(repo.path().join(".state"))
        .args(["--admin-listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(extra)
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn modelgate serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        let done = line.starts_with("try: ");
        lines.push(line);
        if done {
            break;
        }
    }
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"))
    };
    let addr = find("modelgate ready: Predict (modelgate.v1) on ");
    let admin = find("  admin on ");
    Served { child, addr, admin, lines }
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(binary()).args(args).env_remove("MODELGATE_ADMIN_TOKEN").output().expect("run modelgate")
}

#[test]
fn the_cli_speaks_tls_and_mutual_tls_to_a_served_gateway() {
    let ca = Ca::new("serving CA");
    let operators = Ca::new("operators CA");
    let secret = SecretDir::new();
    secret.publish(&ca.server("gateway"), &ca.pem());
    let repo = TestRepo::breast_cancer();
    let operators_ca = write(repo.path(), "operators-ca.pem", &operators.pem());
    let (cert, key) = (secret.cert(), secret.key());
    let served = serve(
        &repo,
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
            "--admin-tls-cert".as_ref(),
            cert.as_os_str(),
            "--admin-tls-key".as_ref(),
            key.as_os_str(),
            "--admin-client-ca".as_ref(),
            operators_ca.as_os_str(),
        ],
    );
    assert!(served.lines.iter().any(|l| l.contains("TLS on the Predict port")), "{:#?}", served.lines);
    assert!(served.lines.iter().any(|l| l.contains("mutual TLS on the admin port")), "{:#?}", served.lines);
    let sample = served.lines.iter().find(|l| l.starts_with("try: ")).unwrap();
    assert!(sample.contains("--addr https://"), "{sample}");

    let ca_path = secret.ca();
    let input = serde_json::to_string(&rows(1)).unwrap();
    let predict = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "predict".as_ref(),
            "--addr".as_ref(),
            served.addr.as_ref(),
            "--model".as_ref(),
            "breast-cancer".as_ref(),
            "--input".as_ref(),
            input.as_ref(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = predict(&["--tls-ca".as_ref(), ca_path.as_os_str()]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("model breast-cancer  version 2"));
    // Without TLS flags the client speaks plaintext and fails.
    let out = predict(&["--timeout-seconds".as_ref(), "10".as_ref()]);
    assert!(!out.status.success(), "plaintext to a TLS port must fail");

    let (ccert, ckey) = client_files(repo.path(), &operators, "carol");
    let admin = |call: &[&str], identity: bool| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["admin".as_ref(), "--admin-addr".as_ref(), served.admin.as_ref()];
        args.extend(["--tls-ca".as_ref(), ca_path.as_os_str()]);
        if identity {
            args.extend(["--tls-cert".as_ref(), ccert.as_os_str(), "--tls-key".as_ref(), ckey.as_os_str()]);
        }
        args.extend(call.iter().map(std::ffi::OsStr::new));
        run(&args)
    };
    let out = admin(&["list-models"], false);
    assert!(!out.status.success(), "no client certificate: refused");
    let out = admin(&["start", "breast-cancer", "--reason", "tls test", "shadow", "--versions", "1"], true);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let out = admin(&["events", "--json"], true);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let who: Vec<&str> = doc["events"].as_array().unwrap().iter().filter_map(|e| e["who"].as_str()).collect();
    assert_eq!(who, ["CN=carol, O=ops"], "{doc}");
}

#[test]
fn bad_tls_flags_stop_the_server_with_a_message_naming_the_problem() {
    let repo = TestRepo::breast_cancer();
    let dir = repo.path();
    let serve_with = |extra: &[&str]| {
        let out = Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
            ])
            .arg("--models")
            .arg(dir)
            .arg("--state-dir")
            .arg(dir.join(".state"))
            .args(extra)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .expect("run modelgate serve");
        assert!(!out.status.success(), "serve {extra:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = dir.join("missing.crt").display().to_string();
    let key = dir.join("missing.key").display().to_string();

    let e = serve_with(&["--tls-cert", &cert]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = serve_with(&["--admin-tls-key", &key]);
    assert!(e.contains("--admin-tls-cert"), "{e}");
    let e = serve_with(&["--admin-client-ca", &cert]);
    assert!(e.contains("--admin-tls-cert"), "{e}");
    let e = serve_with(&["--tls-client-ca", &cert]);
    assert!(e.contains("--tls-cert"), "{e}");
    // etcd security flags mean nothing without etcd.
    let e = serve_with(&["--etcd-ca", &cert]);
    assert!(e.contains("--state etcd://"), "{e}");
    let e = serve_with(&["--etcd-user", "root"]);
    assert!(e.contains("--etcd-password-file"), "{e}");
    let e = serve_with(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        e.contains("TLS on the Predict listener") && e.contains("cannot read") && e.contains(&cert),
        "{e}"
    );

    // Files that exist but hold the wrong thing.
    let ca = Ca::new("serving CA");
    let issued = ca.server("gateway");
    let good_cert = write(dir, "good.crt", &issued.cert_pem);
    let not_a_key = write(dir, "not-a.key", &issued.cert_pem);
    let e = serve_with(&[
        "--admin-tls-cert",
        good_cert.to_str().unwrap(),
        "--admin-tls-key",
        not_a_key.to_str().unwrap(),
    ]);
    assert!(e.contains("TLS on the admin listener") && e.contains("not-a.key"), "{e}");
}

/// `stop` cancels the server's one shutdown token: both gRPC listeners and
/// the metrics listener close, and the TLS reload tasks of both listeners
/// end (a certificate published afterwards is never read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_listeners_and_the_reload_tasks() {
    let ca = Ca::new("serving CA");
    let secret = SecretDir::new();
    secret.publish(&ca.server("gateway-1"), &ca.pem());
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.tls = Some(secret.files(None));
        c.admin_tls = Some(secret.files(None));
        c.tls_poll = POLL;
    })
    .await;
    let gateway = std::sync::Arc::clone(&server.gateway);
    let addrs = [server.addr, server.admin_addr, server.metrics_addr.unwrap()];
    let reloads = || {
        let text = gateway.metrics().encode();
        text.lines().filter(|l| l.starts_with("modelgate_tls_reloads_total{")).count()
    };
    assert_eq!(reloads(), 0);
    server.stop().await.unwrap();

    secret.publish(&ca.server("gateway-2"), &ca.pem());
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(reloads(), 0, "a reload task outlived stop: {}", gateway.metrics().encode());
    for addr in addrs {
        eventually(10, &format!("{addr} to refuse connections"), || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
}
