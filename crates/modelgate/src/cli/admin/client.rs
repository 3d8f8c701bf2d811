//! The connection to the admin listener: its flags (address, token, TLS,
//! `--json`) and a client that sends the bearer token with every call.

use anyhow::Context;
use clap::Args;
use modelgate_proto::v1::admin_client::AdminClient;
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// How to reach the admin listener.
#[derive(Debug, Clone, Args)]
pub struct AdminConn {
    /// Admin address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long, env = "MODELGATE_ADMIN_ADDR", default_value = "127.0.0.1:50052", global = true)]
    pub admin_addr: String,
    /// Bearer token for the admin listener.
    #[arg(long, env = "MODELGATE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::cli::ClientTls,
}

#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Connects to the admin listener, attaching the token to every call.
pub async fn connect(conn: &AdminConn) -> anyhow::Result<Client> {
    let channel = conn
        .tls
        .endpoint("--admin-addr", &conn.admin_addr)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to the admin listener at {}", conn.admin_addr))?;
    let bearer = match &conn.token {
        Some(t) => Some(format!("Bearer {t}").parse().context("the admin token is not valid metadata")?),
        None => None,
    };
    Ok(AdminClient::with_interceptor(channel, Bearer(bearer)))
}
