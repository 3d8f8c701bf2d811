//! The modelgate binary: `serve` and the client subcommands.

use std::process::ExitCode;

use clap::Parser;
use modelgate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    let result = match cli.command {
        Command::Serve(args) => modelgate::serve(cli.log_format, *args).await,
        Command::Predict(args) => modelgate::cli::predict::run(args).await,
        Command::Admin { conn, call } => modelgate::cli::admin::run(conn, call).await,
        Command::Status { model, watch, interval, conn } => {
            modelgate::cli::admin::status(conn, model, watch.then_some(interval)).await
        }
        Command::Analysis { model, conn } => modelgate::cli::admin::analysis(conn, model).await,
        Command::Rollback { model, reason, conn } => {
            let call = modelgate::cli::admin::AdminCommand::Rollback(modelgate::cli::admin::ModelArg {
                model,
                reason,
                if_stage: None,
            });
            modelgate::cli::admin::run(conn, call).await
        }
        Command::Outcome(args) => modelgate::cli::outcome::run(args).await,
        Command::Shadow { call: modelgate::cli::shadow_report::ShadowCommand::Report(args) } => {
            modelgate::cli::shadow_report::run(args).await
        }
        Command::Completions { shell } => {
            modelgate::cli::completions(shell);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => modelgate::cli::output::report_error(&e, json),
    }
}
