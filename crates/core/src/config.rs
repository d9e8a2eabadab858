//! The container configuration of `createWithConfig` (Kanto's camelCase
//! form), decoded field by field so that every error names its JSON path.
//!
//! Fields that Kanto knows but this device does not implement yet are
//! rejected by name rather than silently dropped.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Fields implemented by this device.
const SUPPORTED: &[&str] = &["env", "cmd", "portMappings", "extraHosts"];

/// Fields of Kanto's configuration that this device does not implement yet.
const NOT_YET_SUPPORTED: &[&str] = &[
    "domainName",
    "hostName",
    "privileged",
    "extraCapabilities",
    "devices",
    "restartPolicy",
    "networkMode",
    "mountPoints",
    "decryption",
    "resources",
    "log",
    "openStdin",
    "tty",
];

/// Most port mappings one container may have: they are recorded in a
/// containerd label, whose size is limited.
pub const MAX_PORT_MAPPINGS: usize = 32;

/// The token in `extraHosts` that stands for the host's address on the
/// container bridge.
pub const HOST_IP_TOKEN: &str = "host_ip";

/// A validated container configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `VAR=value` sets a variable; a bare `VAR` removes it from the image's.
    pub env: Vec<String>,
    /// Replaces the image's CMD (its ENTRYPOINT is kept); empty keeps it.
    pub cmd: Vec<String>,
    /// Host ports published on the container bridge.
    pub port_mappings: Vec<PortMapping>,
    /// Entries added to the container's `/etc/hosts`.
    pub extra_hosts: Vec<ExtraHost>,
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lowercase name used by CNI and iptables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Transport protocol, `tcp` by default.
    pub proto: Protocol,
    /// Port inside the container.
    pub container_port: u16,
    /// Host address to listen on; `0.0.0.0` means all.
    pub host_ip: Ipv4Addr,
    /// Port on the host.
    pub host_port: u16,
}

/// Where an `extraHosts` entry points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostTarget {
    /// A literal address.
    Ip(IpAddr),
    /// The host's address on the container bridge (`host_ip`).
    HostIp,
}

/// One `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// The hostname to resolve.
    pub hostname: String,
    /// What it resolves to.
    pub target: HostTarget,
}

impl ContainerConfig {
    /// Decodes and validates the `config` object found at JSON path `path`.
    ///
    /// # Errors
    /// A 400 [`ApiError`] naming the first offending field.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, ApiError> {
        let obj = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(obj) => obj,
            _ => return Err(ApiError::invalid(path, "must be an object")),
        };
        check_fields(obj, path)?;
        let field = |k: &str| format!("{path}.{k}");
        let env = string_array(obj.get("env"), &field("env"))?;
        for (i, entry) in env.iter().enumerate() {
            validate_env(entry).map_err(|e| ApiError::invalid(&format!("{path}.env[{i}]"), e))?;
        }
        Ok(Self {
            env,
            cmd: string_array(obj.get("cmd"), &field("cmd"))?,
            port_mappings: port_mappings(obj.get("portMappings"), &field("portMappings"))?,
            extra_hosts: extra_hosts(obj.get("extraHosts"), &field("extraHosts"))?,
        })
    }
}

fn check_fields(obj: &Map<String, Value>, path: &str) -> Result<(), ApiError> {
    for key in obj.keys() {
        if SUPPORTED.contains(&key.as_str()) {
            continue;
        }
        let field = format!("{path}.{key}");
        if NOT_YET_SUPPORTED.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                &field,
                "is not supported by this device yet",
            ));
        }
        return Err(ApiError::invalid(&field, "unknown field"));
    }
    Ok(())
}

fn string_array(value: Option<&Value>, path: &str) -> Result<Vec<String>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid(path, "must be an array of strings")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            Value::String(_) => Err(ApiError::invalid(&format!("{path}[{i}]"), "contains NUL")),
            _ => Err(ApiError::invalid(
                &format!("{path}[{i}]"),
                "must be a string",
            )),
        })
        .collect()
}

/// Kanto's rule: `^[a-zA-Z_]([a-zA-Z0-9_]*)(|=(.*))$`.
fn validate_env(entry: &str) -> Result<(), String> {
    let name = entry.split_once('=').map_or(entry, |(n, _)| n);
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid environmental variable declaration provided : {entry}"
        ))
    }
}

