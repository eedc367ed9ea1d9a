//! Parsing of flanneld's `subnet.env` (`/run/flannel/subnet.env` by default), for the flannel
//! plugin (which builds its delegate config from it) and rcni-doctor (which checks it).
//!
//! flanneld writes it atomically once it holds a lease (`flannel: pkg/subnet/subnet.go
//! WriteSubnetFile`):
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.1.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true
//! ```
//!
//! Rules (as `flannel-cni: flannel.go loadFlannelSubnetEnv`):
//! * `KEY=VALUE` lines, split at the first `=`; unknown keys are ignored.
//! * `FLANNEL_NETWORK` / `FLANNEL_IPV6_NETWORK`: comma-separated CIDRs, duplicates dropped.
//! * `FLANNEL_SUBNET` / `FLANNEL_IPV6_SUBNET`: flanneld writes the first usable address
//!   (`10.244.1.1/24`); we keep the network (`10.244.1.0/24`).
//! * `FLANNEL_MTU`: u32. `FLANNEL_IPMASQ`: true only if exactly `true`.
//! * Needed: (NETWORK or IPV6_NETWORK) and (SUBNET or IPV6_SUBNET) and MTU and IPMASQ;
//!   every missing key is named in one error, in Go's order and wording.
//!
//! Deliberate differences from Go: a known key without `=` is an error instead of a panic
//! (index out of range in Go), whitespace around keys, values and list items is trimmed,
//! and an empty value (`FLANNEL_NETWORK=`) counts as absent rather than failing to parse.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

/// What went wrong while loading subnet.env. Every message carries Go HEAD's wrapping
/// (`failed to load flannel 'subnet.env' file: ... Check the flannel pod log for this node.`),
/// which operators grep for.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    /// The file does not exist: flanneld has not (yet) written it on this node.
    #[error(
        "failed to load flannel 'subnet.env' file: open {}: no such file or directory. Check the flannel pod log for this node.",
        path.display()
    )]
    NotFound { path: PathBuf },
    /// Any other error while reading the file.
    #[error(
        "failed to load flannel 'subnet.env' file: read {}: {source}. Check the flannel pod log for this node.",
        path.display()
    )]
    Io { path: PathBuf, source: io::Error },
    /// A known key whose value does not parse.
    #[error(
        "failed to load flannel 'subnet.env' file: {}:{line}: invalid {key} value {value:?}: {reason}. Check the flannel pod log for this node.",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        key: &'static str,
        value: String,
        reason: String,
    },
    /// Required keys are absent (all of them are listed).
    #[error(
        "failed to load flannel 'subnet.env' file: {} is missing {missing}. Check the flannel pod log for this node.",
        path.display()
    )]
    Missing { path: PathBuf, missing: Missing },
}

/// The list of absent keys, rendered as Go does: `FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<&'static str>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// The parsed content of subnet.env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the whole cluster's IPv4 networks (deduplicated, in file order).
    pub networks: Vec<IpNetwork>,
    /// `FLANNEL_SUBNET` as a network (host bits cleared).
    pub subnet: Option<IpNetwork>,
    /// `FLANNEL_IPV6_NETWORK`.
    pub ipv6_networks: Vec<IpNetwork>,
    /// `FLANNEL_IPV6_SUBNET` as a network.
    pub ipv6_subnet: Option<IpNetwork>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: flanneld itself masquerades (so the delegate should not).
    pub ipmasq: bool,
}

/// Keys as they appear in the file.
mod key {
    pub const NETWORK: &str = "FLANNEL_NETWORK";
    pub const SUBNET: &str = "FLANNEL_SUBNET";
    pub const IPV6_NETWORK: &str = "FLANNEL_IPV6_NETWORK";
    pub const IPV6_SUBNET: &str = "FLANNEL_IPV6_SUBNET";
    pub const MTU: &str = "FLANNEL_MTU";
    pub const IPMASQ: &str = "FLANNEL_IPMASQ";
    pub const ALL: [&str; 6] = [NETWORK, SUBNET, IPV6_NETWORK, IPV6_SUBNET, MTU, IPMASQ];
}

