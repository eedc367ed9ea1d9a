//! The portmap network configuration: the reference's keys, defaults, validation and
//! messages (`parseConfig`, `validateBackend` in `plugins/meta/portmap/main.go`), plus the
//! checks the reference leaves to iptables (port above 65535, protocol, `hostIP`).

use std::net::IpAddr;

use cni::config::nullable;
use firewall::Backend;
use firewall::portmap::{DEFAULT_MARK_BIT, MarkMasq, Options, PortMapping, Protocol};
use serde::Deserialize;

use crate::error::{Error, Result};

/// One `runtimeConfig.portMappings` entry as written (ints, so that 0, negative and too
/// large ports get the reference's message instead of a decoding error).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    #[serde(default, deserialize_with = "nullable")]
    host_port: i64,
    #[serde(default, deserialize_with = "nullable")]
    container_port: i64,
    #[serde(default, deserialize_with = "nullable")]
    protocol: String,
    #[serde(default, rename = "hostIP", deserialize_with = "nullable")]
    host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    #[serde(default, deserialize_with = "nullable")]
    port_mappings: Vec<RawMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    masq_all: bool,
    #[serde(default)]
    mark_masq_bit: Option<i64>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    runtime_config: RawRuntimeConfig,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct PortmapConf {
    /// Network name.
    pub name: String,
    /// The backend for ADD and CHECK (DEL and GC clean both).
    pub backend: Backend,
    /// snat, masqAll, the mark, conditions.
    pub opts: Options,
    /// `runtimeConfig.portMappings`.
    pub mappings: Vec<PortMapping>,
}

/// What this node offers, for the default backend.
pub trait Tools {
    /// Whether `tool` can be run.
    fn has(&self, tool: &str) -> bool;
    /// Whether the kernel lets an unset `backend` be nftables (see
    /// [`firewall::portmap::NFTABLES_DEFAULT_MIN_KERNEL`]).
    fn nftables_kernel(&self) -> bool;
}

/// The real lookup (PATH, then /usr/sbin, /sbin, ...) and the running kernel.
pub struct SystemTools;

impl Tools for SystemTools {
    fn has(&self, tool: &str) -> bool {
        firewall::SystemRunner::find(tool).is_some()
    }

    fn nftables_kernel(&self) -> bool {
        firewall::portmap::kernel_supports_nftables()
    }
}

impl PortmapConf {
    /// Parses and validates the config on stdin.
    pub fn load(stdin: &[u8]) -> Result<PortmapConf> {
        Self::load_with(stdin, &SystemTools)
    }

    /// [`PortmapConf::load`] with the tool lookup given (tests).
    pub fn load_with(stdin: &[u8], tools: &dyn Tools) -> Result<PortmapConf> {
        let decode = |e: serde_json::Error| {
            Error::Decode(format!("failed to parse network configuration: {e}"))
        };
        let mut value: serde_json::Value = serde_json::from_slice(stdin).map_err(decode)?;
        fold_keys(&mut value);
        let raw: RawConf = serde_json::from_value(value).map_err(decode)?;
        if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
            return Err(Error::Config(
                "Cannot specify externalSetMarkChain and markMasqBit".into(),
            ));
        }
        let mark = match (&raw.external_set_mark_chain, raw.mark_masq_bit) {
            (Some(chain), _) => {
                if chain.is_empty() || chain.contains(char::is_whitespace) {
                    return Err(Error::Config(format!(
                        "invalid externalSetMarkChain {chain:?}"
                    )));
                }
                MarkMasq::External(chain.clone())
            }
            (None, bit) => {
                let bit = bit.unwrap_or(i64::from(DEFAULT_MARK_BIT));
                let bit = u8::try_from(bit)
                    .ok()
                    .filter(|b| *b <= 31)
                    .ok_or_else(|| Error::Config("MasqMarkBit must be between 0 and 31".into()))?;
                MarkMasq::Bit(bit)
            }
        };
        let backend = select_backend(&raw, tools)?;
        let conditions_v4 = conditions("conditionsV4", raw.conditions_v4.as_deref(), backend)?;
        let conditions_v6 = conditions("conditionsV6", raw.conditions_v6.as_deref(), backend)?;
        let mappings = raw
            .runtime_config
            .port_mappings
            .iter()
            .map(mapping)
            .collect::<Result<Vec<_>>>()?;
        Ok(PortmapConf {
            name: raw.name,
            backend,
            opts: Options {
                snat: raw.snat.unwrap_or(true),
                masq_all: raw.masq_all,
                mark,
                conditions_v4,
                conditions_v6,
            },
            mappings,
        })
    }
}

