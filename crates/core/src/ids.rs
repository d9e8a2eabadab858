//! Validated identifiers. Each has a private field and a constructor that
//! checks it, so a value of these types is always well formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The ID of a container: a UUID v4 chosen by the factory, and also the
/// containerd container ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerId(Uuid);

/// A string is not a container ID.
#[derive(Debug, thiserror::Error)]
#[error("invalid container id {0:?}: must be a UUID")]
pub struct InvalidContainerId(String);

impl ContainerId {
    /// A fresh random container ID.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses a container ID in hyphenated UUID form.
    ///
    /// # Errors
    /// [`InvalidContainerId`] when `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, InvalidContainerId> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidContainerId(s.to_owned()))
    }

    /// The first 12 hex digits, used where names must be short (hostnames).
    pub fn short(&self) -> String {
        self.0.simple().to_string()[..12].to_owned()
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A container name: `^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`, as in Kanto.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerName(String);

/// The longest name accepted; it also becomes the hostname, whose limit is 63.
pub const MAX_NAME_LEN: usize = 63;

impl ContainerName {
    /// Validates a container name.
    ///
    /// # Errors
    /// A message in Kanto's words when the format is wrong.
    pub fn new(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !first_ok || !rest_ok {
            return Err(format!("invalid container name format : {s}"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(format!("must be at most {MAX_NAME_LEN} characters long"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The thing that represents this device's containers, e.g.
/// `org.eclipse.kanto:gw1:edge:containers`. Its namespace is the part
/// before the first `:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingId(String);

impl ThingId {
    /// Validates a thing ID: `<namespace>:<name>`, without `/`, `#` or `+`
    /// (they would break the MQTT topics built from it).
    ///
    /// # Errors
    /// A message saying what is wrong with `s`.
    pub fn new(s: &str) -> Result<Self, String> {
        if s.contains(['/', '#', '+']) || s.chars().any(char::is_whitespace) {
            return Err(format!(
                "thing id {s:?} must not contain '/', '#', '+' or spaces"
            ));
        }
        match s.split_once(':') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Self(s.to_owned())),
            _ => Err(format!(
                "thing id {s:?} must have the form <namespace>:<name>"
            )),
        }
    }

    /// The thing ID of a device: `<device id>:edge:containers`.
    ///
    /// # Errors
    /// As [`ThingId::new`].
    pub fn for_device(device_id: &str) -> Result<Self, String> {
        Self::new(&format!("{device_id}:edge:containers"))
    }

    /// The Ditto topic prefix `<namespace>/<name>`.
    pub fn ditto_prefix(&self) -> String {
        self.0.replacen(':', "/", 1)
    }

    /// The thing ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ThingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `correlation-id` header of a request: any non-empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// Wraps a non-empty correlation-id.
    pub fn new(s: &str) -> Option<Self> {
        (!s.is_empty()).then(|| Self(s.to_owned()))
    }

    /// The correlation-id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kanto_container_names() {
        for ok in ["a", "_x", "web-1.prod", "A_b.c-d"] {
            assert!(ContainerName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_container_names_in_kantos_words() {
        for bad in ["", ".x", "-x", "a b", "a/b", "ä"] {
            let err = ContainerName::new(bad).unwrap_err();
            assert_eq!(err, format!("invalid container name format : {bad}"));
        }
        assert!(ContainerName::new(&"a".repeat(64)).is_err());
    }

    #[test]
    fn thing_id_splits_at_first_colon() {
        let id = ThingId::new("org.eclipse.kanto:gw1:edge:containers").unwrap();
        assert_eq!(id.ditto_prefix(), "org.eclipse.kanto/gw1:edge:containers");
        assert_eq!(
            ThingId::for_device("a:b").unwrap().as_str(),
            "a:b:edge:containers"
        );
        assert!(ThingId::new("nocolon").is_err());
        assert!(ThingId::new("a:b/c").is_err());
    }

    #[test]
    fn container_id_round_trips() {
        let id = ContainerId::generate();
        assert_eq!(ContainerId::parse(&id.to_string()).unwrap(), id);
        assert!(ContainerId::parse("nope").is_err());
        assert_eq!(id.short().len(), 12);
    }
}
