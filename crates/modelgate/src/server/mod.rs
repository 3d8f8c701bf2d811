//! Starting and stopping the gateway: load the runtime and the repository,
//! bind, serve, drain. Layer 6, the composition root: [`config`] holds the
//! server's flags, [`scrape`] gathers the metric sources at scrape time.

pub mod config;
pub mod run;
pub mod scrape;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use modelgate_proto::v1::predict_server::PredictServer;
use modelgate_registry::watch::{RepositoryListener, RepositoryWatcher, WatchSettings};
use modelgate_registry::{ModelEntry, VersionState};
use modelgate_runtime::{Executor, ExecutorConfig, Runtime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::admin::AdminService;
use crate::api::auth::AdminAuth;
use crate::api::connection::{Gate, incoming};
use crate::api::error::oversize_to_resource_exhausted;
use crate::api::predict::PredictService;
use crate::api::request_body::{BodyBudget, BodyLimitLayer};
use crate::api::tls::ReloadingConfig;
use crate::control::Controller;
use crate::server::config::ServeConfig;
use crate::serving::gateway::{Gateway, ShadowRunner};
use crate::serving::routing::ModelTable;
use modelgate_proto::v1::admin_server::AdminServer;

/// gRPC service names reported by the health service.
pub const HEALTH_SERVICES: [&str; 3] = ["", "modelgate.v1.Predict", "inference.GRPCInferenceService"];

/// The health service name that reports whether the fleet's etcd answers.
pub const FLEET_HEALTH_SERVICE: &str = "modelgate.fleet";

/// A gateway serving on a bound address.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    health: tonic_health::server::HealthReporter,
    pub controller: Arc<Controller>,
    pub gateway: Arc<Gateway>,
    /// The one shutdown signal: both gRPC listeners, the controller's
    /// ticker, the fleet tasks, the TLS reloads and the metrics listener
    /// all end when it is cancelled.
    shutdown: CancellationToken,
    /// The Predict/KServe listener (drains on shutdown).
    task: JoinHandle<anyhow::Result<()>>,
    /// The admin listener (drains on shutdown).
    admin_task: JoinHandle<anyhow::Result<()>>,
    /// The ticker, fleet follower and health, and TLS reloads.
    background: Vec<JoinHandle<()>>,
    /// The metrics listener: it observes the token too, but serves on
    /// until `drained` is notified, so the drain can be watched.
    metrics_task: Option<JoinHandle<()>>,
    drained: Arc<Notify>,
    watcher: Option<RepositoryWatcher>,
    /// Fleet mode: the etcd store.
    fleet_store: Option<Arc<crate::store::EtcdStore>>,
    /// TLS on the Predict/KServe listener, if on.
    pub tls: Option<Arc<ReloadingConfig>>,
    /// TLS on the admin listener, if on.
    pub admin_tls: Option<Arc<ReloadingConfig>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer").field("addr", &self.addr).finish()
    }
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (bounded by the drain
    /// time), and returns when the server has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // Load balancers and probes see NOT_SERVING first.
        for service in HEALTH_SERVICES {
            self.health.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
        }
        // Both listeners stop accepting and drain; every background task ends.
        self.shutdown.cancel();
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        if let Some(store) = self.fleet_store.take() {
            // Gives up the lease: another replica leads at once.
            store.close().await;
        }
        // Stop loading new versions before draining.
        drop(self.watcher.take());
        let _ = (&mut self.admin_task).await;
        let result = self.task.await.context("server task panicked")?;
        // Bounded: a dead broker or bucket must not hold the shutdown up.
        if let Some(records) = self.gateway.record_sinks() {
            records.shutdown(RECORDS_SHUTDOWN_WAIT);
        }
        if let Err(e) = self.controller.save().await {
            tracing::error!(error = %e, "cannot persist the rollout state at shutdown");
        }
        self.drained.notify_one();
        if let Some(task) = self.metrics_task.take() {
            let _ = task.await;
        }
        result
    }
}

