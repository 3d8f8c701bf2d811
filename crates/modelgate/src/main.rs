//! The modelgate binary: `serve` and the client subcommands.

use std::process::ExitCode;

use clap::Parser;
use modelgate::cli::predict::CallError;
use modelgate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => modelgate::serve(cli.log_format, *args).await,
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
