//! The configuration of both services. One file serves the gateway and the
//! factory; each reads the sections it needs.
//!
//! Layers, later wins: built-in defaults, an optional TOML file
//! (`--config`), then `CF_`-prefixed environment variables with `__` for
//! nesting (`CF_MQTT__URL`, `CF_DEVICE__THING_ID`). Environment variables
//! whose first segment is not a known section (for example the local
//! stack's `CF_MQTT_PORT`) are ignored; unknown keys inside a known section
//! are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cf_core::ThingId;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Top-level keys; also the filter for environment variables.
const SECTIONS: &[&str] = &[
    "state_dir",
    "ready_file",
    "max_payload_bytes",
    "ledger_ttl_secs",
    "device",
    "mqtt",
    "nats",
    "containerd",
    "registry",
    "network",
    "factory",
];

/// Everything either service can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where container state (logs, hosts files, network results) lives.
    pub state_dir: PathBuf,
    /// A file the gateway creates once its command subscription is active.
    pub ready_file: Option<PathBuf>,
    /// Larger request payloads are answered 413.
    pub max_payload_bytes: usize,
    /// How long a correlation-id is remembered, in seconds.
    pub ledger_ttl_secs: u64,
    /// Which device this is.
    pub device: Device,
    /// The local MQTT broker.
    pub mqtt: Mqtt,
    /// The internal NATS server.
    pub nats: Nats,
    /// The containerd daemon.
    pub containerd: Containerd,
    /// Image registries.
    pub registry: Registry,
    /// The container bridge network.
    pub network: Network,
    /// Job processing.
    pub factory: Factory,
}

/// The device identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The Hono device ID; the thing ID is `<id>:edge:containers`.
    pub id: Option<String>,
    /// The thing ID, overriding the one derived from `id`.
    pub thing_id: Option<String>,
    /// The Hono tenant.
    pub tenant: String,
}

/// MQTT connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host:port` (or `tcp://`).
    pub url: String,
    /// Client ID; defaults to `cf-gateway-<thing id>`. It must be stable so
    /// that the broker keeps the session while the gateway restarts.
    pub client_id: Option<String>,
    /// User name, if the broker needs one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
}

/// NATS connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nats {
    /// `nats://host:port`.
    pub url: String,
}

/// containerd connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Containerd {
    /// Path of containerd's gRPC socket.
    pub address: PathBuf,
    /// containerd namespace that holds our images and containers.
    pub namespace: String,
    /// Snapshotter for image layers and container roots.
    pub snapshotter: String,
    /// Runtime (shim) for tasks.
    pub runtime: String,
}

/// Registry settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Registry host → mirror URL (`http://` for plain HTTP) tried first.
    pub mirrors: BTreeMap<String, String>,
    /// Registries reached over plain HTTP. Loopback registries always are.
    pub insecure: Vec<String>,
}

/// The bridge network of containers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Name of the Linux bridge.
    pub bridge: String,
    /// IPv4 subnet of the bridge; its first address is the host's.
    pub subnet: String,
    /// Where the CNI plugins are installed.
    pub cni_bin_dir: PathBuf,
}

/// Job processing settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factory {
    /// Jobs worked on at once.
    pub concurrency: usize,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/container-factory".into(),
            ready_file: None,
            max_payload_bytes: 1024 * 1024,
            ledger_ttl_secs: 24 * 60 * 60,
            device: Device {
                id: None,
                thing_id: None,
                tenant: "local".into(),
            },
            mqtt: Mqtt {
                url: "mqtt://127.0.0.1:1883".into(),
                client_id: None,
                username: None,
                password: None,
            },
            nats: Nats {
                url: "nats://127.0.0.1:4222".into(),
            },
            containerd: Containerd {
                address: "/run/containerd/containerd.sock".into(),
                namespace: "container-factory".into(),
                snapshotter: "overlayfs".into(),
                runtime: "io.containerd.runc.v2".into(),
            },
            registry: Registry::default(),
            network: Network {
                bridge: "cf0".into(),
                subnet: "10.231.17.0/24".into(),
                cni_bin_dir: "/usr/lib/cni".into(),
            },
            factory: Factory { concurrency: 8 },
        }
    }
}