fn port_mappings(value: Option<&Value>, path: &str) -> Result<Vec<PortMapping>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid(path, "must be an array of objects")),
    };
    if items.len() > MAX_PORT_MAPPINGS {
        let reason = format!("at most {MAX_PORT_MAPPINGS} port mappings are supported");
        return Err(ApiError::invalid(path, reason));
    }
    let mut seen = BTreeSet::new();
    let mut mappings = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let mapping = port_mapping(item, &at)?;
        if !seen.insert((mapping.proto, mapping.host_port)) {
            let reason = format!(
                "host port {}/{} is mapped twice",
                mapping.host_port,
                mapping.proto.as_str()
            );
            return Err(ApiError::invalid(&format!("{at}.hostPort"), reason));
        }
        mappings.push(mapping);
    }
    Ok(mappings)
}

fn port_mapping(item: &Value, at: &str) -> Result<PortMapping, ApiError> {
    let obj = item
        .as_object()
        .ok_or_else(|| ApiError::invalid(at, "must be an object"))?;
    for key in obj.keys() {
        let known = [
            "proto",
            "containerPort",
            "hostIP",
            "hostPort",
            "hostPortEnd",
        ];
        if !known.contains(&key.as_str()) {
            return Err(ApiError::invalid(&format!("{at}.{key}"), "unknown field"));
        }
    }
    let proto = match obj.get("proto") {
        None | Some(Value::Null) => Protocol::Tcp,
        Some(Value::String(p)) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
        Some(Value::String(p)) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
        Some(_) => {
            return Err(ApiError::invalid(
                &format!("{at}.proto"),
                "must be tcp or udp",
            ))
        }
    };
    let container_port = required_port(obj.get("containerPort"), &format!("{at}.containerPort"))?;
    let host_port = required_port(obj.get("hostPort"), &format!("{at}.hostPort"))?;
    check_host_port_end(
        obj.get("hostPortEnd"),
        host_port,
        &format!("{at}.hostPortEnd"),
    )?;
    let host_ip = match obj.get("hostIP") {
        None | Some(Value::Null) => Ipv4Addr::UNSPECIFIED,
        Some(Value::String(s)) if s.is_empty() => Ipv4Addr::UNSPECIFIED,
        Some(Value::String(s)) => s.parse().map_err(|_| {
            ApiError::invalid(
                &format!("{at}.hostIP"),
                format!("{s:?} is not an IPv4 address"),
            )
        })?,
        Some(_) => {
            return Err(ApiError::invalid(
                &format!("{at}.hostIP"),
                "must be a string",
            ))
        }
    };
    Ok(PortMapping {
        proto,
        container_port,
        host_ip,
        host_port,
    })
}

/// `hostPortEnd` may be absent, 0 or equal to `hostPort`; ranges are not
/// supported yet.
fn check_host_port_end(value: Option<&Value>, host_port: u16, path: &str) -> Result<(), ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    match value.as_u64().and_then(|p| u16::try_from(p).ok()) {
        None => Err(ApiError::invalid(
            path,
            "must be an integer between 0 and 65535",
        )),
        Some(0) => Ok(()),
        Some(end) if end == host_port => Ok(()),
        Some(end) if end < host_port => Err(ApiError::invalid(path, "must not be below hostPort")),
        Some(_) => Err(ApiError::invalid(
            path,
            "port ranges are not supported by this device yet; omit it or set it equal to hostPort",
        )),
    }
}

fn required_port(value: Option<&Value>, path: &str) -> Result<u16, ApiError> {
    match value {
        None | Some(Value::Null) => Err(ApiError::invalid(path, "must be set")),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| ApiError::invalid(path, "must be an integer between 1 and 65535")),
    }
}

fn extra_hosts(value: Option<&Value>, path: &str) -> Result<Vec<ExtraHost>, ApiError> {
    string_array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            extra_host(entry).map_err(|e| ApiError::invalid(&format!("{path}[{i}]"), e))
        })
        .collect()
}

