//! cf-factory: carries out create jobs on containerd.
//!
//! `cf-factory [--config <file>]` runs the service;
//! `cf-factory [--config <file>] teardown` removes every container of the
//! configured namespace with its task, network and snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cf_bus::config::Config;
use cf_core::ports::{EventSink, RequestLedger};
use cf_factory::inbound::jobs::consume_jobs;
use cf_factory::outbound::cni::{CniConfig, CniNetwork};
use cf_factory::outbound::containerd::{ContainerdRuntime, RuntimeSettings, TaskExited};
use cf_factory::outbound::ctrd::Ctrd;
use cf_factory::outbound::events::NatsEvents;
use cf_factory::outbound::image::{ImageStore, RegistrySettings};
use cf_factory::outbound::ledger::KvLedger;
use cf_factory::service::Factory;
use tokio::sync::mpsc::{self, Receiver, Sender};
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config_path, teardown) = parse_args().unwrap_or_else(|e| usage_error(&e));
    let config = Config::load(config_path.as_deref()).unwrap_or_else(|e| usage_error(&e));
    cf_bus::telemetry::init();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        warn!("a TLS crypto provider was already installed");
    }
    let runtime = build_runtime(&config).await?;
    if teardown {
        let removed = runtime.remove_all().await?;
        info!(removed, "teardown complete");
        return Ok(());
    }
    info!(version = env!("CARGO_PKG_VERSION"), "cf-factory starting");

    let js = cf_bus::connect(&config.nats.url, "cf-factory").await?;
    let ledger_ttl = Duration::from_secs(config.ledger_ttl_secs);
    let ledger = KvLedger::new(cf_bus::ensure_topology(&js, ledger_ttl).await?);
    let events = NatsEvents::new(js.client());
    let factory = Arc::new(Factory::new(ledger, runtime, events));

    let (exits, exited) = mpsc::channel(256);
    let watcher = tokio::spawn(watch_exits(Arc::clone(&factory), exits));
    let settler = tokio::spawn(settle_exits(Arc::clone(&factory), exited));
    tokio::select! {
        r = consume_jobs(js, factory, config.factory.concurrency) => {
            error!(result = ?r, "job consumer stopped");
        }
        () = cf_bus::shutdown::requested() => {}
    }
    watcher.abort();
    settler.abort();
    Ok(())
}

async fn build_runtime(config: &Config) -> anyhow::Result<ContainerdRuntime> {
    let ctrd = Ctrd::connect(&config.containerd.address, &config.containerd.namespace).await?;
    let network = CniNetwork::new(CniConfig {
        bin_dir: config.network.cni_bin_dir.clone(),
        bridge: config.network.bridge.clone(),
        subnet: config.network.subnet.clone(),
        state_dir: config.state_dir.join("cni"),
    })
    .context("invalid network configuration")?;
    let registries = RegistrySettings {
        mirrors: config.registry.mirrors.clone(),
        insecure: config.registry.insecure.clone(),
    };
    let images = ImageStore::new(ctrd.clone(), &config.containerd.snapshotter, registries);
    let logger = std::env::current_exe()
        .context("cannot locate the cf-factory binary")?
        .with_file_name("cf-logger");
    let settings = RuntimeSettings {
        snapshotter: config.containerd.snapshotter.clone(),
        runtime: config.containerd.runtime.clone(),
        state_dir: config.state_dir.clone(),
        logger,
    };
    Ok(ContainerdRuntime::new(ctrd, images, network, settings))
}

/// Keeps following task exits; a broken event stream is reopened.
async fn watch_exits<L, E>(
    factory: Arc<Factory<L, ContainerdRuntime, E>>,
    exits: Sender<TaskExited>,
) where
    L: RequestLedger,
    E: EventSink,
{
    loop {
        if let Err(e) = factory.runtime().watch_exits(&exits).await {
            warn!(error = %e, "task exit watcher stopped; restarting it");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn settle_exits<L, E>(
    factory: Arc<Factory<L, ContainerdRuntime, E>>,
    mut exited: Receiver<TaskExited>,
) where
    L: RequestLedger,
    E: EventSink,
{
    while let Some((id, exit_code)) = exited.recv().await {
        factory.handle_exit(id, exit_code).await;
    }
}

/// Bad arguments or configuration: one line, and the exit code of
/// sysexits' EX_CONFIG, before any socket is opened.
fn usage_error(e: &dyn std::fmt::Display) -> ! {
    eprintln!("cf-factory: {e}");
    std::process::exit(78)
}

fn parse_args() -> anyhow::Result<(Option<PathBuf>, bool)> {
    let mut config = None;
    let mut teardown = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = Some(args.next().context("--config needs a file")?.into()),
            "teardown" => teardown = true,
            _ => anyhow::bail!("usage: cf-factory [--config <file.toml>] [teardown]"),
        }
    }
    Ok((config, teardown))
}
