//! Container networking through the CNI reference plugins.
//!
//! A small in-house invoker for CNI spec 1.0.0. It executes the plugins of
//! containernetworking-plugins 1.1.1 (Debian, `/usr/lib/cni`) directly,
//! because no maintained Rust libcni exists. The network is one fixed
//! chain, `bridge` (with `host-local` IPAM) then `portmap`, and this module
//! does what libcni would: inject `name` and `cniVersion`, chain
//! `prevResult`, give `runtimeConfig` only to plugins that declare the
//! capability, run DEL in reverse order and keep each container's ADD
//! result for its DEL.
//!
//! Network namespaces are made with iproute2 (`ip netns`), so they are
//! bind-mounted under `/run/netns` and outlive any one process. Both `ip`
//! and the plugins' `iptables` are found through `PATH`, which must
//! therefore include `/usr/sbin`.
//!
//! CHECK is deliberately not offered: portmap 1.1.1 fails it on IPv4-only
//! networks ("could not check ipv6 dnat").

use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const CNI_VERSION: &str = "1.0.0";
const NETWORK_NAME: &str = "cf-net";
const IFNAME: &str = "eth0";
const NETNS_DIR: &str = "/run/netns";

/// Upper bound for one plugin or `ip` call: a plugin stuck on the
/// iptables lock must not hang a container start forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Linux caps interface names at IFNAMSIZ - 1 bytes.
const MAX_IFNAME_LEN: usize = 15;

/// Names become file names (`<id>.json.tmp`), so keep them well below
/// the 255-byte limit.
const MAX_NAME_LEN: usize = 200;

/// Where the network lives and where its state is kept.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Directory with the plugin executables, e.g. `/usr/lib/cni`.
    pub bin_dir: PathBuf,
    /// Host bridge name; the bridge plugin creates it on first use.
    pub bridge: String,
    /// IPv4 network in CIDR form, e.g. `10.231.17.0/24`.
    pub subnet: String,
    /// Directory owned by this network: IPAM leases and cached results.
    pub state_dir: PathBuf,
}

/// Errors of the CNI invoker.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("invalid cni configuration: {reason}")]
    Config { reason: String },

    #[error("invalid container or netns name for cni")]
    InvalidName { name: String },

    #[error("invalid port mapping: {reason}")]
    InvalidPortMap { reason: String },

    #[error("cni plugin {plugin} failed on {command}: {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        /// CNI error code from the plugin's JSON error, when it sent one.
        code: Option<i64>,
        msg: String,
    },

    #[error("cni plugin {plugin} timed out on {command}")]
    Timeout {
        plugin: String,
        command: &'static str,
    },

    #[error("cni plugin {plugin} returned an unreadable result")]
    BadResult {
        plugin: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("cni result has no ipv4 address on eth0")]
    NoAddress { container_id: String },

    #[error("`{command}` failed: {stderr}")]
    Command {
        command: String,
        code: Option<i32>,
        stderr: String,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// One bridge + portmap network that containers are attached to.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    bin_dir: PathBuf,
    state_dir: PathBuf,
    gateway: Ipv4Addr,
    plugins: Vec<Plugin>,
}

/// A published port: `host_ip:host_port` reaches `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    /// `"tcp"` or `"udp"`.
    pub protocol: &'static str,
    /// `0.0.0.0` publishes on every host address.
    pub host_ip: Ipv4Addr,
}

/// One entry of the chain, exactly as a conflist would hold it.
#[derive(Debug, Clone)]
struct Plugin {
    kind: &'static str,
    conf: Value,
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Add,
    Del,
}

/// What `add` leaves for `del`, one file per container.
///
/// Written before the first plugin runs, with no `result` yet, because
/// portmap's DEL does nothing without the port mappings: an ADD cut short
/// by a crash must still be undoable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    cni_version: String,
    network: String,
    container_id: String,
    runtime_config: Value,
    result: Option<Value>,
}