/// How long shutdown waits for the record sinks to write what is queued.
const RECORDS_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens every `--records` sink (the file sink in `--shadow-dir` when none
/// is given) behind its queue, charged to the shadow CPU budget.
fn start_record_sinks(
    config: &ServeConfig,
    budget: Option<Arc<modelgate_runtime::CpuBudget>>,
) -> anyhow::Result<crate::serving::records::RecordSinks> {
    use crate::serving::records::{FileWriter, QueueSettings, RecordSinks, RecordWriter, SinkContext};
    let ctx = SinkContext {
        replica: config.replica_id.clone(),
        file_max_bytes: config.shadow_file_bytes,
        kafka: config.kafka_security.clone(),
    };
    let mut writers: Vec<Box<dyn RecordWriter>> = Vec::new();
    if config.records.is_empty() {
        let w = FileWriter::open(&config.shadow_dir, &ctx.replica, ctx.file_max_bytes)
            .with_context(|| format!("cannot write shadow records to {}", config.shadow_dir.display()))?;
        writers.push(Box::new(w));
    }
    for url in &config.records {
        writers.push(crate::serving::records::open(url, &ctx)?);
    }
    let settings = QueueSettings { capacity: config.records_queue, ..QueueSettings::default() };
    RecordSinks::start(writers, settings, budget).context("cannot start the record sink threads")
}

/// Loads ONNX Runtime and every model, binds `config.listen` and starts serving.
/// Returns once the listener is bound and every version is READY or FAILED.
pub async fn start(config: ServeConfig) -> anyhow::Result<RunningServer> {
    // Before the slow part: a wrong TLS path fails at once, naming the file.
    let tls = config
        .tls
        .clone()
        .map(|files| ReloadingConfig::load("predict", files))
        .transpose()
        .context("TLS on the Predict listener")?;
    let admin_tls = config
        .admin_tls
        .clone()
        .map(|files| ReloadingConfig::load("admin", files))
        .transpose()
        .context("TLS on the admin listener")?;
    // Before anything opens files: models, state and clients all need them.
    let open_files = crate::api::connection::raise_open_file_limit();
    let threads = config.threads.max(1);
    // One session per critical thread and per shadow thread: no two threads share.
    let sessions = threads + config.shadow_threads;
    let load = modelgate_registry::LoadSettings { default_sessions: sessions, ..config.load.clone() };
    let (runtime, entries) = {
        let config = config.clone();
        let load = load.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Runtime, Vec<ModelEntry>)> {
            let runtime = Runtime::init(config.ort_lib.as_deref())?;
            tracing::info!(source = ?runtime.source(), version = runtime.version(), "ONNX Runtime loaded");
            let entries = modelgate_registry::load_repository(&runtime, &config.models, &load)?;
            Ok((runtime, entries))
        })
        .await
        .context("loading task panicked")??
    };
    let executor = Executor::start(ExecutorConfig {
        name: "infer".into(),
        threads,
        background: false,
        cpu_budget: None,
        slot_offset: 0,
    })
    .context("cannot start inference threads")?;
    // Shadow copies, their comparison and their records share one CPU budget.
    let budget = config
        .shadow_cpu_cores
        .map(|c| Arc::new(modelgate_runtime::CpuBudget::new(c, std::time::Duration::from_millis(20))));
    if let Some(b) = budget.as_ref().filter(|_| !config.shadow_budget_fixed) {
        modelgate_runtime::budget::follow_idle_cpu(b).context("cannot start the shadow budget's thread")?;
    }
    let shadow_executor = Executor::start(ExecutorConfig {
        name: "shadow".into(),
        threads: config.shadow_threads,
        background: true,
        cpu_budget: budget.clone(),
        slot_offset: threads,
    })
    .context("cannot start shadow threads")?;
    let records = Arc::new(start_record_sinks(&config, budget.clone())?);
    let stats = Arc::new(crate::serving::shadow::ShadowStats::default());
    let comparer = crate::serving::shadow::Comparer::start(
        Arc::clone(&stats),
        Some(Arc::clone(&records)),
        config.replica_id.clone(),
        4096,
        budget,
    )
    .context("cannot start the shadow comparison thread")?;
    let shadow = ShadowRunner {
        executor: shadow_executor,
        queue_capacity: config.shadow_queue,
        records: Some(records),
        replica: config.replica_id.clone(),
        stats,
        comparer: Arc::new(comparer),
    };
    let gateway = Arc::new(Gateway::new(
        ModelTable::new(entries.clone(), &HashMap::new()),
        executor,
        shadow,
        config.limits(),
    ));
    let (store, etcd): (Arc<dyn crate::store::StateStore>, _) = match &config.etcd {
        None => {
            let store = crate::store::FileStore::open(&config.state_dir)
                .with_context(|| format!("cannot open the state directory {}", config.state_dir.display()))?;
            (Arc::new(store), None)
        }
        Some(url) => {
            let (store, events) = crate::store::EtcdStore::start(
                url.clone(),
                config.etcd_access.clone(),
                config.etcd_audit_keep,
                config.replica_id.clone(),
                config.state_dir.clone(),
            )
            .await
            .context("cannot set up the etcd state store")?;
            tracing::info!(endpoints = ?url.endpoints, prefix = %url.prefix, replica = %config.replica_id, tls = config.etcd_access.tls(), user = config.etcd_access.user.as_ref().map(|u| u.0.as_str()), "fleet mode: rollout state in etcd");
            (Arc::clone(&store) as Arc<dyn crate::store::StateStore>, Some((store, events)))
        }
    };
    let fleet_store = etcd.as_ref().map(|(s, _)| Arc::clone(s));
    let controller = Arc::new(
        Controller::open(Arc::clone(&gateway), store, fleet_store.clone())
            .await
            .context("cannot restore rollout state")?,
    );
    let shutdown = CancellationToken::new();
    let drained = Arc::new(Notify::new());
    let mut background = Vec::new();
    if let Some((_, events)) = etcd {
        background.push(controller.spawn_follower(events, shutdown.clone()));
    }
    gateway.metrics().set_state_source(Arc::new(crate::server::scrape::GatewayState {
        gateway: Arc::clone(&gateway),
        controller: Arc::clone(&controller),
    }));
    background.push(controller.spawn_ticker(config.tick, shutdown.clone()));
    let watcher = config.watch.then(|| {
        modelgate_registry::watch::watch(
            runtime.clone(),
            &config.models,
            load,
            WatchSettings { rescan: config.rescan, settle: config.settle },
            entries,
            Arc::new(RepositoryHooks {
                gateway: Arc::clone(&gateway),
                controller: Arc::clone(&controller),
                runtime: tokio::runtime::Handle::current(),
            }) as Arc<dyn RepositoryListener>,
        )
    });
    if let Some(w) = &watcher {
        let handle = w.handle();
        controller.set_retirer(Box::new(move |model, version| handle.retire(model, version))).await;
    }

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let mutual = admin_tls.as_ref().is_some_and(|c| c.mutual());
    if !admin_addr.ip().is_loopback() {
        if config.admin_tokens.is_empty() && !mutual {
            tracing::warn!(%admin_addr, "the admin listener is not on loopback and has no token or client CA: anyone who reaches it can change rollouts");
        } else if admin_tls.is_none() {
            tracing::warn!(%admin_addr, "the admin listener is not on loopback and has no TLS: its tokens cross the network in plaintext");
        }
    }
    let auth = AdminAuth::new(config.admin_tokens.clone());
    let admin =
        AdminServer::with_interceptor(AdminService::new(Arc::clone(&gateway), Arc::clone(&controller)), {
            let auth = auth.clone();
            move |req| auth.check(req)
        });
    // Reflection on the admin port passes the same check as Admin itself: it
    // describes the admin API, and with tokens set nothing there answers a
    // caller without one. (The Predict port's reflection stays public, like
    // Predict.)
    let (admin_reflection, admin_reflection_alpha) = reflection(ADMIN_REFLECTION)?;
    let admin_reflection = tonic::service::interceptor::InterceptedService::new(admin_reflection, {
        let auth = auth.clone();
        move |req| auth.check(req)
    });
    let admin_reflection_alpha =
        tonic::service::interceptor::InterceptedService::new(admin_reflection_alpha, move |req| {
            auth.check(req)
        });
    let limits = &config.connections;
    limits.check(config.max_request_bytes)?;
    let (predict_cap, admin_cap) = crate::api::connection::fit_to_open_files(limits, open_files);
    let gate = |listener: &'static str, cap: usize, tcp_keepalive: Option<std::time::Duration>| {
        let bodies = BodyBudget::new(
            listener,
            limits.body_budget_bytes,
            limits.connection_body_bytes,
            limits.body_timeout,
            Arc::clone(gateway.metrics()),
        );
        let gate = Gate::new(
            listener,
            cap,
            limits.handshake_timeout,
            tcp_keepalive,
            Arc::clone(&bodies),
            Arc::clone(gateway.metrics()),
        );
        (gate, BodyLimitLayer::new(bodies))
    };
    let (admin_gate, admin_bodies) = gate("admin", admin_cap, None);
    // Admin calls get server spans like Predict's (theirs come from the
    // handlers, which know the model and version).
    let admin_router = limits
        .server()
        .layer(admin_bodies)
        .layer(crate::telemetry::server_span::ServerSpanLayer)
        .add_service(admin)
        .add_service(admin_reflection)
        .add_service(admin_reflection_alpha);
    let admin_task = tokio::spawn({
        let serve = serve_grpc(admin_router, admin_listener, admin_gate, admin_tls.clone(), shutdown.clone());
        async move { serve.await.context("admin server failed") }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the Predict listener is not on loopback and has no TLS (--tls-cert/--tls-key): requests cross the network in plaintext");
    }
    for c in [&tls, &admin_tls].into_iter().flatten() {
        tracing::info!(listener = c.listener(), cert = %c.files().cert.display(), not_after = c.not_after(), mutual = c.mutual(), "TLS on");
    }
    let keepalive = Some(std::time::Duration::from_secs(60));
    let (predict_gate, predict_bodies) = gate("predict", predict_cap, keepalive);
    let predict_server = limits.server();

    let predict = PredictServer::new(PredictService::new(Arc::clone(&gateway)))
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    // KServe v2 on the same port, through the same gateway path.
    let kserve = modelgate_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        crate::api::kserve::KserveService::new(Arc::clone(&gateway)),
    )
    .max_decoding_message_size(config.max_request_bytes)
    .max_encoding_message_size(usize::MAX);
    // Health: every model was loaded and warmed before this point (start
    // returns only then), so the services start SERVING; stop() turns them
    // NOT_SERVING before draining.
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        health.set_service_status(service, tonic_health::ServingStatus::Serving).await;
    }
    // Fleet mode: "modelgate.fleet" is SERVING while etcd answers. Serving
    // itself goes on without it (fail static), so the overall status stays
    // SERVING and Kubernetes keeps the pod.
    if let Some(store) = &fleet_store {
        let health = health.clone();
        let store = Arc::clone(store);
        let shutdown = shutdown.clone();
        background.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let up = store.connected();
                if last != Some(up) {
                    let status = if up {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status(FLEET_HEALTH_SERVICE, status).await;
                    last = Some(up);
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        }));
    }
    let (reflection_service, reflection_alpha) = reflection(PREDICT_REFLECTION)?;
    let metrics_task = match config.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (metrics)"))?;
            let metrics_addr = listener.local_addr()?;
            let metrics = Arc::clone(gateway.metrics());
            // Stops after the drain and the final save, not at the token:
            // the drain shows in the metrics.
            let stop = {
                let (shutdown, drained) = (shutdown.clone(), Arc::clone(&drained));
                async move {
                    shutdown.cancelled().await;
                    drained.notified().await;
                }
            };
            let task = tokio::spawn(async move {
                if let Err(e) = crate::telemetry::metrics::serve(listener, metrics, stop).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
            Some((metrics_addr, task))
        }
        None => None,
    };
    let metrics_addr = metrics_task.as_ref().map(|(a, _)| *a);
    let metrics_task = metrics_task.map(|(_, task)| task);
    let drain = config.drain;
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        async move {
            let router = predict_server
                // Tensors are large messages: HTTP/2's 64 KiB default windows
                // would stall a client on WINDOW_UPDATE round trips.
                .initial_stream_window_size(Some(1 << 20))
                .initial_connection_window_size(Some(4 << 20))
                .layer(predict_bodies)
                .layer(tower::util::MapResponseLayer::new(oversize_to_resource_exhausted))
                .add_service(predict)
                .add_service(kserve)
                .add_service(health_service)
                .add_service(reflection_service)
                .add_service(reflection_alpha);
            let serve = serve_grpc(router, listener, predict_gate, tls, shutdown.clone());
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => r.context("gRPC server failed"),
                () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                    tracing::warn!(drain_seconds = drain.as_secs_f64(), "drain time over; closing remaining connections");
                    Ok(())
                }
            }
        }
    });
    for c in [&tls, &admin_tls].into_iter().flatten() {
        background.push(c.spawn_watch(config.tls_poll, Arc::clone(gateway.metrics()), shutdown.clone()));
    }
    Ok(RunningServer {
        addr,
        admin_addr,
        metrics_addr,
        health,
        controller,
        gateway,
        shutdown,
        task,
        admin_task,
        background,
        metrics_task,
        drained,
        watcher,
        fleet_store,
        tls,
        admin_tls,
    })
}