/// Our keys, per object, in their canonical spelling.
const TOP_KEYS: &[&str] = &[
    "name",
    "backend",
    "snat",
    "masqAll",
    "markMasqBit",
    "externalSetMarkChain",
    "conditionsV4",
    "conditionsV6",
    "runtimeConfig",
];
const RUNTIME_CONFIG_KEYS: &[&str] = &["portMappings"];
const MAPPING_KEYS: &[&str] = &["hostPort", "containerPort", "protocol", "hostIP"];

/// Go's `encoding/json` matches object keys to struct fields case-insensitively, and the
/// runtimes rely on it: containerd (go-cni) sends `portMappings` entries with Go's field
/// names (`{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}`).
/// Rename every key that matches one of ours, ignoring ASCII case, to our spelling; as in
/// Go, a later key wins over an earlier one for the same field.
fn fold_keys(v: &mut serde_json::Value) {
    fn fold(obj: &mut serde_json::Map<String, serde_json::Value>, fields: &[&str]) {
        let keys: Vec<String> = obj.keys().cloned().collect();
        for k in keys {
            let Some(field) = fields.iter().find(|f| f.eq_ignore_ascii_case(&k)) else {
                continue;
            };
            if k != *field
                && let Some(value) = obj.remove(&k)
            {
                obj.insert((*field).to_string(), value);
            }
        }
    }
    let Some(top) = v.as_object_mut() else {
        return;
    };
    fold(top, TOP_KEYS);
    let Some(rc) = top.get_mut("runtimeConfig").and_then(|r| r.as_object_mut()) else {
        return;
    };
    fold(rc, RUNTIME_CONFIG_KEYS);
    for m in rc
        .get_mut("portMappings")
        .and_then(|p| p.as_array_mut())
        .into_iter()
        .flatten()
    {
        if let Some(m) = m.as_object_mut() {
            fold(m, MAPPING_KEYS);
        }
    }
}

/// `iptables` for conditions written in iptables syntax (the first word starts with `-`,
/// e.g. `-d`, `!` is followed by one), `nftables` otherwise (the reference's rule); `None`
/// for no conditions.
fn backend_of_conditions(c: Option<&[String]>) -> Option<Backend> {
    let first = c?.first()?;
    if first.is_empty() {
        return None;
    }
    let lead = if first == "!" {
        c?.get(1).map_or("", String::as_str)
    } else {
        first
    };
    Some(if lead.starts_with('-') {
        Backend::Iptables
    } else {
        Backend::Nftables
    })
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Iptables => "iptables",
        Backend::Nftables => "nftables",
    }
}

