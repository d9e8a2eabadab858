//! Image references in the Docker/OCI form, normalised the way Docker does:
//! `hello-world` means `docker.io/library/hello-world:latest`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::quote;

/// The distribution spec's limit on repository names.
const MAX_REPOSITORY_LEN: usize = 255;

/// The registry assumed when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises an image reference.
    ///
    /// # Errors
    /// A message saying which part of the reference is malformed.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must be set".into());
        }
        if s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("invalid image reference {}", quote(s)));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d)?)),
            None => (s, None),
        };
        let (registry, path) = split_registry(rest);
        validate_registry(&registry)?;
        let (path, tag) = split_tag(path);
        let repository = normalise_repository(&registry, path)?;
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (t, _) => t.map(str::to_owned),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5001`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/hello-world`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn split_registry(s: &str) -> (String, &str) {
    match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_owned(), rest)
        }
        _ => (DEFAULT_REGISTRY.to_owned(), s),
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("invalid registry {}", quote(registry)))
    }
}

fn split_tag(path: &str) -> (&str, Option<&str>) {
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    match path[last_slash..].rfind(':') {
        Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
        None => (path, None),
    }
}

fn normalise_repository(registry: &str, path: &str) -> Result<String, String> {
    let valid_component = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if path.len() > MAX_REPOSITORY_LEN {
        return Err(format!(
            "repository must be at most {MAX_REPOSITORY_LEN} characters"
        ));
    }
    if !path.split('/').all(valid_component) {
        return Err(format!(
            "invalid repository {}: lowercase letters, digits and ._- only",
            quote(path)
        ));
    }
    if registry == DEFAULT_REGISTRY && !path.contains('/') {
        return Ok(format!("library/{path}"));
    }
    Ok(path.to_owned())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {}", quote(tag)))
    }
}

fn parse_digest(d: &str) -> Result<String, String> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(d.to_ascii_lowercase())
        }
        _ => Err(format!(
            "invalid digest {}: expected sha256:<64 hex digits>",
            quote(d)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("hello-world", "docker.io/library/hello-world:latest"),
            (
                "docker.io/library/hello-world:latest",
                "docker.io/library/hello-world:latest",
            ),
            ("eclipse/kanto:1.0", "docker.io/eclipse/kanto:1.0"),
            (
                "127.0.0.1:5001/library/busybox",
                "127.0.0.1:5001/library/busybox:latest",
            ),
            ("localhost/a/b:v2", "localhost/a/b:v2"),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn keeps_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "busybox:",
            "busybox@sha256:12",
            "a//b",
            "x:/y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
