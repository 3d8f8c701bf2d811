//! Client subcommands: small gRPC clients a person reaches for first.

/// `print!` for the client commands: when what reads stdout has gone away
/// (`modelgate status | head -1`) the process ends quietly with status 0, as
/// Unix tools do, where `print!` would panic (exit 101).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

/// [`out!`] with a newline: `println!` for the client commands.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod admin;
pub mod outcome;
pub mod output;
pub mod predict;
pub mod shadow_report;
pub mod when;

/// Writes to stdout and flushes; see [`out!`]. Any other write error is one
/// line on stderr and exit status 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub use crate::telemetry::metrics::code_name;
pub use crate::telemetry::otel::LogFormat;

/// modelgate: a gRPC model-serving gateway for ONNX models.
#[derive(Debug, Parser)]
#[command(name = "modelgate", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "MODELGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models in a model repository over gRPC.
    Serve(Box<crate::server::config::ServeArgs>),
    /// Call Predict on a running gateway and print the outputs.
    Predict(predict::PredictArgs),
    /// Admin calls: rollouts, models, audit events, sample sizes.
    Admin {
        #[command(flatten)]
        conn: admin::AdminConn,
        #[command(subcommand)]
        call: admin::AdminCommand,
    },
    /// Versions, roles, weights, stage and progress of every model (or one).
    Status {
        /// Model name; every model with a rollout when left out.
        #[arg(required_if_eq("watch", "true"))]
        model: Option<String>,
        /// Redraw the model's rollout until it ends: stage, weights, progress
        /// toward the step's samples and time, the verdict and what it waits
        /// for. Exits 0 when promoted or completed, 3 rolled back, 4 aborted.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch (0.1 to 3600).
        #[arg(long, default_value_t = 2.0, value_parser = crate::server::config::seconds(0.1, 3600.0))]
        interval: f64,
        #[command(flatten)]
        conn: admin::AdminConn,
    },
    /// The statistics behind a model's automatic decisions: per arm n, means
    /// and intervals, always-valid comparisons, triggers, SRM, PSI, metrics.
    Analysis {
        /// Model name.
        model: String,
        #[command(flatten)]
        conn: admin::AdminConn,
    },
    /// Roll a model back to its champion now: the one-command rollback.
    Rollback {
        /// Model name.
        model: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "manual rollback")]
        reason: String,
        #[command(flatten)]
        conn: admin::AdminConn,
    },
    /// Report a business outcome (a click, a conversion, revenue) for a
    /// served request: RecordOutcome, what A/B tests and the champion-
    /// challenger gate judge on.
    Outcome(outcome::OutcomeArgs),
    /// Offline analysis of shadow records: `shadow report <model> --from <dir>`.
    Shadow {
        #[command(subcommand)]
        call: shadow_report::ShadowCommand,
    },
    /// Print a shell completion script: `modelgate completions bash >
    /// /etc/bash_completion.d/modelgate` (zsh: into a directory on $fpath as
    /// `_modelgate`; fish: ~/.config/fish/completions/modelgate.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Whether the command was asked for JSON output (its errors are then
    /// JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Serve(_) | Command::Completions { .. } => false,
            Command::Predict(a) => a.json,
            Command::Outcome(a) => a.json,
            Command::Shadow { call: shadow_report::ShadowCommand::Report(a) } => a.json,
            Command::Admin { conn, .. }
            | Command::Status { conn, .. }
            | Command::Analysis { conn, .. }
            | Command::Rollback { conn, .. } => conn.json,
        }
    }
}

/// `modelgate completions <shell>`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "modelgate", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
}

/// Accepts `host:port` as well as a full `http://host:port` URI; `tls`
/// makes a bare `host:port` an `https://` one.
pub fn endpoint_uri(addr: &str, tls: bool) -> String {
    match (addr.contains("://"), tls) {
        (true, _) => addr.to_string(),
        (false, true) => format!("https://{addr}"),
        (false, false) => format!("http://{addr}"),
    }
}

/// TLS to the gateway. An `https://` address or any of these flags turns it
/// on; the gateway's certificate is checked against `--tls-ca`, or the
/// system's roots without it.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTls {
    /// CA certificate(s) (PEM) the gateway's certificate must chain to. Unset: the system's roots.
    #[arg(long, env = "MODELGATE_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with `--tls-key`.
    #[arg(long, env = "MODELGATE_CLIENT_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "MODELGATE_CLIENT_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,
    /// The name the gateway's certificate must carry. Default: the address's host.
    #[arg(long, env = "MODELGATE_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
}

impl ClientTls {
    fn requested(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some()
    }

    /// The endpoint for `addr` (named `flag` in errors), with TLS when asked for.
    pub fn endpoint(&self, flag: &str, addr: &str) -> anyhow::Result<Endpoint> {
        let uri = endpoint_uri(addr, self.requested());
        let endpoint = Endpoint::from_shared(uri.clone()).with_context(|| format!("bad {flag} {addr}"))?;
        if !uri.starts_with("https://") {
            if self.requested() {
                anyhow::bail!("{flag} {addr} is plaintext http://, but TLS flags were given: use https://");
            }
            return Ok(endpoint);
        }
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &self.tls_ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config
                .identity(Identity::from_pem(read("client certificate", cert)?, read("client key", key)?));
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        endpoint.tls_config(config).context("cannot set up TLS")
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every argument of every subcommand, with its command path, that has
    /// no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
            out.push(format!("{path} (the command)"));
        }
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            undocumented(sub, &path, out);
        }
    }

    #[test]
    fn every_command_and_argument_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