/// The configuration is unusable; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then `file`, then the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is missing, unknown or of the
    /// wrong type, or whose value is invalid.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::load_with_env(file, &pairs)
    }

    /// Like [`Config::load`], with environment variables given as pairs
    /// instead of read from the process (for tests).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with_env(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = Self::figment(file);
        for (k, v) in vars {
            let Some(key) = env_key(k).filter(|k| !k.starts_with(MIRRORS_KEY)) else {
                continue;
            };
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| (*v).into());
            figment = figment.merge((key.as_str(), value));
        }
        let mirrors = mirror_vars(vars.iter().copied());
        Self::from_figment(with_mirrors(figment, mirrors))
    }

    fn figment(file: Option<&Path>) -> Figment {
        let figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment.merge(Toml::file_exact(path)),
            None => figment,
        }
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.thing_id()?;
        for (key, url, schemes) in [
            ("mqtt.url", &self.mqtt.url, &["mqtt://", "tcp://"][..]),
            ("nats.url", &self.nats.url, &["nats://"][..]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(ConfigError(format!(
                    "{key}: {url:?} must start with one of {schemes:?}"
                )));
            }
        }
        check_subnet(&self.network.subnet)
            .map_err(|e| ConfigError(format!("network.subnet: {e}")))?;
        if self.factory.concurrency == 0 {
            return Err(ConfigError(
                "factory.concurrency: must be at least 1".into(),
            ));
        }
        if self.containerd.namespace.is_empty() {
            return Err(ConfigError(
                "containerd.namespace: must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The thing ID: `device.thing_id`, else `<device.id>:edge:containers`,
    /// else `edge:device`.
    ///
    /// # Errors
    /// [`ConfigError`] when the configured value is not a valid thing ID.
    pub fn thing_id(&self) -> Result<ThingId, ConfigError> {
        let result = match (&self.device.thing_id, &self.device.id) {
            (Some(t), _) => ThingId::new(t).map_err(|e| format!("device.thing_id: {e}")),
            (None, Some(id)) => ThingId::for_device(id).map_err(|e| format!("device.id: {e}")),
            (None, None) => ThingId::new("edge:device").map_err(|e| e.to_string()),
        };
        result.map_err(ConfigError)
    }

    /// Host and port of `mqtt.url`.
    ///
    /// # Errors
    /// [`ConfigError`] when the URL has no valid port.
    pub fn mqtt_endpoint(&self) -> Result<(String, u16), ConfigError> {
        let rest = self.mqtt.url.split_once("://").map_or("", |(_, r)| r);
        let rest = rest.trim_end_matches('/');
        match rest.rsplit_once(':') {
            Some((host, port)) => port
                .parse()
                .map(|p| (host.to_owned(), p))
                .map_err(|_| ConfigError(format!("mqtt.url: invalid port {port:?}"))),
            None => Ok((rest.to_owned(), 1883)),
        }
    }
}

/// One line per figment error: the dotted key, what is wrong, and where the
/// value came from.
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                Some(_) => String::new(),
                None => " (from the environment)".to_owned(),
            };
            match key.as_str() {
                "" => format!("{}{source}", e.kind),
                key => format!("{key}: {}{source}", e.kind),
            }
        })
        .collect();
    ConfigError(lines.join("; "))
}

/// An IPv4 CIDR with room for a gateway and containers.
fn check_subnet(subnet: &str) -> Result<(), String> {
    let (addr, prefix) = subnet
        .split_once('/')
        .ok_or_else(|| format!("{subnet:?} is not an IPv4 CIDR like 10.231.17.0/24"))?;
    addr.parse::<std::net::Ipv4Addr>()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    match prefix.parse::<u8>() {
        Ok(8..=30) => Ok(()),
        _ => Err(format!("prefix length {prefix:?} must be between 8 and 30")),
    }
}

