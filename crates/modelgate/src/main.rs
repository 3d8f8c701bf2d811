//! The modelgate binary: `serve` and the client subcommands.

use std::process::ExitCode;

use clap::Parser;
use modelgate::cli::predict::CallError;
use modelgate::cli::{Cli, Command, LogFormat};
use modelgate::config::ServeConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(cli.log_format, *args).await,
        Command::Predict(args) => modelgate::cli::predict::run(args).await,
        Command::Admin { conn, call } => modelgate::cli::admin::run(conn, call).await,
        Command::Status { model, conn } => modelgate::cli::admin::status(conn, model).await,
        Command::Analysis { model, conn } => modelgate::cli::admin::analysis(conn, model).await,
        Command::Rollback { model, reason, conn } => {
            let call = modelgate::cli::admin::AdminCommand::Rollback(modelgate::cli::admin::ModelArg {
                model,
                reason,
                if_stage: None,
            });
            modelgate::cli::admin::run(conn, call).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A gRPC error prints as `CODE: message`; anything else with its causes.
            match e.downcast_ref::<CallError>() {
                Some(call) => eprintln!("error: {call}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(log_format: LogFormat, args: modelgate::config::ServeArgs) -> anyhow::Result<()> {
    let telemetry = modelgate::otel::init(log_format, &args.trace_config())?;
    let config = ServeConfig::try_from(args)?;
    let fleet = config
        .etcd
        .as_ref()
        .map(|u| format!("{} {} as replica {}", u.endpoints.join(","), u.prefix, config.replica_id));
    let server = modelgate::start(config).await?;
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
    for line in modelgate::server::describe_table(&table) {
        println!("{line}");
    }
    let addr = match server.tls {
        Some(_) => format!("https://{}", server.addr),
        None => server.addr.to_string(),
    };
    match modelgate::server::sample_predict_command(&program, &addr, &table) {
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
