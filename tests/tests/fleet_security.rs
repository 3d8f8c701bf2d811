//! Fleet mode against a secured etcd, as production runs it: TLS with a
//! private CA and client certificates (etcd's `--client-cert-auth`), or an
//! etcd user. Real etcd, real certificates made by the test, real
//! `modelgate serve` processes. Also: the leader keeps the audit log in etcd
//! to its configured size.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_tests::fleet::{Etcd, Replica, eventually};
use modelgate_tests::pki::{Ca, write};
use modelgate_tests::*;

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1).add("breast-cancer", 2, V2);
    repo
}

fn rr() -> pb::RolloutRequest {
    pb::RolloutRequest { model: "breast-cancer".into(), reason: "security test".into(), expected_stage: None }
}

/// Waits until replica `r` shows the rollout in `state`.
async fn sees(r: &Replica, state: &str) {
    let a = r.admin().await;
    let what = format!("replica {} to show the rollout {state}", r.id);
    eventually(10, &what, || {
        let mut a = a.clone();
        async move { (rollout_status(&mut a, "breast-cancer").await.state == state).then_some(()) }
    })
    .await;
}

/// The flags of a replica whose etcd files live in `dir`.
fn tls_flags(dir: &Path, with_identity: bool) -> Vec<OsString> {
    let mut f: Vec<OsString> = vec!["--etcd-ca".into(), dir.join("ca.crt").into()];
    if with_identity {
        f.extend(["--etcd-cert".into(), dir.join("client.crt").into()]);
        f.extend(["--etcd-key".into(), dir.join("client.key").into()]);
    }
    f
}

/// Waits until replica `r`'s log holds `line` more often than `before` times.
async fn logs_again(r: &Replica, line: &str, before: usize, what: &str) {
    eventually(10, what, || {
        let n = r.log().matches(line).count();
        async move { (n > before).then_some(()) }
    })
    .await;
}

const RECONNECTED: &str = "etcd access files changed: reconnected with them";
const REFUSED: &str = "etcd refused the changed access files";

