//! The error taxonomy shared by every component, mapped onto Ditto's status
//! and error codes in exactly one place ([`ErrorCode::status`]).

use serde::{Deserialize, Serialize};

/// The classes of failure a client can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or its content is invalid.
    ParameterInvalid,
    /// A known header carries a value of the wrong JSON type.
    HeaderInvalid,
    /// The addressed feature, operation or container does not exist.
    SubjectNotFound,
    /// The request conflicts with the current state (name or port in use,
    /// correlation-id reused for another request).
    Conflict,
    /// The payload is larger than the configured limit.
    PayloadTooLarge,
    /// Pulling, creating or starting failed on the device.
    ExecutionFailed,
}

impl ErrorCode {
    /// Every class, for decoding.
    pub const ALL: [Self; 6] = [
        Self::ParameterInvalid,
        Self::HeaderInvalid,
        Self::SubjectNotFound,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::ExecutionFailed,
    ];

    /// The class whose Ditto `error` string is `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP-like status that Ditto carries for this class.
    pub fn status(self) -> u16 {
        match self {
            Self::ParameterInvalid | Self::HeaderInvalid => 400,
            Self::SubjectNotFound => 404,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::ExecutionFailed => 500,
        }
    }

    /// The Ditto `error` string for this class.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParameterInvalid => "messages:parameter.invalid",
            Self::HeaderInvalid => "messages:header.invalid",
            Self::SubjectNotFound => "messages:subject.notfound",
            Self::Conflict => "containers:conflict",
            Self::PayloadTooLarge => "containers:payload.toolarge",
            Self::ExecutionFailed => "messages:execution.failed",
        }
    }
}

/// An error as the client sees it: a class and a message that names the
/// field, container or image concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The class of the error.
    pub code: ErrorCode,
    /// What failed, naming the field by its JSON path where there is one.
    pub message: String,
}

impl ApiError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A 400 for the field at JSON path `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        let message = if field.is_empty() {
            reason.to_string()
        } else {
            format!("{field}: {reason}")
        };
        Self::new(ErrorCode::ParameterInvalid, message)
    }

    /// A 404 for a subject that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::SubjectNotFound, message)
    }

    /// A 409 for a request that conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// A 500 for a failure while carrying out the request.
    pub fn execution(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ExecutionFailed, message)
    }
}

/// Longest excerpt of a client's value quoted back in a message.
const MAX_QUOTE: usize = 64;

/// `value` for quoting in a message, shortened when long: an answer must
/// not grow with the garbage it reports.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTE) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &value[..end], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_long_values_shortened() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert!(q.len() < 100 && q.ends_with("(1000 bytes)"), "{q}");
    }
}
