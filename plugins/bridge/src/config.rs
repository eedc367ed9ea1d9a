//! The bridge network configuration: every key of the reference plugin, its defaults
//! and its validation (messages as the Go plugin's `loadNetConf`/`cmdAdd`).

use cni::config::nullable;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Bridge used when the config has no `bridge` key.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Highest VLAN ID (4095 is reserved by 802.1Q).
pub const MAX_VLAN_ID: i64 = 4094;
/// The VLAN a Linux bridge port gets by default (the bridge's `default_pvid`).
pub const DEFAULT_VLAN_ID: u16 = 1;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// The CNI_ARGS keys this plugin understands (`IgnoreUnknown` is Go's `CommonArgs`).
pub const KNOWN_CNI_ARGS: &[&str] = &["IgnoreUnknown", "MAC"];
/// Values accepted for `ipMasqBackend`.
pub const IPMASQ_BACKENDS: &[&str] = &["iptables", "nftables"];

/// One `vlanTrunk` entry: `{"id": N}` or `{"minID": A, "maxID": B}` (both may appear).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VlanTrunk {
    #[serde(default, rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    pub max_id: Option<i64>,
    #[serde(default)]
    pub id: Option<i64>,
}

/// A `dns` block, as in the result (`nameservers`, `domain`, `search`, `options`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub domain: String,
    #[serde(default)]
    pub search: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<Vec<String>>,
}

impl DnsConf {
    /// Go's `dnsConfSet`: any list present (even empty) or a domain.
    pub fn is_set(&self) -> bool {
        self.nameservers.is_some()
            || self.search.is_some()
            || self.options.is_some()
            || !self.domain.is_empty()
    }