fn extra_host(entry: &str) -> Result<ExtraHost, String> {
    let (hostname, target) = entry
        .split_once(':')
        .ok_or_else(|| format!("host {entry} is incorrectly defined: expected <hostname>:<ip>"))?;
    let hostname_ok = !hostname.is_empty()
        && hostname.len() <= 253
        && !hostname.starts_with(['-', '.'])
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !hostname_ok {
        return Err(format!("invalid hostname {hostname:?}"));
    }
    let target = if target == HOST_IP_TOKEN {
        HostTarget::HostIp
    } else if let Ok(ip) = target.parse() {
        HostTarget::Ip(ip)
    } else if target.starts_with("host_ip_") || target.starts_with("container_") {
        return Err(format!(
            "the {target} token is not supported by this device yet"
        ));
    } else {
        return Err(format!("{target:?} is neither an IP address nor host_ip"));
    };
    Ok(ExtraHost {
        hostname: hostname.to_owned(),
        target,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(v: Value) -> String {
        ContainerConfig::from_json(&v, "config")
            .unwrap_err()
            .message
    }

    #[test]
    fn decodes_the_seed_example() {
        let v = json!({"extraHosts":["ctrhost:host_ip"],
                       "portMappings":[{"containerPort":80,"hostPort":5000}]});
        let c = ContainerConfig::from_json(&v, "config").unwrap();
        assert_eq!(c.extra_hosts[0].target, HostTarget::HostIp);
        assert_eq!(c.port_mappings[0].host_port, 5000);
        assert_eq!(c.port_mappings[0].proto, Protocol::Tcp);
        assert_eq!(c.port_mappings[0].host_ip, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn names_the_offending_field_by_json_path() {
        let cases = [
            (json!({"env": ["1BAD=x"]}), "config.env[0]: invalid environmental \
              variable declaration provided : 1BAD=x"),
            (json!({"env": "A=b"}), "config.env: must be an array of strings"),
            (json!({"cmd": [1]}), "config.cmd[0]: must be a string"),
            (json!({"bogus": 1}), "config.bogus: unknown field"),
            (json!({"privileged": true}), "config.privileged: is not supported by this device yet"),
            (json!({"portMappings": [{"containerPort": 80}]}), "config.portMappings[0].hostPort: must be set"),
            (json!({"portMappings": [{"containerPort": 70000, "hostPort": 1}]}),
             "config.portMappings[0].containerPort: must be an integer between 1 and 65535"),
            (json!({"portMappings": [{"containerPort": 80, "hostPort": 8080, "x": 1}]}),
             "config.portMappings[0].x: unknown field"),
            (json!({"extraHosts": ["nocolon"]}),
             "config.extraHosts[0]: host nocolon is incorrectly defined: expected <hostname>:<ip>"),
            (json!({"extraHosts": ["a:host_ip_eth0"]}),
             "config.extraHosts[0]: the host_ip_eth0 token is not supported by this device yet"),
        ];
        for (input, want) in cases {
            assert_eq!(err(input.clone()), want, "{input}");
        }
    }

    #[test]
    fn explains_each_bad_host_port_end() {
        let with_end = |end: Value| {
            err(
                json!({"portMappings": [{"containerPort": 80, "hostPort": 8080, "hostPortEnd": end}]}),
            )
        };
        let at = "config.portMappings[0].hostPortEnd";
        assert_eq!(
            with_end(json!("x")),
            format!("{at}: must be an integer between 0 and 65535")
        );
        assert_eq!(
            with_end(json!(80)),
            format!("{at}: must not be below hostPort")
        );
        assert!(with_end(json!(8090)).contains("port ranges are not supported"));
        let many: Vec<Value> = (1..=33)
            .map(|p| json!({"containerPort": 80, "hostPort": p}))
            .collect();
        assert!(err(json!({"portMappings": many})).starts_with("config.portMappings: at most 32"));
    }

    #[test]
    fn rejects_a_host_port_mapped_twice() {
        let v = json!({"portMappings": [{"containerPort": 80, "hostPort": 8080},
                                        {"containerPort": 81, "hostPort": 8080}]});
        assert_eq!(
            err(v),
            "config.portMappings[1].hostPort: host port 8080/tcp is mapped twice"
        );
    }

    #[test]
    fn accepts_ipv6_extra_hosts_and_env_removal() {
        let v = json!({"extraHosts": ["six:fd00::1"], "env": ["DROP", "EMPTY=", "_A1=x=y"]});
        let c = ContainerConfig::from_json(&v, "config").unwrap();
        assert!(matches!(
            c.extra_hosts[0].target,
            HostTarget::Ip(IpAddr::V6(_))
        ));
        assert_eq!(c.env.len(), 3);
    }
}
