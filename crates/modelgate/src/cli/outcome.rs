//! `modelgate outcome`: RecordOutcome from the command line, for a person
//! trying an A/B test or a script replaying outcomes from elsewhere.

use anyhow::Context;
use clap::{ArgGroup, Args};
use modelgate_proto::v1 as pb;

use crate::cli::admin::role_name;
use crate::cli::output::print_json;
use crate::cli::predict::CallError;
use crate::cli::when::parse_when_ms;

/// Flags of `modelgate outcome`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("request").required(true).args(["request_id", "routing_key"])))]
pub struct OutcomeArgs {
    /// Model name.
    pub model: String,
    /// The served request's id (PredictResponse.request_id).
    #[arg(long)]
    pub request_id: Option<String>,
    /// The routing key the request was served under (e.g. the user id), when
    /// the request id is not at hand.
    #[arg(long)]
    pub routing_key: Option<String>,
    /// The metric's name, as the rollout's plan names it (e.g. conversion).
    #[arg(long)]
    pub metric: String,
    /// The metric's value (e.g. 1 for a conversion, 0 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub value: f64,
    /// When the outcome happened: RFC 3339, unix ms, or an age such as 10m
    /// (that long ago). Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// Gateway address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long, env = "MODELGATE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Print one JSON object (joined, version, role).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::cli::ClientTls,
}

/// Records the outcome and says which version it was joined to. An outcome
/// the gateway could not join (unknown or expired request id, no rollout) is
/// not an error of the call: it is said, and the status is 0.
pub async fn run(args: OutcomeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.value.is_finite(), "--value must be a finite number, not {}", args.value);
    let timestamp_ms = match &args.at {
        Some(at) => parse_when_ms(at).context("--at")?,
        None => 0,
    };
    let channel = args
        .tls
        .endpoint("--addr", &args.addr)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let mut client = pb::predict_client::PredictClient::new(channel);
    let req = pb::RecordOutcomeRequest {
        model: args.model.clone(),
        request_id: args.request_id.clone().unwrap_or_default(),
        routing_key: args.routing_key.clone().unwrap_or_default(),
        metric: args.metric.clone(),
        value: args.value,
        timestamp_ms,
    };
    let r = client.record_outcome(req).await.map_err(CallError)?.into_inner();
    if args.json {
        return print_json(&serde_json::json!({
            "joined": r.joined,
            "version": r.version,
            "role": role_name(r.role),
        }));
    }
    if r.joined {
        outln!(
            "{} = {} recorded for {} v{} ({})",
            args.metric,
            args.value,
            args.model,
            r.version,
            role_name(r.role)
        );
    } else {
        outln!(
            "{} = {} not joined: the gateway does not know that request (unknown or expired id) or {} has no \
             live rollout; counted, not stored",
            args.metric,
            args.value,
            args.model
        );
    }
    Ok(())
}
