//! The CNI error object (SPEC §5 "Error") and the well-known error codes.
//!
//! A plugin reports failure by printing this object on stdout and exiting non-zero. Like the Go
//! library (`types.Error`), we print it without `cniVersion`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Spec error codes (SPEC §5 "Error"; Go `pkg/types/types.go`). Codes 0-99 are reserved by the
/// spec; plugins may use 100 and up for their own errors.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration (the message names the key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist (the runtime may skip cleanup).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like `CNI_COMMAND`, `CNI_CONTAINERID`, etc.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure, e.g. reading stdin or a file.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content, e.g. unmarshalling the network config.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config: a validation failure of the configuration.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Invalid netns (Go library only, e.g. `CNI_NETNS` is the plugin's own netns).
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later: a transient condition (e.g. a lock held by someone else).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available, ADDs will fail.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin is not available and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Internal error: what the Go skel uses for every untyped plugin error.
    pub const INTERNAL: u32 = 999;
}

/// The CNI error object. Serializes as `{"code":N,"msg":"..","details":".."}` (`details` omitted
/// when empty).
///
/// `Display` prints `msg`, or `msg: details` when details are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The error code ([`code`]).
    #[serde(default)]
    pub code: u32,
    /// A short message.
    #[serde(default)]
    pub msg: String,
    /// Longer details, omitted from the JSON when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// A new error without details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Sets the details.
    pub fn with_details(self, d: impl Into<String>) -> Self {
        CniError {
            details: d.into(),
            ..self
        }
    }

    /// Shorthand for an internal (code 999) error, what Go reports for untyped errors.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// Shorthand for an invalid network configuration (code 7).
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg)
    }

    /// Prefixes the message with some context (`"<ctx>: <msg>"`), keeping the code.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        CniError {
            msg: format!("{ctx}: {}", self.msg),
            ..self
        }
    }

    /// The JSON text printed on stdout: Go-like, indented with 4 spaces (`types.Error.Print`).
    pub fn to_json_string(&self) -> String {
        crate::skel::to_go_json(&serde_json::json!(self))
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

/// A JSON decoding failure is code 6 (decoding failure).
impl From<serde_json::Error> for CniError {
    fn from(e: serde_json::Error) -> Self {
        CniError::new(code::DECODING_FAILURE, e.to_string())
    }
}

/// An I/O failure is code 5.
impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::new(code::IO_FAILURE, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(code::INVALID_ENVIRONMENT, "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":4,"msg":"boom"}"#
        );
        let e = e.with_details("more");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":4,"msg":"boom","details":"more"}"#
        );
        assert_eq!(e.to_string(), "boom: more");
        assert_eq!(
            e.to_json_string(),
            "{\n    \"code\": 4,\n    \"msg\": \"boom\",\n    \"details\": \"more\"\n}"
        );
        // A delegate's error may carry cniVersion; it is ignored.
        let back: CniError =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","code":7,"msg":"x"}"#).unwrap();
        assert_eq!(back, CniError::new(7, "x"));
    }

    #[test]
    fn conversions() {
        let e: CniError = serde_json::from_str::<serde_json::Value>("{")
            .unwrap_err()
            .into();
        assert_eq!(e.code, code::DECODING_FAILURE);
        let e: CniError = std::io::Error::other("disk").into();
        assert_eq!(e.code, code::IO_FAILURE);
        assert_eq!(e.msg, "disk");
        assert_eq!(CniError::internal("x").context("ctx").msg, "ctx: x");
    }
}
