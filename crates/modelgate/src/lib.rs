//! modelgate: the gateway binary's library. The request path lives in
//! [`gateway`], protocol edges in [`service`] and [`convert`], errors map to
//! gRPC statuses in [`error`], and [`server`] starts and stops it all.
//! [`hostile`] runs untrusted bytes through the decoders for the fuzz targets.

pub mod admin;
pub mod analysis;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod controller;
pub mod convert;
pub mod error;
pub mod gateway;
pub mod gateway_error;
pub mod hostile;
pub mod importance;
pub mod kserve;
pub mod metrics;
pub mod otel;
pub mod outcome;
pub mod output_scores;
pub mod request_body;
pub mod scrape;
pub mod server;
pub mod service;
pub mod shadow;
pub mod state;
pub mod tls;

pub use config::ServeConfig;
pub use server::{RunningServer, start};
