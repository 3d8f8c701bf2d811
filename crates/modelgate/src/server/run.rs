//! `modelgate serve`: start the gateway, print where everything listens and
//! a command to try, serve until SIGINT/SIGTERM, then drain and stop.

use crate::server::config::{ServeArgs, ServeConfig};
use crate::telemetry::otel::LogFormat;

/// Runs `modelgate serve` to the end: the whole life of the server process.
pub async fn serve(log_format: LogFormat, args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = crate::telemetry::otel::init(log_format, &args.trace_config())?;
    let config = ServeConfig::try_from(args)?;
    let fleet = config
        .etcd
        .as_ref()
        .map(|u| format!("{} {} as replica {}", u.endpoints.join(","), u.prefix, config.replica_id));
    let server = crate::server::start(config).await?;
    let table = server.gateway.table();
    let program = std::env::args().next().unwrap_or_else(|| "modelgate".into());
    println!("modelgate ready: Predict (modelgate.v1) on {}", server.addr);
    println!("  KServe v2 (inference.GRPCInferenceService), gRPC health and reflection on the same port");
    println!("  admin on {}", server.admin_addr);
    if let Some(tls) = &server.tls {
        println!(
            "  TLS on the Predict port: certificate {}, reloaded when it changes",
            tls.files().cert.display()
        );
    }
    if let Some(tls) = &server.admin_tls {
        match &tls.files().client_ca {
            Some(ca) => println!(
                "  mutual TLS on the admin port: certificate {}, client certificates signed by {}",
                tls.files().cert.display(),
                ca.display()
            ),
            None => println!("  TLS on the admin port: certificate {}", tls.files().cert.display()),
        }
    }
    if let Some(m) = server.metrics_addr {
        println!("  metrics on http://{m}/metrics");
    }
    if let Some(f) = fleet {
        println!("  fleet: rollout state in etcd {f}");
    }
    if telemetry.exporting() {
        println!("  traces exported over OTLP");
    }
    for line in crate::server::describe_table(&table) {
        println!("{line}");
    }
    let addr = match server.tls {
        Some(_) => format!("https://{}", server.addr),
        None => server.addr.to_string(),
    };
    match crate::server::sample_predict_command(&program, &addr, &table) {
        Some(cmd) => println!("try: {cmd}"),
        None => println!("no READY model to try; check the log above"),
    }
    shutdown_signal().await;
    tracing::info!("shutting down: NOT_SERVING, draining in-flight requests");
    let stopped = server.stop().await;
    // Spans still queued go out last, after the drain.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    tracing::info!("stopped");
    stopped
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
