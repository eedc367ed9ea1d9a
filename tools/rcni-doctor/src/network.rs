//! The active network: which config the runtime uses, and what it tells about the node
//! (the lease file, the bridge, the state directories, the plugins it needs).

use std::path::{Path, PathBuf};

use cni::config::{ConfList, conf_files};
use serde_json::Value;

use crate::args::{DEFAULT_SUBNET_FILE, Options};

/// The bridge plugin's default bridge.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// The IPAM plugin flannel delegates to by default.
const DEFAULT_IPAM: &str = "host-local";
/// The plugin flannel delegates to by default.
const DEFAULT_DELEGATE: &str = "bridge";

/// What the config directory holds for the network asked for.
#[derive(Debug, Clone)]
pub enum Config {
    /// The config the runtime uses.
    Loaded { path: PathBuf, list: ConfList },
    /// None (the message says why).
    Missing(String),
    /// The runtime's config does not load.
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Picks the config as a runtime does: `network` by name, else the first file.
    pub fn select(dir: &Path, network: Option<&str>) -> Config {
        let mut files = match conf_files(dir) {
            Ok(f) => f,
            Err(e) => return Config::Missing(format!("cannot read {}: {e}", dir.display())),
        };
        if files.is_empty() {
            let why = if dir.is_dir() {
                format!(
                    "no *.conf, *.conflist or *.json file in {}: the runtime has no pod network",
                    dir.display()
                )
            } else {
                format!(
                    "{} does not exist: the runtime has no pod network",
                    dir.display()
                )
            };
            return Config::Missing(format!(
                "{why}; install the flannel config there (install-cni does)"
            ));
        }
        let Some(name) = network else {
            let path = files.remove(0);
            return match ConfList::load(&path) {
                Ok(list) => Config::Loaded { path, list },
                Err(e) => Config::Invalid {
                    reason: e.to_string(),
                    path,
                },
            };
        };
        let mut seen = Vec::new();
        for path in files {
            let file = path.display().to_string();
            match ConfList::load(&path) {
                Ok(list) if list.name == name => return Config::Loaded { path, list },
                Ok(list) => seen.push(format!("{file} ({:?})", list.name)),
                Err(e) => seen.push(format!("{file} (does not load: {e})")),
            }
        }
        Config::Missing(format!(
            "no config in {} is named {name:?}; there are: {}",
            dir.display(),
            seen.join(", ")
        ))
    }
}

/// A plugin binary the network needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub name: String,
    pub why: String,
}

/// flannel's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flannel {
    /// The lease file (`--subnet-file`, else the config's `subnetFile`, else the default).
    pub subnet_file: PathBuf,
    /// Where the plugin saves its delegate configs.
    pub data_dir: PathBuf,
}

/// What the active config (or, without one, a flannel node's defaults) says about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Network name; `None` without a usable config.
    pub name: Option<String>,
    /// Set when the network is a flannel one (also without a config: this is a flannel
    /// node's doctor, so its defaults apply).
    pub flannel: Option<Flannel>,
    /// The bridge pods hang off, when the (delegate) plugin is `bridge`.
    pub bridge: Option<String>,
    /// host-local's `dataDir`, when host-local is the IPAM.
    pub ipam_dir: Option<PathBuf>,
    /// Plugins to find in the bin dir.
    pub needs: Vec<Needed>,
}