/// Serves `router` on `listener` through its connection gate, with TLS when
/// `tls` is set, until `shutdown` is cancelled; then drains. The one serving
/// path of both gRPC listeners (Predict/KServe and admin).
async fn serve_grpc<L, ResBody>(
    router: tonic::transport::server::Router<L>,
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
    tls: Option<Arc<ReloadingConfig>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stop = shutdown.cancelled_owned();
    match tls {
        Some(tls) => {
            let incoming = incoming(listener, gate, crate::api::tls::handshake(tls));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        None => router.serve_with_incoming_shutdown(incoming(listener, gate, plaintext), stop).await,
    }
}

/// A plaintext connection needs no handshake before its HTTP/2 preface.
fn plaintext(stream: tokio::net::TcpStream) -> std::future::Ready<std::io::Result<tokio::net::TcpStream>> {
    std::future::ready(Ok(stream))
}

/// What one listener's reflection describes: the services it serves (the
/// reflection services themselves are added) and the files defining them.
struct Reflected {
    services: &'static [&'static str],
    files: &'static [&'static [u8]],
}

/// The Predict port: Predict, KServe v2, health.
const PREDICT_REFLECTION: Reflected = Reflected {
    services: &["modelgate.v1.Predict", "inference.GRPCInferenceService", "grpc.health.v1.Health"],
    files: &[
        modelgate_proto::v1::FILE_DESCRIPTOR_SET,
        modelgate_proto::inference::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ],
};