impl SubnetEnv {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, SubnetEnvError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(path, &String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SubnetEnvError::NotFound {
                path: path.to_owned(),
            }),
            Err(source) => Err(SubnetEnvError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text of the file; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SubnetEnvError> {
        let mut networks = None;
        let mut subnet = None;
        let mut ipv6_networks = None;
        let mut ipv6_subnet = None;
        let mut mtu = None;
        let mut ipmasq = None;

        // `lines()` also strips a trailing '\r', as Go's bufio.ScanLines does.
        for (idx, line) in text.lines().enumerate() {
            let (raw_key, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (line.trim(), None),
            };
            let Some(&k) = key::ALL.iter().find(|k| **k == raw_key) else {
                continue; // unknown keys, comments, blank lines
            };
            let invalid = |value: &str, reason: String| SubnetEnvError::Invalid {
                path: path.to_owned(),
                line: idx + 1,
                key: k,
                value: value.to_owned(),
                reason,
            };
            let Some(value) = value else {
                return Err(invalid("", "the line has no '='".to_owned()));
            };
            if value.is_empty() {
                continue; // an empty value counts as absent
            }
            match k {
                key::NETWORK | key::IPV6_NETWORK => {
                    let list = parse_network_list(value).map_err(|r| invalid(value, r))?;
                    if list.is_empty() {
                        continue; // only commas: as absent as an empty value
                    }
                    if k == key::NETWORK {
                        networks = Some(list);
                    } else {
                        ipv6_networks = Some(list);
                    }
                }
                key::SUBNET | key::IPV6_SUBNET => {
                    let net = parse_network(value).map_err(|r| invalid(value, r))?;
                    if k == key::SUBNET {
                        subnet = Some(net);
                    } else {
                        ipv6_subnet = Some(net);
                    }
                }
                key::MTU => {
                    mtu = Some(
                        value
                            .parse::<u32>()
                            .map_err(|e| invalid(value, e.to_string()))?,
                    );
                }
                _ => ipmasq = Some(value == "true"),
            }
        }

        let mut missing = Vec::new();
        if networks.is_none() && ipv6_networks.is_none() {
            missing.extend([key::NETWORK, key::IPV6_NETWORK]);
        }
        if subnet.is_none() && ipv6_subnet.is_none() {
            missing.extend([key::SUBNET, key::IPV6_SUBNET]);
        }
        if mtu.is_none() {
            missing.push(key::MTU);
        }
        if ipmasq.is_none() {
            missing.push(key::IPMASQ);
        }
        match (mtu, ipmasq) {
            (Some(mtu), Some(ipmasq)) if missing.is_empty() => Ok(SubnetEnv {
                networks: networks.unwrap_or_default(),
                subnet,
                ipv6_networks: ipv6_networks.unwrap_or_default(),
                ipv6_subnet,
                mtu,
                ipmasq,
            }),
            _ => Err(SubnetEnvError::Missing {
                path: path.to_owned(),
                missing: Missing(missing),
            }),
        }
    }
}

impl SubnetEnv {
    /// What does not add up in a file that parsed: a node subnet outside every cluster
    /// network of its family (flanneld never writes that; a hand edit or a stale file does),
    /// an MTU no link can have. One sentence per problem; empty when consistent.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pairs = [
            (key::SUBNET, self.subnet, key::NETWORK, &self.networks),
            (
                key::IPV6_SUBNET,
                self.ipv6_subnet,
                key::IPV6_NETWORK,
                &self.ipv6_networks,
            ),
        ];
        for (skey, subnet, nkey, networks) in pairs {
            let Some(subnet) = subnet else { continue };
            let inside = networks.iter().any(|n| {
                n.is_ipv4() == subnet.is_ipv4()
                    && n.prefix() <= subnet.prefix()
                    && n.contains(subnet.network())
            });
            if !inside {
                let nets: Vec<String> = networks.iter().map(ToString::to_string).collect();
                out.push(if nets.is_empty() {
                    format!("{skey}={subnet} but {nkey} is not set")
                } else {
                    format!("{skey}={subnet} is outside {nkey}={}", nets.join(","))
                });
            }
        }
        // 68 is IPv4's minimum MTU (RFC 791); the kernel refuses anything lower on a link.
        if self.mtu < 68 {
            out.push(format!(
                "{}={} is below 68, the smallest MTU a link can have",
                key::MTU,
                self.mtu
            ));
        }
        out
    }
}