/// The parts of a CNI 1.0.0 result that are read here.
#[derive(Debug, Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<ResultInterface>,
    #[serde(default)]
    ips: Vec<ResultIp>,
}

#[derive(Debug, Deserialize)]
struct ResultInterface {
    name: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Deserialize)]
struct ResultIp {
    address: String,
    interface: Option<usize>,
}

/// The error object a plugin prints on stdout when it exits non-zero.
#[derive(Debug, Deserialize)]
struct PluginErrorBody {
    code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

// === impl CniNetwork ===

impl CniNetwork {
    /// Validates `cfg` and builds the plugin chain; touches nothing yet.
    ///
    /// # Errors
    ///
    /// `Config` when the subnet is not an IPv4 network with a prefix of
    /// 8 to 30, the bridge is not a usable interface name, or a directory
    /// is not an absolute UTF-8 path.
    pub fn new(cfg: CniConfig) -> Result<Self, CniError> {
        let (network, prefix) = parse_subnet(&cfg.subnet)?;
        validate_bridge(&cfg.bridge)?;
        if !cfg.bin_dir.is_absolute() {
            return Err(config_error("bin_dir must be absolute"));
        }
        let state_dir = match cfg.state_dir.to_str() {
            Some(dir) if cfg.state_dir.is_absolute() => dir,
            _ => return Err(config_error("state_dir must be absolute UTF-8")),
        };

        // host-local would pick the same address by default; stating it
        // keeps `gateway()` and the plugin in agreement by construction.
        let gateway = Ipv4Addr::from(u32::from(network) + 1);
        let subnet = format!("{network}/{prefix}");
        let plugins = build_plugins(&cfg.bridge, &subnet, gateway, state_dir);

        Ok(Self {
            bin_dir: cfg.bin_dir,
            state_dir: cfg.state_dir,
            gateway,
            plugins,
        })
    }

    /// The bridge's own address, through which containers reach the host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Creates the named netns, or reuses it, and brings `lo` up in it.
    ///
    /// # Errors
    ///
    /// `InvalidName` for names unfit for a file name; `Command` when `ip`
    /// fails or times out, `Io` when it cannot be run.
    pub async fn create_netns(&self, name: &str) -> Result<PathBuf, CniError> {
        validate_name(name)?;
        let path = netns_path(name);

        // A crash can leave the mount point without the netns behind it;
        // `ip netns delete` clears that, `ip netns add` would refuse it.
        if path.exists() && !is_netns(&path) {
            run_ip(&["netns", "delete", name]).await?;
        }

        // A retry finds the netns already there, and a concurrent
        // create may win the race: only a failure without a netns counts.
        if !is_netns(&path) {
            if let Err(err) = run_ip(&["netns", "add", name]).await {
                if !is_netns(&path) {
                    return Err(err);
                }
            }
        }

        run_ip(&["-n", name, "link", "set", "lo", "up"]).await?;
        Ok(path)
    }

    /// Deletes the named netns; one that is already gone is fine.
    ///
    /// # Errors
    ///
    /// `InvalidName`; `Command` or `Io` when `ip` fails and the netns is
    /// still there.
    pub async fn delete_netns(&self, name: &str) -> Result<(), CniError> {
        validate_name(name)?;
        let path = netns_path(name);
        if !path.exists() {
            return Ok(());
        }

        // Gone despite an error means a concurrent delete won the race.
        match run_ip(&["netns", "delete", name]).await {
            Err(err) if path.exists() => Err(err),
            _ => Ok(()),
        }
    }

