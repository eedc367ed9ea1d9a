//! The flannel plugin's own network configuration (what the runtime sends on stdin).
//!
//! ```json
//! {"cniVersion":"0.3.1","name":"cbr0","type":"flannel",
//!  "subnetFile":"/run/flannel/subnet.env","dataDir":"/var/lib/cni/flannel",
//!  "delegate":{"hairpinMode":true,"isDefaultGateway":true},
//!  "ipam":{"routes":[{"dst":"10.96.0.0/12"}]}}
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::FlannelError;

pub use flannel_state::{DEFAULT_DATA_DIR, DEFAULT_SUBNET_FILE};

/// The keys flannel reads; everything else in the config is ignored, as in Go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subnet_file: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    delegate: Option<Map<String, Value>>,
    #[serde(default)]
    ipam: Option<Map<String, Value>>,
    #[serde(default)]
    runtime_config: Option<Map<String, Value>>,
    #[serde(default)]
    prev_result: Option<Value>,
}

/// Parsed flannel configuration with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FlannelConf {
    /// `cniVersion` ("" when absent); copied to the delegate when non-empty.
    pub cni_version: String,
    /// Network name; always becomes the delegate's `name`.
    pub name: String,
    /// `subnetFile` (default [`DEFAULT_SUBNET_FILE`]; an empty string also means the default).
    pub subnet_file: PathBuf,
    /// `dataDir` (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `delegate`: the base of the delegate config (`{}` when absent or null).
    pub delegate: Map<String, Value>,
    /// Top-level `ipam`: the base of the delegate's `ipam`.
    pub ipam: Option<Map<String, Value>>,
    /// `runtimeConfig`, handed to the delegate unchanged.
    pub runtime_config: Option<Map<String, Value>>,
    /// `prevResult` (CHECK forwards it to the delegate).
    pub prev_result: Option<Value>,
    /// The whole config object, for keys forwarded verbatim (`cni.dev/valid-attachments` on GC).
    pub raw: Map<String, Value>,
}

impl FlannelConf {
    /// Parses the stdin bytes. Errors are decoding errors (`failed to load netconf: ...`).
    pub fn parse(bytes: &[u8]) -> Result<Self, FlannelError> {
        let raw: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| FlannelError::Decode(e.to_string()))?;
        let conf: RawConf = serde_json::from_value(Value::Object(raw.clone()))
            .map_err(|e| FlannelError::Decode(e.to_string()))?;
        let or_default = |p: Option<PathBuf>, d: &str| match p {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => PathBuf::from(d),
        };
        Ok(FlannelConf {
            cni_version: conf.cni_version.unwrap_or_default(),
            name: conf.name.unwrap_or_default(),
            subnet_file: or_default(conf.subnet_file, DEFAULT_SUBNET_FILE),
            data_dir: or_default(conf.data_dir, DEFAULT_DATA_DIR),
            delegate: conf.delegate.unwrap_or_default(),
            ipam: conf.ipam,
            runtime_config: conf.runtime_config,
            prev_result: conf.prev_result,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = FlannelConf::parse(br#"{"name":"cni-flannel","type":"flannel"}"#).expect("valid");
        assert_eq!(c.name, "cni-flannel");
        assert_eq!(c.cni_version, "");
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.delegate.is_empty());
        assert!(c.ipam.is_none());
        assert!(c.runtime_config.is_none());
    }

    #[test]
    fn explicit_values() {
        let c = FlannelConf::parse(
            json!({"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"/tmp/s.env",
                   "dataDir":"/tmp/d","delegate":{"hairpinMode":true},"ipam":{"x":1},
                   "runtimeConfig":{"ips":["10.1.17.9"]},"delegateUnknown":1})
            .to_string()
            .as_bytes(),
        )
        .expect("valid");
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.subnet_file, PathBuf::from("/tmp/s.env"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.delegate.get("hairpinMode"), Some(&json!(true)));
        assert_eq!(c.ipam.as_ref().and_then(|i| i.get("x")), Some(&json!(1)));
        assert_eq!(c.runtime_config.as_ref().map(Map::len), Some(1));
        assert_eq!(c.raw.get("delegateUnknown"), Some(&json!(1)));
    }

    #[test]
    fn empty_strings_and_nulls_mean_defaults() {
        let c =
            FlannelConf::parse(br#"{"name":"n","subnetFile":"","dataDir":null,"delegate":null}"#)
                .expect("valid");
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.delegate.is_empty());
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        for bad in [
            r#"{"name":"n","delegate":"bridge"}"#,
            r#"{"name":"n","ipam":[1]}"#,
            r#"{"name":"n","subnetFile":5}"#,
            r#"[1,2]"#,
            r#"{"name":"n""#,
        ] {
            let err = FlannelConf::parse(bad.as_bytes()).expect_err(bad);
            assert!(matches!(err, FlannelError::Decode(_)), "{bad}: {err:?}");
            assert!(
                err.to_string().starts_with("failed to load netconf: "),
                "{err}"
            );
        }
    }
}