/// Registry hosts contain dots, which figment would read as nesting, so
/// `CF_REGISTRY__MIRRORS__<host>` variables are collected by hand.
const MIRRORS_KEY: &str = "registry.mirrors.";

fn mirror_vars<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    vars.filter_map(|(k, v)| {
        let host = env_key(k)?.strip_prefix(MIRRORS_KEY)?.to_owned();
        Some((host, v.to_owned()))
    })
    .collect()
}

fn with_mirrors(figment: Figment, mirrors: BTreeMap<String, String>) -> Figment {
    if mirrors.is_empty() {
        return figment;
    }
    let mut all: BTreeMap<String, String> = figment
        .extract_inner("registry.mirrors")
        .unwrap_or_default();
    all.extend(mirrors);
    figment.merge(Serialized::default("registry.mirrors", all))
}

/// The dotted key of a `CF_` variable, when it addresses a known section.
fn env_key(var: &str) -> Option<String> {
    let key = var
        .strip_prefix("CF_")?
        .to_ascii_lowercase()
        .replace("__", ".");
    SECTIONS
        .iter()
        .any(|s| key.split('.').next() == Some(s))
        .then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_thing_id() {
        let c = Config::load_with_env(None, &[]).unwrap();
        assert_eq!(c.thing_id().unwrap().as_str(), "edge:device");
        let c = Config::load_with_env(None, &[("CF_DEVICE__ID", "org.acme:gw1")]).unwrap();
        assert_eq!(
            c.thing_id().unwrap().as_str(),
            "org.acme:gw1:edge:containers"
        );
        let vars = [("CF_DEVICE__ID", "a:b"), ("CF_DEVICE__THING_ID", "x:y")];
        let c = Config::load_with_env(None, &vars).unwrap();
        assert_eq!(c.thing_id().unwrap().as_str(), "x:y");
    }

    #[test]
    fn names_the_offending_key() {
        let e = Config::load_with_env(None, &[("CF_MQTT__URLX", "x")]).unwrap_err();
        assert!(e.to_string().contains("urlx"), "{e}");
        let e = Config::load_with_env(None, &[("CF_FACTORY__CONCURRENCY", "many")]).unwrap_err();
        assert!(e.to_string().contains("factory.concurrency"), "{e}");
        let e = Config::load_with_env(None, &[("CF_NATS__URL", "http://x")]).unwrap_err();
        assert!(e.to_string().contains("nats.url"), "{e}");
        let e = Config::load_with_env(None, &[("CF_NETWORK__SUBNET", "10.0.0.0/33")]).unwrap_err();
        assert!(e.to_string().contains("network.subnet"), "{e}");
    }

    #[test]
    fn ignores_variables_outside_the_known_sections() {
        let vars = [("CF_MQTT_PORT", "1883"), ("CF_DEMO_SUBNET", "x")];
        assert!(Config::load_with_env(None, &vars).is_ok());
    }

    #[test]
    fn reads_mirrors_and_mqtt_endpoint() {
        let vars = [
            ("CF_REGISTRY__MIRRORS__docker.io", "http://127.0.0.1:5001"),
            ("CF_MQTT__URL", "mqtt://127.0.0.1:18830"),
            ("CF_NATS__URL", "nats://127.0.0.1:14222"),
        ];
        let c = Config::load_with_env(None, &vars).unwrap();
        assert_eq!(c.registry.mirrors["docker.io"], "http://127.0.0.1:5001");
        assert_eq!(c.mqtt_endpoint().unwrap(), ("127.0.0.1".into(), 18830));
        assert_eq!(c.nats.url, "nats://127.0.0.1:14222");
    }
}
