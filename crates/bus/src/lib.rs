//! The internal bus between cf-gateway and cf-factory: NATS JetStream
//! (server 2.9 or later) carrying the protobuf messages of `proto/bus.proto`.
//!
//! # Layout
//! - [`config`]: the configuration file and environment of both services.
//! - [`pb`]: the generated messages, and their conversions to `cf-core` types.
//! - [`shutdown`]: waiting for SIGTERM or SIGINT.
//! - [`telemetry`]: the tracing subscriber of both binaries.
//! - [`subjects`]: every subject, stream, consumer and bucket name.
//! - [`connect`] and [`ensure_topology`]: the client and the streams both
//!   services rely on.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

pub mod config;
pub mod pb;
pub mod shutdown;
pub mod telemetry;

/// Names on the bus, declared once.
pub mod subjects {
    /// Stream of create jobs (work queue: a job is gone once acknowledged).
    pub const JOBS_STREAM: &str = "CF_JOBS";
    /// Subject of create jobs.
    pub const CREATE_JOBS: &str = "cf.jobs.create";
    /// Durable consumer of the factory on [`JOBS_STREAM`].
    pub const FACTORY_CONSUMER: &str = "cf-factory";
    /// Stream of job results (work queue).
    pub const RESULTS_STREAM: &str = "CF_RESULTS";
    /// Subject of job results.
    pub const RESULTS: &str = "cf.results";
    /// Durable consumer of the gateway on [`RESULTS_STREAM`].
    pub const GATEWAY_CONSUMER: &str = "cf-gateway";
    /// Key-value bucket of the request ledger.
    pub const LEDGER_BUCKET: &str = "cf-requests";

    /// Subject of the lifecycle events of one container.
    pub fn container_events(id: &str) -> String {
        format!("cf.events.{id}")
    }
}

/// Connecting to NATS or declaring the streams failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct BusError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl BusError {
    /// Wraps `source` with what was being done.
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Connects to NATS at `url` and returns its JetStream context. The client
/// reconnects by itself for as long as the process lives.
///
/// # Errors
/// [`BusError`] when the first connection fails.
pub async fn connect(url: &str, name: &str) -> Result<jetstream::Context, BusError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| BusError::new(format!("failed to connect to NATS at {url}"), e))?;
    Ok(jetstream::new(client))
}

/// Declares the streams and the ledger bucket (idempotent) and returns the
/// ledger. `ledger_ttl` is how long a correlation-id is remembered.
///
/// # Errors
/// [`BusError`] when JetStream refuses a declaration.
pub async fn ensure_topology(
    js: &jetstream::Context,
    ledger_ttl: Duration,
) -> Result<kv::Store, BusError> {
    for (name, subject) in [
        (subjects::JOBS_STREAM, subjects::CREATE_JOBS),
        (subjects::RESULTS_STREAM, subjects::RESULTS),
    ] {
        js.get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::new(format!("failed to declare stream {name}"), e))?;
    }
    ensure_ledger(js, ledger_ttl).await
}

/// Declares the ledger's KV stream by hand: the client's own bucket
/// creation first asks for account info, whose reply from nats-server 2.9
/// lacks fields that async-nats 0.52 requires. The stream below is what a
/// KV bucket with history 1 is made of.
async fn ensure_ledger(js: &jetstream::Context, ttl: Duration) -> Result<kv::Store, BusError> {
    let bucket = subjects::LEDGER_BUCKET;
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::new("failed to declare the request ledger stream", e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| BusError::new("failed to open the request ledger bucket", e))
}