    /// Attaches the container in `netns`; returns its IPv4 on eth0.
    ///
    /// When any step fails, the plugins that ran are undone with DEL
    /// before the error is returned.
    ///
    /// # Errors
    ///
    /// `InvalidName`, `InvalidPortMap`; `Plugin`, `Timeout` or
    /// `BadResult` from a plugin; `NoAddress` when the result has no IPv4
    /// on eth0; `Io` when the state directory cannot be written.
    #[tracing::instrument(
        name = "cni.add",
        skip_all,
        fields(container_id = %container_id)
    )]
    pub async fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ports: &[PortMap],
    ) -> Result<Ipv4Addr, CniError> {
        validate_name(container_id)?;
        let mut attachment = Attachment {
            cni_version: CNI_VERSION.to_owned(),
            network: NETWORK_NAME.to_owned(),
            container_id: container_id.to_owned(),
            runtime_config: runtime_config(ports)?,
            result: None,
        };
        self.write_cache(&attachment).await?;

        let mut prev: Option<Value> = None;
        for (i, plugin) in self.plugins.iter().enumerate() {
            let conf = plugin.stdin_conf(prev.as_ref(), &attachment.runtime_config);
            let out = self
                .exec(plugin, Verb::Add, container_id, netns.as_os_str(), &conf)
                .await
                .and_then(|out| parse_result(plugin, &out));
            match out {
                Ok(result) => prev = Some(result),
                // The failing plugin is undone too: it may have done
                // part of its work, and DEL tolerates missing pieces.
                Err(err) => {
                    let undone = self.undo(&attachment, netns, i + 1, prev, err);
                    return Err(undone.await);
                }
            }
        }

        let all = self.plugins.len();
        let Some(ip) = prev.as_ref().and_then(container_ipv4) else {
            let err = CniError::NoAddress {
                container_id: container_id.to_owned(),
            };
            return Err(self.undo(&attachment, netns, all, prev, err).await);
        };

        attachment.result = prev;
        if let Err(err) = self.write_cache(&attachment).await {
            let prev = attachment.result.take();
            return Err(self.undo(&attachment, netns, all, prev, err).await);
        }
        tracing::debug!(ip = %ip, "container attached to cni network");
        Ok(ip)
    }

    /// Detaches the container; safe to repeat.
    ///
    /// Works without a cached ADD result and with the netns gone, so it
    /// can clean up after crashes. The cache is removed only on success,
    /// so a failed DEL can be retried.
    ///
    /// # Errors
    ///
    /// `InvalidName`; `Plugin` or `Timeout` from the first plugin that
    /// failed (the others still run); `Io` when the cache cannot be read
    /// or removed.
    #[tracing::instrument(
        name = "cni.del",
        skip_all,
        fields(container_id = %container_id)
    )]
    pub async fn del(&self, container_id: &str, netns: &Path) -> Result<(), CniError> {
        validate_name(container_id)?;
        let (prev, runtime) = match self.read_cache(container_id).await? {
            Some(cached) => (cached.result, cached.runtime_config),
            None => (None, json!({})),
        };

        // bridge 1.1.1 finds the addresses to un-masquerade on the veth
        // inside the netns; without the netns its ipMasq rule stays.
        if prev.is_some() && !is_netns(netns) {
            tracing::warn!(
                netns = %netns.display(),
                "netns gone before cni del, ip masquerade rule may remain"
            );
        }

        let all = self.plugins.len();
        self.del_chain(container_id, netns, all, prev.as_ref(), &runtime)
            .await?;
        self.remove_cache(container_id).await
    }

    /// Runs DEL for the first `count` plugins after a failed ADD and
    /// hands back the error that caused it.
    async fn undo(
        &self,
        attachment: &Attachment,
        netns: &Path,
        count: usize,
        prev: Option<Value>,
        err: CniError,
    ) -> CniError {
        let id = &attachment.container_id;
        let runtime = &attachment.runtime_config;
        let undone = self.del_chain(id, netns, count, prev.as_ref(), runtime);
        match undone.await {
            Ok(()) => {
                if let Err(rm_err) = self.remove_cache(id).await {
                    tracing::warn!(error = %rm_err, "cni cache left after rollback");
                }
            }
            // The cache stays, so a later `del` can finish the job.
            Err(del_err) => tracing::warn!(
                error = %del_err,
                "cni add rollback incomplete"
            ),
        }
        err
    }

    /// DEL for the first `count` plugins, last first. Keeps going past a
    /// failure so that one stuck plugin does not strand the others'
    /// resources, and returns the first error.
    async fn del_chain(
        &self,
        container_id: &str,
        netns: &Path,
        count: usize,
        prev: Option<&Value>,
        runtime: &Value,
    ) -> Result<(), CniError> {
        // The spec allows an empty CNI_NETNS on DEL. A path that is no
        // live netns (e.g. a mount point left by a crash) would make
        // bridge fail forever instead of releasing what it can.
        let netns_arg = if is_netns(netns) {
            netns.as_os_str()
        } else {
            OsStr::new("")
        };

        let mut first_err = None;
        for plugin in self.plugins[..count].iter().rev() {
            let conf = plugin.stdin_conf(prev, runtime);
            let res = self
                .exec(plugin, Verb::Del, container_id, netns_arg, &conf)
                .await;
            let Err(err) = res else { continue };
            if first_err.is_none() {
                first_err = Some(err);
            } else {
                tracing::warn!(error = %err, "further cni del failure");
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs one plugin and returns its stdout on success.
    async fn exec(
        &self,
        plugin: &Plugin,
        verb: Verb,
        container_id: &str,
        netns: &OsStr,
        conf: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let program = self.bin_dir.join(plugin.kind);
        let mut cmd = Command::new(&program);
        cmd.env("CNI_COMMAND", verb.as_str())
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.bin_dir)
            .env_remove("CNI_ARGS")
            .kill_on_drop(true);

        let started = Instant::now();
        let run = output_with_input(cmd, conf.to_string().into_bytes());
        let output = tokio::time::timeout(CALL_TIMEOUT, run)
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin.kind.to_owned(),
                command: verb.as_str(),
            })?
            .map_err(|source| CniError::Io {
                context: format!("failed to run cni plugin {}", program.display()),
                source,
            })?;
        tracing::debug!(
            plugin = plugin.kind,
            command = verb.as_str(),
            elapsed_ms = started.elapsed().as_millis(),
            "cni plugin finished"
        );

        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(plugin_error(plugin.kind, verb, &output))
    }

    fn cache_path(&self, container_id: &str) -> PathBuf {
        self.state_dir
            .join("results")
            .join(format!("{container_id}.json"))
    }

    async fn read_cache(&self, container_id: &str) -> Result<Option<Attachment>, CniError> {
        let path = self.cache_path(container_id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(io_error("failed to read cni cache", &path, err));
            }
        };

        // Writes go through a rename, so garbage means outside meddling;
        // a DEL without it still releases the address and the veth.
        match serde_json::from_slice(&bytes) {
            Ok(cached) => Ok(Some(cached)),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    path = %path.display(),
                    "ignoring unreadable cni cache"
                );
                Ok(None)
            }
        }
    }

    async fn write_cache(&self, attachment: &Attachment) -> Result<(), CniError> {
        let path = self.cache_path(&attachment.container_id);
        let tmp = path.with_extension("json.tmp");
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error("failed to create cni cache dir", dir, e))?;
        }

        let bytes = serde_json::to_vec(attachment).map_err(|e| CniError::Io {
            context: "failed to encode cni cache".to_owned(),
            source: e.into(),
        })?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| io_error("failed to write cni cache", &tmp, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_error("failed to write cni cache", &path, e))
    }

    async fn remove_cache(&self, container_id: &str) -> Result<(), CniError> {
        let path = self.cache_path(container_id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("failed to remove cni cache", &path, err)),
        }
    }
}