/// Writes a client certificate `ca` signed for `cn` into `dir`, in place
/// (as a rotation does).
fn issue_client(ca: &Ca, dir: &Path, cn: &str) {
    let c = ca.client(cn, "modelgate");
    // Key first, then certificate: a reader between the two sees a
    // mismatched pair, which must be refused and retried, never used.
    write(dir, "client.key", &c.key_pem);
    write(dir, "client.crt", &c.cert_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_work_through_an_etcd_that_requires_client_certificates_and_follow_rotations() {
    let ca = Ca::new("etcd test CA");
    let etcd = Etcd::start_tls(&ca, true);
    let url = etcd.url("secure");
    let repo = repo();
    let dirs = tempfile::tempdir().unwrap();
    let files = |id: &str| {
        let d = dirs.path().join(format!("{id}-etcd"));
        std::fs::create_dir_all(&d).unwrap();
        write(&d, "ca.crt", &ca.pem());
        issue_client(&ca, &d, id);
        d
    };
    let (fa, fb) = (files("a"), files("b"));
    let a = Replica::try_start(&repo, &url, "a", &dirs.path().join("a"), &tls_flags(&fa, true)).unwrap();
    let b = Replica::try_start(&repo, &url, "b", &dirs.path().join("b"), &tls_flags(&fb, true)).unwrap();

    let mut admin_a = a.admin().await;
    admin_a.start_rollout(canary_plan(1, 30, 1_000_000, false)).await.unwrap();
    sees(&b, "running").await;

    // Trusting etcd is not enough: without a client certificate etcd refuses
    // the connection, and a replica with no fleet state to fall back on
    // says so and exits rather than serve a state the fleet never agreed.
    let fc = files("c");
    let log = Replica::try_start(&repo, &url, "c", &dirs.path().join("c"), &tls_flags(&fc, false))
        .err()
        .expect("a replica without a client certificate cannot join");
    assert!(log.contains("etcd"), "the failure names etcd: {log}");
    eprintln!("c without a client certificate: {}", log.lines().last().unwrap_or_default());

    // cert-manager renews a's certificate: a reconnects with it and its
    // changes still reach b.
    let before = a.log().matches(RECONNECTED).count();
    issue_client(&ca, &fa, "a-renewed");
    logs_again(&a, RECONNECTED, before, "a to reconnect with its renewed certificate").await;
    admin_a.pause(rr()).await.unwrap();
    sees(&b, "paused").await;

    // A certificate from another CA is refused by etcd: a keeps the
    // connection it has and goes on working.
    let before = a.log().matches(REFUSED).count();
    issue_client(&Ca::new("some other CA"), &fa, "a-wrong");
    logs_again(&a, REFUSED, before, "a to refuse a certificate etcd does not accept").await;
    admin_a.resume(rr()).await.unwrap();
    sees(&b, "running").await;
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_user_logs_in_and_a_changed_password_is_picked_up() {
    let etcd = Etcd::start();
    {
        let mut root = etcd.client(None).await;
        root.user_add("root", "first-password", None).await.unwrap();
        root.user_grant_role("root", "root").await.unwrap();
        root.auth_enable().await.unwrap();
    }
    let url = etcd.url("auth");
    let repo = repo();
    let dirs = tempfile::tempdir().unwrap();
    let password = write(dirs.path(), "password", "first-password\n");
    let user_flags = |file: &Path| -> Vec<OsString> {
        vec!["--etcd-user".into(), "root".into(), "--etcd-password-file".into(), file.into()]
    };

    let a = Replica::try_start(&repo, &url, "a", &dirs.path().join("a"), &user_flags(&password)).unwrap();
    let mut admin_a = a.admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 30, 1_000_000, false)).await.unwrap().into_inner();
    // The state is in etcd, readable by the same user and refused to nobody.
    let mut as_root = etcd.client(Some(("root", "first-password"))).await;
    let state = as_root.get("/auth/state", None).await.unwrap();
    let state = String::from_utf8_lossy(state.kvs()[0].value()).into_owned();
    assert!(state.contains(&started.rollout_id), "{state}");
    let mut anonymous = etcd.client(None).await;
    assert!(anonymous.get("/auth/state", None).await.is_err(), "auth is on: no user, no read");

    // A wrong password: nothing to serve from, so the replica exits and says why.
    let wrong = write(dirs.path(), "wrong", "not-the-password");
    let log = Replica::try_start(&repo, &url, "b", &dirs.path().join("b"), &user_flags(&wrong))
        .err()
        .expect("a replica with a wrong password cannot join");
    assert!(log.contains("authentication failed"), "the failure says why: {log}");
    eprintln!("b with a wrong password: {}", log.lines().last().unwrap_or_default());

    // The password is rotated in etcd, then in the secret: the replica
    // logs in again with the new one and its changes go through.
    let before = a.log().matches(RECONNECTED).count();
    as_root.user_change_password("root", "second-password").await.unwrap();
    write(dirs.path(), "password", "second-password\n");
    logs_again(&a, RECONNECTED, before, "a to log in with the new password").await;
    admin_a.pause(rr()).await.unwrap();
    let as_root = etcd.client(Some(("root", "second-password"))).await;
    let (_, took) = eventually(5, "the pause to reach etcd", || {
        let mut c = as_root.clone();
        async move {
            let r = c.get("/auth/state", None).await.ok()?;
            String::from_utf8_lossy(r.kvs().first()?.value()).contains("\"paused\"").then_some(())
        }
    })
    .await;
    eprintln!("pause after a password rotation stored in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_in_etcd_keeps_the_newest_events_and_reads_from_a_time() {
    let etcd = Etcd::start();
    let url: modelgate::EtcdUrl = etcd.url("trim").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, _events) = modelgate::EtcdStore::start(
        url,
        modelgate::EtcdAccess::default(),
        5,
        "r1".into(),
        dir.path().to_path_buf(),
    )
    .await
    .unwrap();
    use modelgate::StateStore;
    eventually(10, "the store to connect", || {
        let connected = store.connected();
        async move { connected.then_some(()) }
    })
    .await;
    for batch in 0..4 {
        let lines: Vec<String> = (0..3).map(|i| format!("{{\"n\":{}}}", batch * 3 + i)).collect();
        store.append_events(lines).await.unwrap();
        // Keys carry the millisecond: keep batches apart so their order is
        // the order of time.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.read_events().await.unwrap().len(), 12);
    assert_eq!(store.trim_audit().await.unwrap(), 7);
    let kept = store.read_events().await.unwrap();
    let expected: Vec<String> = (7..12).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(kept, expected, "the five newest remain, oldest first");
    assert_eq!(store.trim_audit().await.unwrap(), 0, "nothing more to trim");
    // Reads from a time are a key range (with a minute's slack for clocks).
    let now = modelgate::clock::now_ms();
    assert_eq!(store.read_events_since(now - 1000).await.unwrap(), expected);
    assert!(store.read_events_since(now + 120_000).await.unwrap().is_empty());
    store.close().await;
}