/// The admin port: Admin only.
const ADMIN_REFLECTION: Reflected =
    Reflected { services: &["modelgate.v1.Admin"], files: &[modelgate_proto::v1::FILE_DESCRIPTOR_SET] };

/// gRPC server reflection, v1 and v1alpha (grpcurl asks v1; Python's
/// grpcio-reflection and older tools ask v1alpha), listing exactly the
/// services of one listener, so grpcurl, grpcui and evans work without the
/// protos and list nothing the port would answer UNIMPLEMENTED.
#[allow(clippy::type_complexity)]
fn reflection(
    on: Reflected,
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for f in on.files {
            b = b.register_encoded_file_descriptor_set(f);
        }
        for s in on.services {
            b = b.with_service_name(*s);
        }
        b.with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let v1 = builder().build_v1().context("cannot build the reflection service (v1)")?;
    let v1alpha = builder().build_v1alpha().context("cannot build the reflection service (v1alpha)")?;
    Ok((v1, v1alpha))
}

/// The ready line's sample command: a request of zeros shaped like the first
/// READY model's inputs, which every model accepts.
pub fn sample_predict_command(program: &str, addr: &str, table: &ModelTable) -> Option<String> {
    let model = table.sorted().into_iter().find(|m| m.champion().is_some())?;
    let ready = model.champion()?;
    let sig = ready.model().signature();
    fn zeros(shape: &[i64]) -> String {
        match shape.split_first() {
            None => "0".into(),
            Some((&n, rest)) => {
                let inner = zeros(rest);
                format!("[{}]", vec![inner; usize::try_from(n).unwrap_or(0)].join(","))
            }
        }
    }
    let input = match sig.inputs.as_slice() {
        [only] => zeros(&only.unit_shape()),
        many => {
            let parts: Vec<String> =
                many.iter().map(|s| format!("\"{}\":{}", s.name, zeros(&s.unit_shape()))).collect();
            format!("{{{}}}", parts.join(","))
        }
    };
    Some(format!("{program} predict --addr {addr} --model {} --input '{input}'", model.name))
}