// === impl Plugin ===

impl Plugin {
    /// The config a plugin reads on stdin, built the way libcni does.
    fn stdin_conf(&self, prev: Option<&Value>, runtime: &Value) -> Value {
        let mut conf = self.conf.clone();
        let Value::Object(obj) = &mut conf else {
            return conf;
        };
        obj.insert("name".into(), NETWORK_NAME.into());
        obj.insert("cniVersion".into(), CNI_VERSION.into());
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }

        let granted = self.granted_capabilities(runtime);
        if !granted.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(granted));
        }
        conf
    }

    /// The runtime values for the capabilities this plugin declares.
    fn granted_capabilities(&self, runtime: &Value) -> Map<String, Value> {
        let declared = self.conf.get("capabilities").and_then(Value::as_object);
        declared
            .into_iter()
            .flatten()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .filter_map(|(cap, _)| Some((cap.clone(), runtime.get(cap)?.clone())))
            .collect()
    }
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
        }
    }
}

/// The chain: bridge with host-local IPAM, then portmap.
fn build_plugins(bridge: &str, subnet: &str, gateway: Ipv4Addr, state_dir: &str) -> Vec<Plugin> {
    let data_dir = format!("{}/ipam", state_dir.trim_end_matches('/'));
    let bridge = json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": subnet, "gateway": gateway.to_string() }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        },
    });
    let portmap = json!({
        "type": "portmap",
        "capabilities": { "portMappings": true },
        "snat": true,
    });

    vec![
        Plugin {
            kind: "bridge",
            conf: bridge,
        },
        Plugin {
            kind: "portmap",
            conf: portmap,
        },
    ]
}