/// The reference's `validateBackend`: an explicit `backend`, else iptables unless iptables
/// is not installed (the reference: "and nft is usable"; ours needs no `nft`, only a kernel
/// where our nat chains coexist with an iptables nat table, Linux 4.18: an older one stays on
/// iptables); options of the other backend are an error. One difference, which the reference's documentation promises but its code does
/// not do: without `backend`, options that only the nftables backend understands
/// (nft-syntax conditions) select nftables.
fn select_backend(raw: &RawConf, tools: &dyn Tools) -> Result<Backend> {
    let mut specific: Vec<(Backend, &str)> = Vec::new();
    if raw.external_set_mark_chain.is_some() {
        specific.push((Backend::Iptables, "externalSetMarkChain"));
    }
    for (key, c) in [
        ("conditionsV4", &raw.conditions_v4),
        ("conditionsV6", &raw.conditions_v6),
    ] {
        if let Some(b) = backend_of_conditions(c.as_deref()) {
            specific.push((b, key));
        }
    }
    let backend = match raw.backend.as_deref() {
        Some("iptables") => Backend::Iptables,
        Some("nftables") => Backend::Nftables,
        Some(other) => return Err(Error::Config(format!("unrecognized backend {other:?}"))),
        None => {
            let wants = |b| specific.iter().any(|(s, _)| *s == b);
            let only_nft_usable = !tools.has("iptables") && tools.nftables_kernel();
            if !wants(Backend::Iptables) && (wants(Backend::Nftables) || only_nft_usable) {
                Backend::Nftables
            } else {
                Backend::Iptables
            }
        }
    };
    let wrong: Vec<&str> = specific
        .iter()
        .filter(|(b, _)| *b != backend)
        .map(|(_, k)| *k)
        .collect();
    if !wrong.is_empty() {
        let other = if backend == Backend::Iptables {
            Backend::Nftables
        } else {
            Backend::Iptables
        };
        return Err(Error::Config(format!(
            "{} backend was requested but configuration contains {}-specific options [{}]",
            backend_name(backend),
            backend_name(other),
            wrong.join(" ")
        )));
    }
    Ok(backend)
}

/// iptables conditions are spliced into an `iptables-restore` line: a line break would end
/// our rule and start another. The nftables backend reads its conditions into expressions:
/// what it cannot express is refused here, before anything is installed.
fn conditions(key: &str, c: Option<&[String]>, backend: Backend) -> Result<Vec<String>> {
    let c = c.unwrap_or_default();
    match backend {
        Backend::Iptables => {
            if let Some(w) = c.iter().find(|w| w.contains(['\n', '\r'])) {
                return Err(Error::Config(format!(
                    "{key}: {w:?} may not contain line breaks"
                )));
            }
        }
        Backend::Nftables => {
            firewall::portmap::conditions::parse(c, key == "conditionsV6")
                .map_err(|e| Error::Config(format!("{key}: {e}")))?;
        }
    }
    Ok(c.iter().filter(|w| !w.is_empty()).cloned().collect())
}

