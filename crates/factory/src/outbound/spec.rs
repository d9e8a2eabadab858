//! Builds the OCI runtime spec (runtime-spec 1.0, as runc 1.1 reads it) of
//! a container from its image config and the request: process, hostname,
//! the files the factory manages (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`) and the network namespace prepared for it.

use std::path::Path;

use cf_core::config::ContainerConfig;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

/// Where the spec's pieces come from.
pub struct SpecInput<'a> {
    /// The image's `config` section.
    pub image_config: &'a Value,
    /// The request's configuration.
    pub config: &'a ContainerConfig,
    /// The container's hostname.
    pub hostname: &'a str,
    /// Directory holding the container's hosts, resolv.conf and hostname files.
    pub files_dir: &'a Path,
    /// Path of the network namespace the container joins.
    pub netns: &'a Path,
    /// cgroup path of the container.
    pub cgroups_path: String,
}

/// The spec as JSON, ready to be wrapped in a protobuf `Any`.
///
/// # Errors
/// A message when the default spec cannot be built or serialised.
pub fn build(input: &SpecInput<'_>) -> Result<Value, String> {
    let default = Spec::default();
    let mut spec = serde_json::to_value(&default).map_err(|e| e.to_string())?;
    spec["hostname"] = json!(input.hostname);
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    spec["process"]["args"] = json!(args(input.image_config, &input.config.cmd)?);
    spec["process"]["env"] = json!(env(input.image_config, &input.config.env));
    spec["process"]["cwd"] = json!(cwd(input.image_config));
    spec["process"]["user"] = user(input.image_config)?;
    spec["process"]["terminal"] = json!(false);
    spec["linux"]["cgroupsPath"] = json!(input.cgroups_path);
    set_network_namespace(&mut spec, input.netns);
    add_file_mounts(&mut spec, input.files_dir);
    Ok(spec)
}

/// ENTRYPOINT followed by the request's cmd, or else the image's CMD.
fn args(image: &Value, cmd: &[String]) -> Result<Vec<String>, String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut args = strings(&image["Entrypoint"]);
    if cmd.is_empty() {
        args.extend(strings(&image["Cmd"]));
    } else {
        args.extend(cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err("the image has no command and the request gives none (config.cmd)".into());
    }
    Ok(args)
}

/// The image's environment with the request's entries applied in order:
/// `K=V` sets, a bare `K` removes.
fn env(image: &Value, overrides: &[String]) -> Vec<String> {
    let mut env: Vec<String> = image["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for entry in overrides {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
        if entry.contains('=') {
            env.push(entry.clone());
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env
}

fn cwd(image: &Value) -> String {
    match image["WorkingDir"].as_str() {
        Some(dir) if dir.starts_with('/') => dir.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Numeric `uid[:gid]` users only: resolving names needs the image's
/// /etc/passwd, which the factory does not read yet.
// TODO(factory): resolve user names from the image's /etc/passwd and group.
fn user(image: &Value) -> Result<Value, String> {
    let spec = image["User"].as_str().unwrap_or_default();
    if spec.is_empty() {
        return Ok(json!({"uid": 0, "gid": 0}));
    }
    let (uid, gid) = spec.split_once(':').unwrap_or((spec, "0"));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(uid), Ok(gid)) => Ok(json!({"uid": uid, "gid": gid})),
        _ => Err(format!(
            "the image's user {spec:?} is not numeric; named users are not supported yet"
        )),
    }
}

fn set_network_namespace(spec: &mut Value, netns: &Path) {
    let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() else {
        return;
    };
    namespaces.retain(|ns| ns["type"] != "network");
    namespaces.push(json!({"type": "network", "path": netns}));
}

fn add_file_mounts(spec: &mut Value, dir: &Path) {
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        return;
    };
    for file in ["hosts", "resolv.conf", "hostname"] {
        mounts.push(json!({
            "destination": format!("/etc/{file}"),
            "type": "bind",
            "source": dir.join(file),
            "options": ["rbind", "rprivate", "rw"],
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(image: &'a Value, config: &'a ContainerConfig) -> SpecInput<'a> {
        SpecInput {
            image_config: image,
            config,
            hostname: "web",
            files_dir: Path::new("/s/c"),
            netns: Path::new("/run/netns/cf-x"),
            cgroups_path: "/cf/x".into(),
        }
    }

    #[test]
    fn request_cmd_replaces_image_cmd_but_keeps_entrypoint() {
        let image = json!({"Entrypoint": ["/init"], "Cmd": ["a"], "Env": ["PATH=/bin", "X=1"]});
        let config = ContainerConfig {
            cmd: vec!["b".into()],
            env: vec!["X".into(), "Y=2".into()],
            ..Default::default()
        };
        let spec = build(&input(&image, &config)).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/init", "b"]));
        assert_eq!(spec["process"]["env"], json!(["PATH=/bin", "Y=2"]));
        assert_eq!(spec["root"]["readonly"], json!(false));
    }

    #[test]
    fn joins_the_prepared_network_namespace() {
        let image = json!({"Cmd": ["sh"]});
        let spec = build(&input(&image, &ContainerConfig::default())).unwrap();
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        let net: Vec<_> = namespaces
            .iter()
            .filter(|n| n["type"] == "network")
            .collect();
        assert_eq!(
            net,
            [&json!({"type": "network", "path": "/run/netns/cf-x"})]
        );
        let hosts = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/etc/hosts");
        assert!(hosts);
    }

    #[test]
    fn fails_without_any_command() {
        let image = json!({});
        assert!(build(&input(&image, &ContainerConfig::default())).is_err());
    }
}