/// The runtime half of libcni's capability args: only `portMappings`.
fn runtime_config(ports: &[PortMap]) -> Result<Value, CniError> {
    let mut maps = Vec::with_capacity(ports.len());
    for port in ports {
        if !matches!(port.protocol, "tcp" | "udp") {
            return Err(CniError::InvalidPortMap {
                reason: format!("unsupported protocol {:?}", port.protocol),
            });
        }
        if port.host_port == 0 || port.container_port == 0 {
            return Err(CniError::InvalidPortMap {
                reason: "port 0 cannot be mapped".to_owned(),
            });
        }

        let mut map = json!({
            "hostPort": port.host_port,
            "containerPort": port.container_port,
            "protocol": port.protocol,
        });
        if !port.host_ip.is_unspecified() {
            map["hostIP"] = port.host_ip.to_string().into();
        }
        maps.push(map);
    }

    // No key at all rather than an empty list: libcni only passes
    // capability args the runtime actually has.
    if maps.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({ "portMappings": maps }))
}

/// Parses `a.b.c.d/len` into a network address and prefix length.
fn parse_subnet(subnet: &str) -> Result<(Ipv4Addr, u8), CniError> {
    let invalid = |why: &str| config_error(format!("subnet {subnet:?}: {why}"));
    let (addr, prefix) = subnet
        .split_once('/')
        .ok_or_else(|| invalid("expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("bad IPv4 address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;

    // Below /8 is no edge network; above /30 leaves no container address
    // next to the gateway.
    if !(8..=30).contains(&prefix) {
        return Err(invalid("prefix length must be 8 to 30"));
    }
    let host_mask = u32::MAX >> prefix;
    if u32::from(addr) & host_mask != 0 {
        return Err(invalid("host bits set"));
    }
    Ok((addr, prefix))
}

fn validate_bridge(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        return Ok(());
    }
    Err(config_error(format!(
        "bridge {name:?} is not a valid interface name"
    )))
}

/// The CNI spec's container id rule, which also keeps the name safe as a
/// file name in the cache and netns directories.
fn validate_name(name: &str) -> Result<(), CniError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        return Ok(());
    }
    Err(CniError::InvalidName {
        name: name.to_owned(),
    })
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether `path` is a live namespace rather than a plain file. Every
/// namespace handle lives on the one nsfs instance, so it shares its
/// device number with our own `/proc/self/ns/net`.
fn is_netns(path: &Path) -> bool {
    let Ok(target) = std::fs::metadata(path) else {
        return false;
    };
    match std::fs::metadata("/proc/self/ns/net") {
        Ok(own) => target.dev() == own.dev(),
        // Without /proc there is nothing to compare; trust the path.
        Err(_) => true,
    }
}