    /// As the result's DNS block.
    pub fn to_result(&self) -> cni::Dns {
        cni::Dns {
            nameservers: self.nameservers.clone().unwrap_or_default(),
            domain: (!self.domain.is_empty()).then(|| self.domain.clone()),
            search: self.search.clone().unwrap_or_default(),
            options: self.options.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct MacHolder {
    #[serde(default, deserialize_with = "nullable")]
    mac: String,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsHolder {
    #[serde(default, deserialize_with = "nullable")]
    cni: MacHolder,
}

#[derive(Debug, Default, Deserialize)]
struct IpamHolder {
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    ipam_type: String,
}

/// The keys as they appear in the JSON (before defaults and validation).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    is_gateway: bool,
    #[serde(default, deserialize_with = "nullable")]
    is_default_gateway: bool,
    #[serde(default, deserialize_with = "nullable")]
    force_address: bool,
    #[serde(default, deserialize_with = "nullable")]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    mtu: u32,
    #[serde(default, deserialize_with = "nullable")]
    hairpin_mode: bool,
    #[serde(default, deserialize_with = "nullable")]
    promisc_mode: bool,
    #[serde(default, deserialize_with = "nullable")]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(default, deserialize_with = "nullable")]
    preserve_default_vlan: bool,
    #[serde(default, rename = "enabledad", deserialize_with = "nullable")]
    enable_dad: bool,
    #[serde(default, rename = "macspoofchk", deserialize_with = "nullable")]
    mac_spoof_chk: bool,
    #[serde(default, deserialize_with = "nullable")]
    disable_container_interface: bool,
    #[serde(default, deserialize_with = "nullable")]
    port_isolation: bool,
    #[serde(default, deserialize_with = "nullable")]
    args: ArgsHolder,
    #[serde(default, deserialize_with = "nullable")]
    runtime_config: MacHolder,
    #[serde(default, deserialize_with = "nullable")]
    dns: DnsConf,
    #[serde(default, deserialize_with = "nullable")]
    ipam: IpamHolder,
}

/// The validated bridge configuration.
#[derive(Debug, Clone)]
pub struct BridgeConf {
    /// Network name (keys the masquerade rules).
    pub name: String,
    /// Bridge name (`bridge`, default `cni0`).
    pub bridge: String,
    /// `isGateway` (forced on by `isDefaultGateway`).
    pub is_gateway: bool,
    /// `isDefaultGateway`.
    pub is_default_gateway: bool,
    /// `forceAddress`.
    pub force_address: bool,
    /// `ipMasq`.
    pub ip_masq: bool,
    /// `ipMasqBackend` (validated: `iptables` or `nftables`).
    pub ip_masq_backend: Option<String>,
    /// `mtu`; None = kernel default.
    pub mtu: Option<u32>,
    /// `hairpinMode`.
    pub hairpin_mode: bool,
    /// `promiscMode`.
    pub promisc_mode: bool,
    /// `vlan`: access VLAN of the host port (PVID, untagged); 0 = none.
    pub vlan: u16,
    /// `vlanTrunk`, expanded, sorted and deduplicated.
    pub vlan_trunk: Vec<u16>,
    /// `preserveDefaultVlan`.
    pub preserve_default_vlan: bool,
    /// `enabledad`.
    pub enable_dad: bool,
    /// `macspoofchk`.
    pub mac_spoof_chk: bool,
    /// `disableContainerInterface`.
    pub disable_container_interface: bool,
    /// `portIsolation`.
    pub port_isolation: bool,
    /// MAC for the container interface: `runtimeConfig.mac` > `args.cni.mac` > CNI_ARGS `MAC`.
    pub mac: Option<[u8; 6]>,
    /// The config's `dns`.
    pub dns: DnsConf,
    /// `ipam.type`; empty = layer 2 only.
    pub ipam_type: String,
}

impl BridgeConf {
    /// Parses and validates the config bytes plus the raw CNI_ARGS (for `MAC=`).
    ///
    /// Validation that only matters when attaching (hairpin+promisc, IPAM with a disabled
    /// container interface) is in [`BridgeConf::validate_for_add`], so that DEL of a pod
    /// never fails on it.
    pub fn load(stdin: &[u8], cni_args: &cni::args::CniArgs) -> Result<Self> {
        let raw: RawConf = serde_json::from_slice(stdin)
            .map_err(|e| Error::Config(format!("failed to load netconf: {e}")))?;

        if !(0..=MAX_VLAN_ID).contains(&raw.vlan) {
            return Err(Error::Config(format!(
                "invalid VLAN ID {} (must be between 0 and 4094)",
                raw.vlan
            )));
        }
        let vlan_trunk = collect_vlan_trunk(raw.vlan_trunk.as_deref().unwrap_or_default())?;
        if raw.vlan > 0 && !vlan_trunk.is_empty() {
            return Err(Error::Config(
                "cannot set vlan and vlanTrunk at the same time".into(),
            ));
        }
        if let Some(b) = &raw.ip_masq_backend
            && !IPMASQ_BACKENDS.contains(&b.as_str())
        {
            return Err(Error::Config(format!("unknown ipmasq backend {b:?}")));
        }

        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        validate_ifname(&bridge)
            .map_err(|why| Error::Config(format!("invalid bridge name {bridge:?}: {why}")))?;

        // Priority as the reference: CNI_ARGS MAC, overridden by args.cni.mac, overridden
        // by runtimeConfig.mac. CNI_ARGS is only parsed (and unknown keys rejected) when set,
        // as Go's `types.LoadArgs`.
        cni_args.check_known(KNOWN_CNI_ARGS).map_err(Error::Cni)?;
        let mut mac_str = cni_args.get("MAC").unwrap_or_default().to_owned();
        if !raw.args.cni.mac.is_empty() {
            mac_str = raw.args.cni.mac;
        }
        if !raw.runtime_config.mac.is_empty() {
            mac_str = raw.runtime_config.mac;
        }
        let mac = if mac_str.is_empty() {
            None
        } else {
            Some(
                netlink::parse_mac(&mac_str)
                    .map_err(|_| Error::Config(format!("invalid MAC address {mac_str:?}")))?,
            )
        };

        Ok(BridgeConf {
            name: raw.name,
            bridge,
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            ip_masq_backend: raw.ip_masq_backend,
            mtu: (raw.mtu != 0).then_some(raw.mtu),
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            // Range-checked above.
            vlan: u16::try_from(raw.vlan).unwrap_or_default(),
            vlan_trunk,
            preserve_default_vlan: raw.preserve_default_vlan,
            enable_dad: raw.enable_dad,
            mac_spoof_chk: raw.mac_spoof_chk,
            disable_container_interface: raw.disable_container_interface,
            port_isolation: raw.port_isolation,
            mac,
            dns: raw.dns,
            ipam_type: raw.ipam.ipam_type,
        })
    }

    /// The checks `cmdAdd` makes before touching anything.
    pub fn validate_for_add(&self) -> Result<()> {
        if self.hairpin_mode && self.promisc_mode {
            return Err(Error::Config(
                "cannot set hairpin mode and promiscuous mode at the same time".into(),
            ));
        }
        if self.disable_container_interface && self.is_layer3() {
            return Err(Error::Config(
                "cannot use IPAM when DisableContainerInterface flag is set".into(),
            ));
        }
        Ok(())
    }

    /// True when an IPAM plugin assigns addresses (`ipam.type` set).
    pub fn is_layer3(&self) -> bool {
        !self.ipam_type.is_empty()
    }

    /// True when the bridge needs `vlan_filtering` (a VLAN or a trunk is configured).
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }

    /// The masquerade/firewall key of one attachment.
    pub fn attachment(&self, container_id: &str, ifname: &str) -> firewall::Attachment {
        firewall::Attachment {
            network: self.name.clone(),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        }
    }
}

/// Checks an interface name the way the kernel will (≤ 15 bytes, no `/`, `:` or space).
pub fn validate_ifname(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("reserved name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// Expands `vlanTrunk` into a sorted, deduplicated list (Go's `collectVlanTrunk`).
pub fn collect_vlan_trunk(items: &[VlanTrunk]) -> Result<Vec<u16>> {
    let in_range = |v: i64| (1..=MAX_VLAN_ID).contains(&v);
    let mut out = std::collections::BTreeSet::new();
    for item in items {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                if !in_range(min) {
                    return Err(Error::Config("incorrect trunk minID parameter".into()));
                }
                if !in_range(max) {
                    return Err(Error::Config("incorrect trunk maxID parameter".into()));
                }
                if max < min {
                    return Err(Error::Config(
                        "minID is greater than maxID in trunk parameter".into(),
                    ));
                }
                out.extend((min..=max).filter_map(|v| u16::try_from(v).ok()));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "minID and maxID should be configured simultaneously, minID is missing".into(),
                ));
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "minID and maxID should be configured simultaneously, maxID is missing".into(),
                ));
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            if !in_range(id) {
                return Err(Error::Config("incorrect trunk id parameter".into()));
            }
            out.extend(u16::try_from(id).ok());
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::args::CniArgs;

    fn load(json: &str, args: &str) -> Result<BridgeConf> {
        BridgeConf::load(json.as_bytes(), &CniArgs::parse(args).expect("args"))
    }

    #[test]
    fn defaults() {
        let c = load(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, "").expect("ok");
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.preserve_default_vlan);
        assert_eq!(c.mtu, None);
        assert!(!c.is_layer3());
        assert_eq!(c.mac, None);
    }

