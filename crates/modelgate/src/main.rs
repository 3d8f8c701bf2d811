//! The modelgate binary: `serve` and the client subcommands.

use std::process::ExitCode;

use clap::Parser;
use modelgate::cli::predict::CallError;
use modelgate::config::{Cli, Command, LogFormat, ServeConfig};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format);
            serve(args).await
        }
        Command::Predict(args) => modelgate::cli::predict::run(args).await,
        Command::Admin { conn, call } => modelgate::cli::admin::run(conn, call).await,
        Command::Status { model, conn } => modelgate::cli::admin::status(conn, model).await,
        Command::Analysis { model, conn } => modelgate::cli::admin::analysis(conn, model).await,
        Command::Rollback { model, reason, conn } => {
            let call = modelgate::cli::admin::AdminCommand::Rollback(modelgate::cli::admin::ModelArg {
                model,
                reason,
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

async fn serve(args: modelgate::config::ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::try_from(args)?;
    let server = modelgate::start(config).await?;
    let table = server.gateway.table();
    let program = std::env::args().next().unwrap_or_else(|| "modelgate".into());
    println!("modelgate ready: Predict (modelgate.v1) on {}", server.addr);
    println!("  admin on {}", server.admin_addr);
    for line in modelgate::server::describe_table(&table) {
        println!("{line}");
    }
    match modelgate::server::sample_predict_command(&program, server.addr, &table) {
        Some(cmd) => println!("try: {cmd}"),
        None => println!("no READY model to try; check the log above"),
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.stop().await
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