fn parse_result(plugin: &Plugin, stdout: &[u8]) -> Result<Value, CniError> {
    serde_json::from_slice(stdout).map_err(|source| CniError::BadResult {
        plugin: plugin.kind.to_owned(),
        source,
    })
}

/// The container's address: an IPv4 on eth0 inside the sandbox, not one
/// on the host side of the veth or the bridge.
fn container_ipv4(result: &Value) -> Option<Ipv4Addr> {
    let parsed: CniResult = serde_json::from_value(result.clone()).ok()?;
    let on_eth0 = |ip: &&ResultIp| match ip.interface {
        Some(idx) => parsed
            .interfaces
            .get(idx)
            .is_some_and(|iface| iface.name == IFNAME && !iface.sandbox.is_empty()),
        None => true,
    };

    parsed.ips.iter().filter(on_eth0).find_map(|ip| {
        let addr = ip.address.split_once('/').map_or(&*ip.address, |(a, _)| a);
        addr.parse().ok()
    })
}

/// Turns a failed run into `Plugin`, preferring the CNI error object.
fn plugin_error(plugin: &str, verb: Verb, output: &Output) -> CniError {
    let body = serde_json::from_slice::<PluginErrorBody>(&output.stdout).ok();
    let code = body.as_ref().and_then(|b| b.code);
    let msg = match body {
        Some(b) if !b.msg.is_empty() && !b.details.is_empty() => {
            format!("{}; {}", b.msg, b.details)
        }
        Some(b) if !b.msg.is_empty() => b.msg,
        _ => fallback_message(output),
    };

    CniError::Plugin {
        plugin: plugin.to_owned(),
        command: verb.as_str(),
        code,
        msg,
    }
}

/// Best text for a plugin that failed without a CNI error object.
fn fallback_message(output: &Output) -> String {
    for stream in [&output.stderr, &output.stdout] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            return text.trim().to_owned();
        }
    }
    format!("plugin {}", output.status)
}

/// Runs `cmd` with `input` on stdin and collects stdout and stderr.
async fn output_with_input(mut cmd: Command, input: Vec<u8>) -> io::Result<Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take();

    // Feed stdin while collecting output, so neither side can block the
    // other on a full pipe; dropping the handle sends EOF.
    let feed = async move {
        match stdin {
            Some(mut stdin) => stdin.write_all(&input).await,
            None => Ok(()),
        }
    };
    let (fed, output) = tokio::join!(feed, child.wait_with_output());
    let output = output?;

    // A plugin that fails before reading its config breaks the pipe; its
    // own error says more than EPIPE does.
    if output.status.success() {
        fed?;
    }
    Ok(output)
}

/// Runs `ip` with `args`, bounded by the call timeout.
async fn run_ip(args: &[&str]) -> Result<(), CniError> {
    let command = format!("ip {}", args.join(" "));
    let mut cmd = Command::new("ip");
    cmd.args(args).kill_on_drop(true);

    let output = tokio::time::timeout(CALL_TIMEOUT, output_with_input(cmd, Vec::new()))
        .await
        .map_err(|_| CniError::Command {
            command: command.clone(),
            code: None,
            stderr: "timed out".to_owned(),
        })?
        .map_err(|source| CniError::Io {
            context: format!("failed to run `{command}`"),
            source,
        })?;

    if output.status.success() {
        return Ok(());
    }
    Err(CniError::Command {
        command,
        code: output.status.code(),
        stderr: fallback_message(&output),
    })
}

fn config_error(reason: impl Into<String>) -> CniError {
    CniError::Config {
        reason: reason.into(),
    }
}

fn io_error(what: &str, path: &Path, source: io::Error) -> CniError {
    CniError::Io {
        context: format!("{what} {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests;