/// One line per model for the start-up summary.
pub fn describe_table(table: &ModelTable) -> Vec<String> {
    table
        .sorted()
        .into_iter()
        .map(|m| {
            let versions: Vec<String> = m
                .versions
                .values()
                .map(|v| match &v.state {
                    VersionState::Ready(_) => format!("v{} READY", v.version),
                    VersionState::Failed(reason) => format!("v{} FAILED ({reason})", v.version),
                })
                .collect();
            let champion = m.champion().map_or("none".to_string(), |c| format!("v{}", c.version));
            format!("  {}: {} — champion {champion}", m.name, versions.join(", "))
        })
        .collect()
}

/// What the repository watcher tells the serving side: new snapshots go to
/// the gateway; "is this version in use" asks both the routing and the
/// controller; a version dropped in starts the model's `on_new_version` plan.
struct RepositoryHooks {
    gateway: Arc<Gateway>,
    controller: Arc<Controller>,
    runtime: tokio::runtime::Handle,
}

impl RepositoryListener for RepositoryHooks {
    fn publish(&self, entries: &[ModelEntry]) {
        self.gateway.publish_entries(entries.to_vec());
    }

    fn in_use(&self, model: &str, version: u64) -> bool {
        self.gateway.in_use(model, version) || self.controller.version_in_use(model, version)
    }