    #[test]
    fn default_gateway_implies_gateway_and_nulls_are_zero() {
        let c = load(
            r#"{"name":"n","type":"bridge","isDefaultGateway":true,"mtu":null,"ipam":{"type":"host-local"}}"#,
            "",
        )
        .expect("ok");
        assert!(c.is_gateway && c.is_default_gateway && c.is_layer3());
    }

    #[test]
    fn vlan_errors() {
        let e = load(r#"{"name":"n","vlan":4095}"#, "").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "invalid VLAN ID 4095 (must be between 0 and 4094)"
        );
        assert_eq!(e.code(), 7);
        let e = load(r#"{"name":"n","vlan":-1}"#, "").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "invalid VLAN ID -1 (must be between 0 and 4094)"
        );
        let e = load(r#"{"name":"n","vlan":5,"vlanTrunk":[{"id":6}]}"#, "").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "cannot set vlan and vlanTrunk at the same time"
        );
    }

    #[test]
    fn trunk_expansion() {
        let items: Vec<VlanTrunk> =
            serde_json::from_str(r#"[{"id":7},{"minID":3,"maxID":5},{"id":4}]"#).expect("json");
        assert_eq!(collect_vlan_trunk(&items).expect("ok"), vec![3, 4, 5, 7]);
        for (json, msg) in [
            (r#"[{"id":0}]"#, "incorrect trunk id parameter"),
            (
                r#"[{"minID":0,"maxID":3}]"#,
                "incorrect trunk minID parameter",
            ),
            (
                r#"[{"minID":1,"maxID":4095}]"#,
                "incorrect trunk maxID parameter",
            ),
            (
                r#"[{"minID":5,"maxID":3}]"#,
                "minID is greater than maxID in trunk parameter",
            ),
            (
                r#"[{"maxID":3}]"#,
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                r#"[{"minID":3}]"#,
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
        ] {
            let items: Vec<VlanTrunk> = serde_json::from_str(json).expect("json");
            assert_eq!(collect_vlan_trunk(&items).expect_err(json).to_string(), msg);
        }
    }

    #[test]
    fn add_validation() {
        let c = load(r#"{"name":"n","hairpinMode":true,"promiscMode":true}"#, "").expect("ok");
        assert_eq!(
            c.validate_for_add().expect_err("bad").to_string(),
            "cannot set hairpin mode and promiscuous mode at the same time"
        );
        let c = load(
            r#"{"name":"n","disableContainerInterface":true,"ipam":{"type":"host-local"}}"#,
            "",
        )
        .expect("ok");
        assert_eq!(
            c.validate_for_add().expect_err("bad").to_string(),
            "cannot use IPAM when DisableContainerInterface flag is set"
        );
        let e = load(r#"{"name":"n","ipMasqBackend":"pf"}"#, "").expect_err("bad");
        assert_eq!(e.to_string(), r#"unknown ipmasq backend "pf""#);
        let e = load(r#"{"name":"n","bridge":"a-very-long-bridge-name"}"#, "").expect_err("bad");
        assert_eq!(e.code(), 7);
    }

    #[test]
    fn mac_priority() {
        let c = load(r#"{"name":"n"}"#, "MAC=02:00:00:00:00:01").expect("ok");
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        let c = load(
            r#"{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}}}"#,
            "MAC=02:00:00:00:00:01",
        )
        .expect("ok");
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
        let c = load(
            r#"{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#,
            "MAC=02:00:00:00:00:01",
        )
        .expect("ok");
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        assert!(load(r#"{"name":"n"}"#, "MAC=zz").is_err());
        assert!(load(r#"{"name":"n"}"#, "K8S_POD_NAME=x").is_err());
        assert!(load(r#"{"name":"n"}"#, "IgnoreUnknown=1;K8S_POD_NAME=x").is_ok());
    }

    #[test]
    fn dns_set() {
        let c = load(r#"{"name":"n","dns":{}}"#, "").expect("ok");
        assert!(!c.dns.is_set());
        let c = load(r#"{"name":"n","dns":{"nameservers":[]}}"#, "").expect("ok");
        assert!(c.dns.is_set());
    }
}
