//! cf-gateway: bridges Hono commands over MQTT to container-factory's bus.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cf_bus::config::Config;
use cf_gateway::inbound::hono::{HonoMqttSource, MqttSettings};
use cf_gateway::outbound::nats::{answer_results, NatsJobQueue};
use cf_gateway::service::Gateway;
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = config_path().unwrap_or_else(|e| usage_error(&e));
    let config = Config::load(path.as_deref()).unwrap_or_else(|e| usage_error(&e));
    cf_bus::telemetry::init();
    let thing = config.thing_id().unwrap_or_else(|e| usage_error(&e));
    let (host, port) = config.mqtt_endpoint().unwrap_or_else(|e| usage_error(&e));
    info!(version = env!("CARGO_PKG_VERSION"), thing = %thing, "cf-gateway starting");

    let js = cf_bus::connect(&config.nats.url, "cf-gateway").await?;
    cf_bus::ensure_topology(&js, Duration::from_secs(config.ledger_ttl_secs)).await?;
    let mqtt = HonoMqttSource::new(MqttSettings {
        host,
        port,
        client_id: config
            .mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("cf-gateway-{thing}")),
        credentials: config.mqtt.username.clone().map(|u| {
            (
                u,
                config
                    .mqtt
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
            )
        }),
        ready_file: config.ready_file.clone(),
    });
    let gateway = Arc::new(Gateway::new(
        thing,
        config.max_payload_bytes,
        NatsJobQueue::new(js.clone()),
        mqtt.answers(),
    ));

    let results = tokio::spawn(answer_results(js, Arc::clone(&gateway)));
    tokio::select! {
        () = mqtt.run(gateway) => {}
        r = results => error!(result = ?r, "job result consumer stopped"),
        () = cf_bus::shutdown::requested() => {}
    }
    Ok(())
}

/// Bad arguments or configuration: one line, and the exit code of
/// sysexits' EX_CONFIG, before any socket is opened.
fn usage_error(e: &dyn std::fmt::Display) -> ! {
    eprintln!("cf-gateway: {e}");
    std::process::exit(78)
}

/// `--config <file>`, the only command-line option.
fn config_path() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--config"), Some(path)) => Ok(Some(path.into())),
        _ => anyhow::bail!("usage: cf-gateway [--config <file.toml>]"),
    }
}