/// One mapping, validated (the reference checks `<= 0` only; iptables rejected the rest).
fn mapping(m: &RawMapping) -> Result<PortMapping> {
    let port = |p: i64| u16::try_from(p).ok().filter(|p| *p != 0);
    let container_port = port(m.container_port).ok_or_else(|| {
        Error::Config(format!(
            "Invalid container port number: {}",
            m.container_port
        ))
    })?;
    let host_port = port(m.host_port)
        .ok_or_else(|| Error::Config(format!("Invalid host port number: {}", m.host_port)))?;
    let protocol = Protocol::parse(&m.protocol).ok_or_else(|| {
        Error::Config(format!(
            "Invalid protocol {:?} for host port {}: must be tcp, udp or sctp",
            m.protocol, m.host_port
        ))
    })?;
    let host_ip = if m.host_ip.is_empty() {
        None
    } else {
        Some(m.host_ip.parse::<IpAddr>().map_err(|_| {
            Error::Config(format!(
                "Invalid hostIP {:?} for host port {}: not an IP address",
                m.host_ip, m.host_port
            ))
        })?)
    };
    Ok(PortMapping {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tools installed, and whether the kernel has `fib`.
    struct Only(&'static [&'static str], bool);
    impl Tools for Only {
        fn has(&self, tool: &str) -> bool {
            self.0.contains(&tool)
        }
        fn nftables_kernel(&self) -> bool {
            self.1
        }
    }
    const ALL: Only = Only(&["iptables", "nft"], true);

    fn load(v: serde_json::Value) -> Result<PortmapConf> {
        PortmapConf::load_with(&serde_json::to_vec(&v).unwrap(), &ALL)
    }

    fn err(v: serde_json::Value) -> (u32, String) {
        let e = load(v).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn defaults() {
        let c = load(json!({"name": "n", "type": "portmap"})).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert_eq!(c.opts, Options::default());
        assert!(c.mappings.is_empty());
        let c = load(json!({"name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": "10.0.0.1"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": ""}]}}))
        .unwrap();
        assert_eq!(c.mappings.len(), 2);
        assert_eq!(c.mappings[0].protocol, Protocol::Tcp);
        assert_eq!(c.mappings[0].host_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(c.mappings[1].host_ip, None);
        let c = load(
            json!({"name": "n", "snat": false, "masqAll": true, "markMasqBit": 0,
                            "runtimeConfig": null, "backend": "nftables"}),
        )
        .unwrap();
        assert!(!c.opts.snat && c.opts.masq_all);
        assert_eq!(c.opts.mark, MarkMasq::Bit(0));
        assert_eq!(c.backend, Backend::Nftables);
    }

    #[test]
    fn keys_match_in_any_case_as_in_go() {
        // What containerd 1.6 (go-cni) sends.
        let c = load(
            json!({"name": "n", "SNAT": false, "runtimeConfig": {"portMappings": [
            {"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]}}),
        )
        .unwrap();
        assert!(!c.opts.snat);
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(
            (c.mappings[0].host_port, c.mappings[0].container_port),
            (18080, 80)
        );
        assert_eq!(c.mappings[0].host_ip, None);
        // Unknown keys stay unknown.
        let c = load(json!({"name": "n", "runtimeConfig": {"PortMappings": [
            {"hostport": 1, "CONTAINERPORT": 2, "protocol": "udp", "hostPorts": 9}]}}))
        .unwrap();
        assert_eq!(
            (c.mappings[0].host_port, c.mappings[0].container_port),
            (1, 2)
        );
    }

    #[test]
    fn default_backend_follows_the_tools_and_the_kernel() {
        let v = serde_json::to_vec(&json!({"name": "n"})).unwrap();
        let b = |tools: &'static [&'static str], fib: bool| {
            PortmapConf::load_with(&v, &Only(tools, fib))
                .unwrap()
                .backend
        };
        assert_eq!(b(&["iptables", "nft"], true), Backend::Iptables);
        // The nftables backend needs no `nft` binary, only the kernel.
        assert_eq!(b(&["nft"], true), Backend::Nftables);
        assert_eq!(b(&[], true), Backend::Nftables);
        // Before Linux 4.18 (and so before 4.10, without `fib`) a node stays on iptables.
        assert_eq!(b(&["nft"], false), Backend::Iptables);
        assert_eq!(b(&[], false), Backend::Iptables);
        // Asked for, nftables it is (the ADD then fails with the kernel's answer).
        let v = serde_json::to_vec(&json!({"name": "n", "backend": "nftables"})).unwrap();
        let c = PortmapConf::load_with(&v, &Only(&["iptables"], false)).unwrap();
        assert_eq!(c.backend, Backend::Nftables);
    }

    #[test]
    fn conditions_pick_and_check_the_backend() {
        let c =
            load(json!({"name": "n", "conditionsV4": ["ip", "daddr", "!=", "1.2.3.4"]})).unwrap();
        assert_eq!(c.backend, Backend::Nftables);
        assert_eq!(c.opts.conditions_v4.len(), 4);
        let c = load(json!({"name": "n", "conditionsV4": ["!", "-d", "1.2.3.4"]})).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        let c = load(json!({"name": "n", "externalSetMarkChain": "KUBE-MARK-MASQ"})).unwrap();
        assert_eq!(c.opts.mark, MarkMasq::External("KUBE-MARK-MASQ".into()));
        assert_eq!(
            err(json!({"name": "n", "backend": "iptables", "conditionsV6": ["ip6", "daddr", "::1"]})),
            (7, "iptables backend was requested but configuration contains nftables-specific options [conditionsV6]".into())
        );
        assert_eq!(
            err(json!({"name": "n", "backend": "nftables", "externalSetMarkChain": "X", "conditionsV4": ["-d", "1.2.3.4"]})),
            (7, "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV4]".into())
        );
        assert_eq!(
            err(json!({"name": "n", "conditionsV4": ["-d", "1.2.3.4"], "conditionsV6": ["ip6", "daddr", "::1"]})).1,
            "iptables backend was requested but configuration contains nftables-specific options [conditionsV6]"
        );
        assert_eq!(
            err(json!({"name": "n", "conditionsV4": ["-d", "1.2.3.4\n-A INPUT -j DROP"]})).0,
            7
        );
        // nft conditions are read into expressions: what the backend cannot express is a
        // config error, naming the key and the words.
        let (code, msg) = err(
            json!({"name": "n", "conditionsV4": ["ip", "daddr", "1.2.3.4;", "flush", "ruleset"]}),
        );
        assert_eq!(code, 7);
        assert!(
            msg.starts_with("conditionsV4: unsupported nftables condition \"ip daddr 1.2.3.4;"),
            "{msg}"
        );
        let (code, msg) = err(json!({"name": "n", "conditionsV6": ["tcp", "dport", "80"]}));
        assert_eq!(code, 7);
        assert!(msg.contains("supported: "), "{msg}");
        let (code, msg) = err(json!({"name": "n", "conditionsV6": ["ip", "daddr", "1.2.3.4"]}));
        assert_eq!(code, 7);
        assert!(msg.contains("conditionsV6 apply to the ip6 table"), "{msg}");
        let c = load(
            json!({"name": "n", "conditionsV6": ["ip6 saddr != fd00::/8", "iifname", "\"eth0\""]}),
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Nftables);
        // Empty lists and empty first words say nothing about the backend.
        let c = load(json!({"name": "n", "conditionsV4": [], "conditionsV6": [""]})).unwrap();
        assert_eq!(c.backend, Backend::Iptables);
        assert!(c.opts.conditions_v6.is_empty());
    }

    #[test]
    fn bad_input_has_the_reference_messages() {
        let pm =
            |m: serde_json::Value| json!({"name": "n", "runtimeConfig": {"portMappings": [m]}});
        let cases = [
            (
                json!({"name": "n", "backend": "ebpf"}),
                7,
                "unrecognized backend \"ebpf\"",
            ),
            (
                json!({"name": "n", "markMasqBit": 32}),
                7,
                "MasqMarkBit must be between 0 and 31",
            ),
            (
                json!({"name": "n", "markMasqBit": -1}),
                7,
                "MasqMarkBit must be between 0 and 31",
            ),
            (
                json!({"name": "n", "markMasqBit": 13, "externalSetMarkChain": "X"}),
                7,
                "Cannot specify externalSetMarkChain and markMasqBit",
            ),
            (
                pm(json!({"hostPort": 80, "containerPort": 0, "protocol": "tcp"})),
                7,
                "Invalid container port number: 0",
            ),
            (
                pm(json!({"hostPort": 0, "containerPort": 80, "protocol": "tcp"})),
                7,
                "Invalid host port number: 0",
            ),
            (
                pm(json!({"hostPort": 65536, "containerPort": 80, "protocol": "tcp"})),
                7,
                "Invalid host port number: 65536",
            ),
            (
                pm(json!({"hostPort": 80, "containerPort": 70000, "protocol": "tcp"})),
                7,
                "Invalid container port number: 70000",
            ),
            (
                pm(json!({"hostPort": -5, "containerPort": 80, "protocol": "tcp"})),
                7,
                "Invalid host port number: -5",
            ),
            (
                pm(json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"})),
                7,
                "Invalid protocol \"icmp\" for host port 80: must be tcp, udp or sctp",
            ),
            (
                pm(json!({"hostPort": 80, "containerPort": 80})),
                7,
                "Invalid protocol \"\" for host port 80: must be tcp, udp or sctp",
            ),
            (
                pm(
                    json!({"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "node1"}),
                ),
                7,
                "Invalid hostIP \"node1\" for host port 80: not an IP address",
            ),
        ];
        for (v, code, msg) in cases {
            assert_eq!(err(v.clone()), (code, msg.to_string()), "{v}");
        }
        let (code, msg) = err(pm(json!({"hostPort": "80", "containerPort": 80})));
        assert_eq!(code, 6);
        assert!(
            msg.starts_with("failed to parse network configuration: "),
            "{msg}"
        );
        assert_eq!(err(pm(json!({"hostPort": 80.5, "containerPort": 80}))).0, 6);
    }
}