/// `a/b` → the network (host bits cleared), like Go's `net.ParseCIDR` second value.
fn parse_network(s: &str) -> Result<IpNetwork, String> {
    if !s.contains('/') {
        return Err("not a CIDR (address/prefix)".to_owned());
    }
    let n: IpNetwork = s.parse().map_err(|e| format!("{e}"))?;
    IpNetwork::new(n.network(), n.prefix()).map_err(|e| format!("{e}"))
}

/// Comma-separated CIDRs; empty items are skipped and duplicates dropped (first one kept).
fn parse_network_list(s: &str) -> Result<Vec<IpNetwork>, String> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let n = parse_network(item)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SubnetEnv, SubnetEnvError> {
        SubnetEnv::parse(Path::new("/run/flannel/subnet.env"), text)
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn ipv4() {
        let env = parse(
            "\nFLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        )
        .expect("valid");
        assert_eq!(env.networks, vec![net("10.1.0.0/16")]);
        assert_eq!(env.subnet, Some(net("10.1.17.0/24")));
        assert_eq!(
            env.subnet.map(|s| s.to_string()).as_deref(),
            Some("10.1.17.0/24")
        );
        assert!(env.ipv6_networks.is_empty());
        assert_eq!(env.ipv6_subnet, None);
        assert_eq!(env.mtu, 1472);
        assert!(env.ipmasq);
    }

    #[test]
    fn ipv6_only() {
        let env = parse(
            "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        )
        .expect("valid");
        assert!(env.networks.is_empty());
        assert_eq!(env.subnet, None);
        assert_eq!(env.ipv6_networks, vec![net("fc00::/48")]);
        assert_eq!(
            env.ipv6_subnet.map(|s| s.to_string()).as_deref(),
            Some("fc00::/64")
        );
    }

    #[test]
    fn dual_stack() {
        let env = parse(
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\n\
             FLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        )
        .expect("valid");
        assert_eq!(env.networks, vec![net("10.1.0.0/16")]);
        assert_eq!(env.subnet, Some(net("10.1.17.0/24")));
        assert_eq!(env.ipv6_networks, vec![net("fc00::/48")]);
        assert_eq!(env.ipv6_subnet, Some(net("fc00::/64")));
        assert!(!env.ipmasq);
    }

    #[test]
    fn comma_lists_drop_duplicates() {
        let env = parse(
            "FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16,10.1.0.0/16,10.1.5.5/16\n\
             FLANNEL_IPV6_NETWORK=fc00::/48, fc00::/48 ,fd00::/56\n\
             FLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("valid");
        assert_eq!(
            env.networks,
            vec![net("10.1.0.0/16"), net("192.168.0.0/16")]
        );
        assert_eq!(env.ipv6_networks, vec![net("fc00::/48"), net("fd00::/56")]);
    }

    /// Found by fuzzing (`fuzz/corpus/subnet_env/only-commas`): a list of nothing but commas
    /// counted as present, so a file with no network at all parsed, and the delegate had no
    /// route to the cluster.
    #[test]
    fn a_list_of_only_commas_is_absent() {
        let err = parse(
            "FLANNEL_NETWORK= , ,\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect_err("no network");
        assert!(
            err.to_string()
                .contains("is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK."),
            "{err}"
        );
        let env = parse(
            "FLANNEL_NETWORK=,\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("the IPv6 network is enough");
        assert!(env.networks.is_empty());
    }

    #[test]
    fn ipmasq_true_only_when_exactly_true() {
        for (v, want) in [
            ("true", true),
            ("True", false),
            ("1", false),
            ("yes", false),
        ] {
            let env = parse(&format!(
                "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={v}\n"
            ))
            .expect("valid");
            assert_eq!(env.ipmasq, want, "FLANNEL_IPMASQ={v}");
        }
    }

    #[test]
    fn every_missing_key_in_one_message() {
        let err = parse("foo=bar").expect_err("all missing");
        let msg = err.to_string();
        assert!(
            msg.contains(
                "/run/flannel/subnet.env is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"
            ),
            "{msg}"
        );
        assert!(
            msg.starts_with("failed to load flannel 'subnet.env' file: "),
            "{msg}"
        );

        let err = parse(
            "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPMASQ=true",
        )
        .expect_err("mtu missing");
        match err {
            SubnetEnvError::Missing { missing, .. } => assert_eq!(missing.0, vec!["FLANNEL_MTU"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_lines_never_panic() {
        // A known key without '=' panics the Go plugin (index out of range).
        let err = parse("FLANNEL_MTU\n").expect_err("no '='");
        assert!(
            matches!(
                err,
                SubnetEnvError::Invalid {
                    key: "FLANNEL_MTU",
                    line: 1,
                    ..
                }
            ),
            "{err:?}"
        );

        for bad in [
            "FLANNEL_NETWORK=banana",
            "FLANNEL_NETWORK=10.0.0.0",
            "FLANNEL_SUBNET=10.0.0.1/33",
            "FLANNEL_MTU=-1",
            "FLANNEL_MTU=99999999999",
            "FLANNEL_IPV6_SUBNET=::g/64",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(
                matches!(err, SubnetEnvError::Invalid { .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains("invalid FLANNEL_"), "{err}");
        }

        // Unknown keys, comments, blank lines, CRLF endings, binary junk: ignored.
        let env = parse(
            "# written by hand\r\n\r\n=\n==\n\u{0}\u{1}junk\nFOO\nFLANNEL_NETWORK=10.1.0.0/16\r\n\
             FLANNEL_SUBNET=10.1.17.1/24\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=true\r\n",
        )
        .expect("valid");
        assert_eq!(env.mtu, 1450);
        assert!(env.ipmasq);
    }

    #[test]
    fn empty_value_counts_as_absent() {
        let env = parse(
            "FLANNEL_NETWORK=\nFLANNEL_SUBNET=\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("valid ipv6-only");
        assert!(env.networks.is_empty());
        assert_eq!(env.subnet, None);
    }

    #[test]
    fn inconsistencies() {
        let ok = parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("valid");
        assert!(ok.inconsistencies().is_empty());
        let bad = parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.5.5.1/24\nFLANNEL_MTU=0\nFLANNEL_IPMASQ=true\n\
             FLANNEL_IPV6_SUBNET=fd00::1/64\n",
        )
        .expect("parses");
        let problems = bad.inconsistencies();
        assert_eq!(
            problems,
            [
                "FLANNEL_SUBNET=10.5.5.0/24 is outside FLANNEL_NETWORK=10.244.0.0/16",
                "FLANNEL_IPV6_SUBNET=fd00::/64 but FLANNEL_IPV6_NETWORK is not set",
                "FLANNEL_MTU=0 is below 68, the smallest MTU a link can have",
            ]
        );
        // A subnet wider than the network is outside it too.
        let wide = parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.0.0.1/8\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("parses");
        assert_eq!(wide.inconsistencies().len(), 1);
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("subnet.env");
        let err = SubnetEnv::load(&path).expect_err("missing");
        assert!(matches!(err, SubnetEnvError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "failed to load flannel 'subnet.env' file: open {}: no such file or directory. Check the flannel pod log for this node.",
                path.display()
            )
        );
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("subnet.env");
        std::fs::write(
            &path,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n",
        )
        .expect("write");
        let env = SubnetEnv::load(&path).expect("valid");
        assert_eq!(env.subnet, Some(net("10.244.5.0/24")));
        assert_eq!(env.mtu, 8951);
    }
}