    fn watcher_panicked(&self, _message: &str) {
        self.gateway.metrics().watcher_panics.inc();
    }

    fn version_ready(&self, model: &str, version: u64, config: &modelgate_registry::ModelConfig) {
        use modelgate_registry::OnNewVersion;
        use modelgate_rollout::{Plan, ShadowPlan, plan};
        let plan = match config.on_new_version.plan {
            OnNewVersion::None => return,
            OnNewVersion::Shadow => {
                Plan::Shadow(ShadowPlan { versions: vec![version], fraction_percent: 100.0 })
            }
            OnNewVersion::Canary => {
                let mut canary = Plan::canary(version);
                if let Plan::Canary { auto_advance, .. } = &mut canary {
                    *auto_advance = config.on_new_version.auto_advance;
                }
                canary
            }
            OnNewVersion::BlueGreen => {
                Plan::BlueGreen { green: version, retention_secs: plan::DEFAULT_RETENTION_SECS }
            }
        };
        let controller = Arc::clone(&self.controller);
        let model = model.to_string();
        let strategy = plan.strategy();
        self.runtime.spawn(async move {
            let auto = if matches!(plan, Plan::Canary { auto_advance: true, .. }) { " (auto_advance)" } else { "" };
            let reason = format!("version {version} was dropped into the repository; on_new_version = {strategy}{auto}");
            match controller.start(&model, plan, Default::default(), &modelgate_rollout::Actor::system(), Some(reason)).await {
                Ok(r) => tracing::info!(model = %model, version, rollout = %r.id, strategy, "started by on_new_version"),
                Err(e) => tracing::warn!(model = %model, version, error = %e, "on_new_version could not start its plan"),
            }
        });
    }
}