fn str_key<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl Network {
    /// The view of `config`, with `opts`' overrides.
    pub fn of(config: &Config, opts: &Options) -> Network {
        let subnet_file = |conf: Option<&str>| {
            opts.subnet_file
                .clone()
                .or_else(|| conf.map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SUBNET_FILE))
        };
        let Config::Loaded { path, list } = config else {
            return Network {
                name: None,
                flannel: Some(Flannel {
                    subnet_file: subnet_file(None),
                    data_dir: PathBuf::from(flannel_state::DEFAULT_DATA_DIR),
                }),
                bridge: Some(DEFAULT_BRIDGE.into()),
                ipam_dir: Some(PathBuf::from(ipam_store::disk::DEFAULT_DATA_DIR)),
                needs: Vec::new(),
            };
        };
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let mut n = Network {
            name: Some(list.name.clone()),
            flannel: None,
            bridge: None,
            ipam_dir: None,
            needs: Vec::new(),
        };
        for p in &list.plugins {
            let Some(ty) = str_key(p, "type") else {
                continue;
            };
            n.needs.push(Needed {
                name: ty.to_owned(),
                why: format!("a plugin of {file}"),
            });
            // The plugin that makes the pod's interface: flannel's delegate, or the plugin.
            let (main, main_ty, ipam) = if ty == "flannel" {
                n.flannel = Some(Flannel {
                    subnet_file: subnet_file(str_key(p, "subnetFile")),
                    data_dir: str_key(p, "dataDir")
                        .map_or_else(|| flannel_state::DEFAULT_DATA_DIR.into(), PathBuf::from),
                });
                let delegate = p.get("delegate").cloned().unwrap_or(Value::Null);
                let dty = str_key(&delegate, "type")
                    .unwrap_or(DEFAULT_DELEGATE)
                    .to_owned();
                n.needs.push(Needed {
                    name: dty.clone(),
                    why: "flannel's delegate".into(),
                });
                // flannel builds the delegate's ipam on its own top-level `ipam`.
                (delegate, dty, p.get("ipam").cloned().or(Some(Value::Null)))
            } else {
                (p.clone(), ty.to_owned(), p.get("ipam").cloned())
            };
            if main_ty == "bridge" && n.bridge.is_none() {
                n.bridge = Some(
                    str_key(&main, "bridge")
                        .unwrap_or(DEFAULT_BRIDGE)
                        .to_owned(),
                );
            }
            let Some(ipam) = ipam else { continue };
            let ity = match str_key(&ipam, "type") {
                Some(t) => t.to_owned(),
                // flannel fills in host-local; a plain plugin without `ipam.type` has none.
                None if ty == "flannel" => DEFAULT_IPAM.to_owned(),
                None => continue,
            };
            n.needs.push(Needed {
                name: ity.clone(),
                why: format!("the IPAM of {main_ty}"),
            });
            if ity == DEFAULT_IPAM && n.ipam_dir.is_none() {
                n.ipam_dir = Some(
                    str_key(&ipam, "dataDir")
                        .map_or_else(|| ipam_store::disk::DEFAULT_DATA_DIR.into(), PathBuf::from),
                );
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn load(json: &str, file: &str) -> Config {
        Config::Loaded {
            path: PathBuf::from("/etc/cni/net.d").join(file),
            list: ConfList::from_bytes(json.as_bytes(), file).expect("valid"),
        }
    }

    #[test]
    fn kube_flannel_defaults() {
        let c = load(
            r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[
                {"type":"flannel","delegate":{"hairpinMode":true}},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            "10-flannel.conflist",
        );
        let n = Network::of(&c, &Options::default());
        assert_eq!(n.name.as_deref(), Some("cbr0"));
        assert_eq!(
            n.flannel,
            Some(Flannel {
                subnet_file: "/run/flannel/subnet.env".into(),
                data_dir: "/var/lib/cni/flannel".into()
            })
        );
        assert_eq!(n.bridge.as_deref(), Some("cni0"));
        assert_eq!(n.ipam_dir, Some(PathBuf::from("/var/lib/cni/networks")));
        let names: Vec<&str> = n.needs.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["flannel", "bridge", "host-local", "portmap"]);
    }

    #[test]
    fn paths_from_the_config_and_flags() {
        let c = load(
            r#"{"name":"n","type":"flannel","subnetFile":"/x/subnet.env","dataDir":"/x/fl",
                "delegate":{"bridge":"br9"},"ipam":{"dataDir":"/x/ipam"}}"#,
            "a.conf",
        );
        let n = Network::of(&c, &Options::default());
        let f = n.flannel.clone().expect("flannel");
        assert_eq!(f.subnet_file, PathBuf::from("/x/subnet.env"));
        assert_eq!(f.data_dir, PathBuf::from("/x/fl"));
        assert_eq!(n.bridge.as_deref(), Some("br9"));
        assert_eq!(n.ipam_dir, Some(PathBuf::from("/x/ipam")));
        let o = Options {
            subnet_file: Some("/flag.env".into()),
            ..Options::default()
        };
        let f = Network::of(&c, &o).flannel.expect("flannel");
        assert_eq!(f.subnet_file, PathBuf::from("/flag.env"));
    }

    #[test]
    fn plain_bridge_and_other_delegates() {
        let c = load(
            r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":"rcni0",
                "ipam":{"type":"host-local","subnet":"10.88.0.0/16"}}]}"#,
            "20.conflist",
        );
        let n = Network::of(&c, &Options::default());
        assert!(n.flannel.is_none());
        assert_eq!(n.bridge.as_deref(), Some("rcni0"));
        let c = load(
            r#"{"name":"m","type":"flannel","delegate":{"type":"macvlan"},"ipam":{"type":"dhcp"}}"#,
            "m.conf",
        );
        let n = Network::of(&c, &Options::default());
        assert_eq!(n.bridge, None);
        assert_eq!(n.ipam_dir, None);
        let names: Vec<&str> = n.needs.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["flannel", "macvlan", "dhcp"]);
    }

    #[test]
    fn selection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert!(matches!(
            Config::select(&d.join("nope"), None),
            Config::Missing(m) if m.contains("does not exist")
        ));
        assert!(matches!(Config::select(d, None), Config::Missing(m) if m.contains("no *.conf")));
        fs::write(d.join("README"), "not a config").expect("write");
        fs::write(d.join("00-junk.conflist"), [0xff, 0x00, 0x13]).expect("write");
        fs::write(
            d.join("10-flannel.conflist"),
            r#"{"name":"cbr0","plugins":[{"type":"flannel"}]}"#,
        )
        .expect("write");
        match Config::select(d, None) {
            Config::Invalid { path, reason } => {
                assert!(path.ends_with("00-junk.conflist"));
                assert!(reason.contains("not valid JSON"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Config::select(d, Some("cbr0")),
            Config::Loaded { list, .. } if list.name == "cbr0"
        ));
        match Config::select(d, Some("other")) {
            Config::Missing(m) => {
                assert!(m.contains("\"other\"") && m.contains("\"cbr0\""), "{m}");
                assert!(m.contains("does not load"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
