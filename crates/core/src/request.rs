//! A create request as the factory carries it out, decoded from the Ditto
//! message `value` of `create` or `createWithConfig`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ContainerConfig;
use crate::error::ApiError;
use crate::ids::ContainerName;
use crate::image::ImageRef;

/// The operations of the `ContainerFactory` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Operation {
    /// `create`: an image reference and whether to start.
    Create,
    /// `createWithConfig`: adds a name and a configuration.
    CreateWithConfig,
}

impl Operation {
    /// The operation named `op`, if the feature has one.
    pub fn parse(op: &str) -> Option<Self> {
        match op {
            "create" => Some(Self::Create),
            "createWithConfig" => Some(Self::CreateWithConfig),
            _ => None,
        }
    }

    /// The operation's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::CreateWithConfig => "createWithConfig",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Create => &["imageRef", "start"],
            Self::CreateWithConfig => &["imageRef", "name", "config", "start"],
        }
    }
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CreateRequest {
    /// The operation it came from.
    pub operation: Operation,
    /// The normalised image reference.
    pub image: ImageRef,
    /// The container name, unique among live containers.
    pub name: Option<ContainerName>,
    /// The container configuration.
    pub config: ContainerConfig,
    /// Start the container once created.
    pub start: bool,
}

impl CreateRequest {
    /// Decodes the message `value` of `operation`.
    ///
    /// # Errors
    /// A 400 [`ApiError`] naming the offending field by its JSON path
    /// relative to `value`.
    pub fn from_value(operation: Operation, value: &Value) -> Result<Self, ApiError> {
        let obj = value.as_object().ok_or_else(|| {
            ApiError::invalid(
                "value",
                format!("{} expects a JSON object", operation.as_str()),
            )
        })?;
        if let Some(key) = obj
            .keys()
            .find(|k| !operation.fields().contains(&k.as_str()))
        {
            return Err(ApiError::invalid(key, "unknown field"));
        }
        let image = match obj.get("imageRef") {
            None | Some(Value::Null) => return Err(ApiError::invalid("imageRef", "must be set")),
            Some(Value::String(s)) => {
                ImageRef::parse(s).map_err(|e| ApiError::invalid("imageRef", e))?
            }
            Some(_) => return Err(ApiError::invalid("imageRef", "must be a string")),
        };
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                Some(ContainerName::new(s).map_err(|e| ApiError::invalid("name", e))?)
            }
            Some(_) => return Err(ApiError::invalid("name", "must be a string")),
        };
        let start = match obj.get("start") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid("start", "must be a boolean")),
        };
        let config =
            ContainerConfig::from_json(obj.get("config").unwrap_or(&Value::Null), "config")?;
        Ok(Self {
            operation,
            image,
            name,
            config,
            start,
        })
    }

    /// A digest that tells a retry (same fingerprint) from a different
    /// request reusing a correlation-id. It is taken over the decoded
    /// request, so spelling differences that mean the same (key order,
    /// `start: false` spelled out, `hello-world` for
    /// `docker.io/library/hello-world:latest`) are the same request.
    pub fn fingerprint(&self) -> String {
        // Serialising plain data into a string cannot fail.
        let canonical = serde_json::to_string(self).unwrap_or_default();
        hex(&Sha256::digest(canonical.as_bytes()))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a create request ended: what the client is answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The container exists (and runs, if start was asked for).
    Created(crate::ids::ContainerId),
    /// The request failed; nothing was left behind unless the message says so.
    Failed(ApiError),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_create_with_default_start() {
        let r =
            CreateRequest::from_value(Operation::Create, &json!({"imageRef": "busybox"})).unwrap();
        assert!(!r.start);
        assert_eq!(r.image.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn rejects_fields_the_operation_does_not_have() {
        let v = json!({"imageRef": "busybox", "name": "x"});
        let e = CreateRequest::from_value(Operation::Create, &v).unwrap_err();
        assert_eq!(e.message, "name: unknown field");
        assert!(CreateRequest::from_value(Operation::CreateWithConfig, &v).is_ok());
    }

    #[test]
    fn names_each_bad_field() {
        let cases = [
            (json!({}), "imageRef: must be set"),
            (json!({"imageRef": ""}), "imageRef: must be set"),
            (json!({"imageRef": 5}), "imageRef: must be a string"),
            (
                json!({"imageRef": "a", "start": "yes"}),
                "start: must be a boolean",
            ),
            (
                json!({"imageRef": "a", "name": ".x"}),
                "name: invalid container name format : .x",
            ),
            (
                json!({"imageRef": "a", "config": []}),
                "config: must be an object",
            ),
            (json!([1]), "value: createWithConfig expects a JSON object"),
        ];
        for (v, want) in cases {
            let e = CreateRequest::from_value(Operation::CreateWithConfig, &v).unwrap_err();
            assert_eq!(e.message, want, "{v}");
        }
    }

    #[test]
    fn fingerprint_is_of_the_meaning_not_the_spelling() {
        let print = |op, v: Value| CreateRequest::from_value(op, &v).unwrap().fingerprint();
        let full = print(
            Operation::Create,
            json!({"imageRef": "docker.io/library/hello-world:latest", "start": false}),
        );
        assert_eq!(
            full,
            print(Operation::Create, json!({"imageRef": "hello-world"}))
        );
        let named = json!({"imageRef": "hello-world", "name": null});
        assert_eq!(
            full,
            print(
                Operation::Create,
                json!({"start": false, "imageRef": "hello-world"})
            )
        );
        assert_ne!(full, print(Operation::CreateWithConfig, named));
        assert_ne!(
            full,
            print(
                Operation::Create,
                json!({"imageRef": "hello-world", "start": true})
            )
        );
    }
}
