//! Network configuration (SPEC §1 "Network configuration format", §3 "Deriving request
//! configuration").
//!
//! [`NetConf`] holds the keys every plugin shares. Plugin-specific keys stay in
//! [`NetConf::other`]; plugins usually deserialize their own struct from `CmdArgs::stdin`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{CniError, code};
use crate::result::CniResult;
use crate::version::DEFAULT_CONFIG_VERSION;

mod conflist;
pub use conflist::{CONF_EXTENSIONS, ConfList, ConfListError, conf_files};

/// A JSON object.
pub type Map = serde_json::Map<String, serde_json::Value>;

/// The GC input key (SPEC §2 GC). libcni also sends `cni.dev/attachments` (cni#1101).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The misspelled GC key that libcni sends too.
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// The keys every plugin config shares, as the runtime passes them on stdin.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// `cniVersion`; `""` if absent (read as 0.1.0).
    #[serde(default)]
    pub cni_version: String,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// Plugin type (the executable name).
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// `capabilities` (removed by the runtime before execution; kept for tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map>,
    /// `ipam`: the IPAM plugin to delegate to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    /// `dns` (the config's DNS settings, passed through by most plugins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<serde_json::Value>,
    /// `runtimeConfig`: capability arguments injected by the runtime (CONVENTIONS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map>,
    /// `args`: extra arguments, e.g. `args.cni.ips` (CONVENTIONS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map>,
    /// `prevResult` of any version; read it with [`NetConf::parsed_prev_result`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
    /// Every other key (plugin specific, `cni.dev/*`).
    #[serde(flatten)]
    pub other: Map,
}

/// The `ipam` section: `type` plus the IPAM plugin's own keys.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
pub struct IpamConf {
    /// The IPAM plugin's type.
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    /// Its other keys.
    #[serde(flatten)]
    pub other: Map,
}

/// GC input: `cni.dev/valid-attachments` entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub struct Attachment {
    /// The container ID of a live attachment.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface name.
    pub ifname: String,
}

/// `runtimeConfig.portMappings` entry (CONVENTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp`/`udp`/`sctp`.
    #[serde(default)]
    pub protocol: String,
    /// Host IP to bind, if any.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// `runtimeConfig.dns` (CONVENTIONS.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// `runtimeConfig.bandwidth` (CONVENTIONS.md), bits per second / bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate.
    #[serde(default)]
    pub ingress_rate: u64,
    /// Ingress burst.
    #[serde(default)]
    pub ingress_burst: u64,
    /// Egress rate.
    #[serde(default)]
    pub egress_rate: u64,
    /// Egress burst.
    #[serde(default)]
    pub egress_burst: u64,
}

impl NetConf {
    /// Parses the shared keys from the exact stdin bytes.
    pub fn from_slice(stdin: &[u8]) -> Result<Self, CniError> {
        serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("error unmarshall network config: {e}"),
            )
        })
    }

    /// The config version, `""` read as 0.1.0.
    pub fn version_or_default(&self) -> &str {
        if self.cni_version.is_empty() {
            DEFAULT_CONFIG_VERSION
        } else {
            &self.cni_version
        }
    }

    /// GC input from `other["cni.dev/valid-attachments"]` (falling back to the misspelled
    /// `cni.dev/attachments` libcni also sends). `None` when neither key is present.
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>, CniError> {
        let raw = self
            .other
            .get(VALID_ATTACHMENTS_KEY)
            .or_else(|| self.other.get(ATTACHMENTS_KEY));
        match raw {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => Vec::<Attachment>::deserialize(v).map(Some).map_err(|e| {
                CniError::new(
                    code::DECODING_FAILURE,
                    format!("failed to parse {VALID_ATTACHMENTS_KEY}: {e}"),
                )
            }),
        }
    }

    /// The `prevResult`, parsed; a missing `prevResult.cniVersion` is the config's
    /// (Go `version.ParsePrevResult`). Errors are prefixed `could not parse prevResult`.
    pub fn parsed_prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => CniResult::from_json(v, self.version_or_default())
                .map(Some)
                .map_err(|e| e.context("could not parse prevResult")),
        }
    }

    /// A typed `runtimeConfig` entry (e.g. `"portMappings"`, `"ipRanges"`, `"mac"`, `"ips"`).
    pub fn runtime_config_get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CniError> {
        get_typed(self.runtime_config.as_ref(), key, "runtimeConfig")
    }

    /// A typed `args.cni` entry (e.g. `"ips"`, `"labels"`; CONVENTIONS.md).
    pub fn args_cni_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        let cni = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.as_object());
        get_typed(cni, key, "args.cni")
    }

    /// Whether the plugin config declared capability `name` as supported.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// `deserialize_with` helper: `null` reads as the type's default, as Go's `encoding/json`
/// leaves the zero value (serde would reject it). Combine with `#[serde(default)]` for
/// absent keys.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn get_typed<T: DeserializeOwned>(
    map: Option<&Map>,
    key: &str,
    what: &str,
) -> Result<Option<T>, CniError> {
    match map.and_then(|m| m.get(key)) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("failed to parse {what}.{key}: {e}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn netconf_keys() {
        let raw = br#"{"cniVersion":"1.1.0","name":"n","type":"bridge","bridge":"cni0",
            "ipam":{"type":"host-local","ranges":[]},"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]},
            "args":{"cni":{"ips":["10.0.0.5"]}},
            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
            "prevResult":{"ips":[{"address":"10.0.0.5/24"}]}}"#;
        let c = NetConf::from_slice(raw).unwrap();
        assert_eq!(c.plugin_type, "bridge");
        assert_eq!(c.other["bridge"], json!("cni0"));
        assert_eq!(c.ipam.as_ref().unwrap().ipam_type, "host-local");
        assert!(c.ipam.as_ref().unwrap().other.contains_key("ranges"));
        let pm: Vec<PortMapping> = c.runtime_config_get("portMappings").unwrap().unwrap();
        assert_eq!(pm[0].container_port, 8080);
        let ips: Vec<String> = c.args_cni_get("ips").unwrap().unwrap();
        assert_eq!(ips, vec!["10.0.0.5"]);
        assert_eq!(
            c.valid_attachments().unwrap().unwrap(),
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        let prev = c.parsed_prev_result().unwrap().unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.0.0.5/24");
        // Round trip keeps unknown keys.
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["bridge"], json!("cni0"));
        assert_eq!(back["ipam"]["ranges"], json!([]));
    }

    #[test]
    fn defaults_and_errors() {
        let c = NetConf::from_slice(br#"{"name":"n","type":"x"}"#).unwrap();
        assert_eq!(c.version_or_default(), "0.1.0");
        assert_eq!(c.valid_attachments().unwrap(), None);
        assert_eq!(c.parsed_prev_result().unwrap(), None);
        let e = NetConf::from_slice(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        assert!(e.msg.starts_with("error unmarshall network config: "));
        let c = NetConf::from_slice(
            br#"{"name":"n","cni.dev/attachments":[{"containerID":"a","ifname":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments().unwrap().unwrap().len(), 1);
        let c = NetConf::from_slice(br#"{"name":"n","cni.dev/valid-attachments":"x"}"#).unwrap();
        assert_eq!(
            c.valid_attachments().unwrap_err().code,
            code::DECODING_FAILURE
        );
    }

    /// Found by fuzzing (`fuzz/corpus/netconf/float-round-trip`): serde_json's default float
    /// parser is not correctly rounded, so a number with many digits read, written and read
    /// again changed its last bits, and a config passed through (flannel's delegate, a
    /// prevResult) was not the one given.
    #[test]
    fn numbers_survive_a_round_trip() {
        let raw = br#"{"name":"n","plugins":[0,3333333333333333333333333333333333333333333333333333333313333333333333333333333,0.30000000000000004,1e-7]}"#;
        let c = NetConf::from_slice(raw).unwrap();
        let again = NetConf::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn capabilities() {
        let c: NetConf =
            serde_json::from_value(json!({"name":"x","capabilities":{"portMappings":true}}))
                .unwrap();
        assert!(c.has_capability("portMappings"));
        assert!(!c.has_capability("bandwidth"));
    }
}
