//! Network configuration lists (SPEC §1) as a runtime loads them from a config directory:
//! the one loader of install-cni, rcni-doctor and the integration tests.
//!
//! Loading follows libcni (`ConfFiles`, `ConfListFromBytes`, `ConfFromBytes` +
//! `ConfListFromConf`): `*.conflist` files hold a list, `*.conf` and `*.json` one plugin, which
//! becomes a list of one. On top of what libcni refuses, a config our plugins cannot run is
//! refused too (a `cniVersion` no spec has, a `type` that is a path), so that a tool can say so
//! before the first pod fails.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ATTACHMENTS_KEY, Attachment, VALID_ATTACHMENTS_KEY};
use crate::version::{SUPPORTED, SpecVersion};

/// The extensions libcni loads from a config directory (`libcni.ConfFiles`).
pub const CONF_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// Why a config file cannot be used. The messages are sentences an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfListError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: io::Error,
    },
    /// The file name has an extension the runtime does not load.
    #[error("the runtime only loads *.conf, *.conflist and *.json files, not {0:?}")]
    Extension(String),
    /// The bytes are not one JSON document.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The JSON is not a config the runtime (or our plugins) can use.
    #[error("{0}")]
    Invalid(String),
}

/// A network configuration list (SPEC §1).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfList {
    /// `cniVersion`.
    #[serde(default)]
    pub cni_version: String,
    /// `cniVersions` (1.1.0): the versions the list may be used with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// `disableCheck`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    /// `disableGC` (1.1.0).
    #[serde(
        default,
        rename = "disableGC",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_gc: bool,
    /// The plugin configs, in order (each a JSON object with a string `type`).
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// The config files of `dir` a runtime considers, sorted by name as libcni sorts them (the
/// first is the one kubelet and containerd use by default). Directories are skipped; a
/// missing `dir` has none.
pub fn conf_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        // libcni reads the type without following links: a dangling link is a file it tries.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONF_EXTENSIONS.contains(&e));
        if known {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl ConfList {
    /// Reads and checks the config file at `path` (see [`ConfList::from_bytes`]).
    pub fn load(path: &Path) -> Result<Self, ConfListError> {
        let bytes = std::fs::read(path).map_err(|source| ConfListError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_bytes(&bytes, &name)
    }

    /// Parses and checks the config `bytes` stored under `file_name`: the extension decides
    /// the shape, as in libcni (`.conflist` a list, `.conf`/`.json` a single plugin that
    /// becomes a list of one).
    pub fn from_bytes(bytes: &[u8], file_name: &str) -> Result<Self, ConfListError> {
        let invalid = |m: String| ConfListError::Invalid(m);
        let is_list = if file_name.ends_with(".conflist") {
            true
        } else if file_name.ends_with(".conf") || file_name.ends_with(".json") {
            false
        } else {
            return Err(ConfListError::Extension(file_name.to_owned()));
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| ConfListError::Json(e.to_string()))?;
        let Value::Object(top) = v else {
            return Err(invalid("the config must be a JSON object".into()));
        };
        let name = network_name(&top).map_err(invalid)?;
        let cni_version = version(&top, "cniVersion").map_err(invalid)?;
        let cni_versions = match top.get("cniVersions") {
            None => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                return Err(invalid(
                    "\"cniVersions\" must be an array of strings".into(),
                ));
            }
        };

        let plugins = if is_list {
            if top.contains_key("type") && !top.contains_key("plugins") {
                return Err(invalid(format!(
                    "{file_name:?} is a .conflist but this is a single plugin config (it has \
                     \"type\", no \"plugins\"): name it .conf, or wrap it in {{\"plugins\":[...]}}"
                )));
            }
            let plugins = match top.get("plugins") {
                Some(Value::Array(p)) if !p.is_empty() => p,
                Some(Value::Array(_)) => return Err(invalid("\"plugins\" is empty".into())),
                Some(_) => return Err(invalid("\"plugins\" must be an array".into())),
                None => return Err(invalid("a .conflist needs a \"plugins\" array".into())),
            };
            for (i, p) in plugins.iter().enumerate() {
                let Value::Object(p) = p else {
                    return Err(invalid(format!("plugins[{i}] must be an object")));
                };
                plugin_type(p).map_err(|e| invalid(format!("plugins[{i}]: {e}")))?;
                version(p, "cniVersion").map_err(|e| invalid(format!("plugins[{i}]: {e}")))?;
            }
            plugins.clone()
        } else {
            if top.contains_key("plugins") {
                return Err(invalid(format!(
                    "{file_name:?} is loaded as a single plugin config but this is a plugin list \
                     (it has \"plugins\"): name it .conflist"
                )));
            }
            plugin_type(&top).map_err(invalid)?;
            vec![Value::Object(top.clone())]
        };
        Ok(ConfList {
            cni_version,
            cni_versions,
            name,
            disable_check: flag(&top, "disableCheck").map_err(invalid)?,
            disable_gc: flag(&top, "disableGC").map_err(invalid)?,
            plugins,
        })
    }

    /// The `type` of each plugin, in order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }

    /// The version libcni would use: the highest of `cniVersions` that we support, else
    /// `cniVersion` (libcni/conf.go).
    pub fn effective_version(&self) -> String {
        self.cni_versions
            .iter()
            .filter_map(|v| SpecVersion::parse(v).ok().filter(|p| p.is_supported()))
            .max()
            .map(|v| v.as_str())
            .unwrap_or_else(|| self.cni_version.clone())
    }

    /// The request config of plugin `idx` as a runtime derives it (SPEC §3): `cniVersion` and
    /// `name` injected, `capabilities` removed. `prevResult`/`runtimeConfig` are the caller's.
    pub fn plugin_conf(&self, idx: usize) -> Option<Value> {
        let mut p = self.plugins.get(idx)?.as_object()?.clone();
        p.insert("cniVersion".into(), self.effective_version().into());
        p.insert("name".into(), self.name.clone().into());
        p.remove("capabilities");
        Some(Value::Object(p))
    }

    /// The GC input of plugin `idx` (SPEC §2 GC), as a CNI 1.1 runtime sends it: the request
    /// config at version 1.1.0 (GC needs it; a list written for an older version is otherwise
    /// never garbage-collected) with `cni.dev/valid-attachments` (and libcni's misspelled
    /// `cni.dev/attachments`) set to `valid`.
    pub fn gc_conf(&self, idx: usize, valid: &[Attachment]) -> Option<Value> {
        let mut conf = self.plugin_conf(idx)?;
        let list = serde_json::to_value(valid).unwrap_or_default();
        let obj = conf.as_object_mut()?;
        let v = SpecVersion::parse(&self.effective_version()).unwrap_or(SpecVersion::V0_1_0);
        if v < SpecVersion::V1_1_0 {
            obj.insert("cniVersion".into(), SpecVersion::V1_1_0.as_str().into());
        }
        obj.insert(VALID_ATTACHMENTS_KEY.into(), list.clone());
        obj.insert(ATTACHMENTS_KEY.into(), list);
        Some(conf)
    }
}

/// The network name: required, and valid as libcni's `ValidateNetworkName` wants it.
fn network_name(top: &Map<String, Value>) -> Result<String, String> {
    let name = match top.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) | None => return Err("\"name\" is missing or empty".into()),
        Some(_) => return Err("\"name\" must be a string".into()),
    };
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !(first_ok && rest_ok) {
        return Err(format!(
            "network name {name:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
        ));
    }
    Ok(name.clone())
}

/// `key` as a spec version our plugins speak; `""` when absent or empty (both read as 0.1.0,
/// by libcni and by our dispatcher).
fn version(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None => Ok(String::new()),
        Some(Value::String(v)) if v.is_empty() || SUPPORTED.contains(&v.as_str()) => Ok(v.clone()),
        Some(Value::String(v)) => Err(format!(
            "\"{key}\" {v:?} is not a CNI version the plugins support ({})",
            SUPPORTED.join(", ")
        )),
        Some(_) => Err(format!("\"{key}\" must be a string")),
    }
}

/// One plugin entry's `type`: a bare binary name (the runtime looks it up on `CNI_PATH`).
fn plugin_type(p: &Map<String, Value>) -> Result<String, String> {
    let ty = match p.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t,
        Some(Value::String(_)) | None => return Err("\"type\" is missing or empty".into()),
        Some(_) => return Err("\"type\" must be a string".into()),
    };
    if ty.contains('/') || ty.starts_with('.') {
        return Err(format!(
            "\"type\" {ty:?} must be a plugin binary name, not a path"
        ));
    }
    Ok(ty.clone())
}

fn flag(top: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("\"{key}\" must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KUBE_FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

    #[test]
    fn kube_flannel_conflist() {
        let l = ConfList::from_bytes(KUBE_FLANNEL.as_bytes(), "10-flannel.conflist").unwrap();
        assert_eq!(l.name, "cbr0");
        assert_eq!(l.cni_version, "0.3.1");
        assert_eq!(l.plugin_types(), ["flannel", "portmap"]);
        assert_eq!(
            l.plugin_conf(1).unwrap(),
            json!({"type":"portmap","cniVersion":"0.3.1","name":"cbr0"})
        );
    }

    #[test]
    fn single_conf_becomes_a_list_of_one() {
        let c = r#"{"cniVersion":"0.3.1","name":"flannel","type":"flannel",
                    "delegate":{"isDefaultGateway":true,"ipMasq":true}}"#;
        let l = ConfList::from_bytes(c.as_bytes(), "10-flannel.conf").unwrap();
        assert_eq!(l.name, "flannel");
        assert_eq!(l.cni_version, "0.3.1");
        assert_eq!(l.plugin_types(), ["flannel"]);
        assert!(ConfList::from_bytes(c.as_bytes(), "10-flannel.json").is_ok());
    }

    /// Found by fuzzing (`fuzz/corpus/netconf/empty-version`): an absent `cniVersion` was
    /// accepted and an empty one refused, though both mean 0.1.0 to libcni and to our
    /// dispatcher; so a list, once loaded and written out, no longer loaded.
    #[test]
    fn an_empty_version_is_an_absent_one() {
        for c in [
            r#"{"name":"lo","type":"loopback"}"#,
            r#"{"name":"lo","type":"loopback","cniVersion":""}"#,
        ] {
            let l = ConfList::from_bytes(c.as_bytes(), "99-lo.conf").unwrap();
            assert_eq!(l.cni_version, "");
            let again =
                ConfList::from_bytes(&serde_json::to_vec(&l).unwrap(), "99-lo.conflist").unwrap();
            assert_eq!(again, l);
        }
    }

    #[test]
    fn versions_and_plugin_conf() {
        let l = ConfList::from_bytes(
            json!({
            "cniVersion":"0.3.1","cniVersions":["0.3.1","1.0.0","9.0.0"],"name":"cbr0",
            "plugins":[{"type":"flannel","capabilities":{"portMappings":true}},{"type":"portmap"}]})
            .to_string()
            .as_bytes(),
            "x.conflist",
        )
        .unwrap();
        assert_eq!(l.effective_version(), "1.0.0");
        assert_eq!(
            l.plugin_conf(0).unwrap(),
            json!({"type":"flannel","cniVersion":"1.0.0","name":"cbr0"})
        );
        assert!(l.plugin_conf(5).is_none());
    }

    #[test]
    fn gc_conf_is_version_1_1_with_the_attachments() {
        let l = ConfList::from_bytes(KUBE_FLANNEL.as_bytes(), "a.conflist").unwrap();
        let valid = [Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        let c = l.gc_conf(0, &valid).unwrap();
        assert_eq!(c["cniVersion"], "1.1.0");
        assert_eq!(c["name"], "cbr0");
        assert_eq!(
            c["cni.dev/valid-attachments"],
            json!([{"containerID":"c1","ifname":"eth0"}])
        );
        assert_eq!(c["cni.dev/attachments"], c["cni.dev/valid-attachments"]);
        assert_eq!(
            l.gc_conf(0, &[]).unwrap()["cni.dev/valid-attachments"],
            json!([])
        );
    }

    #[test]
    fn refused() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "a.conflist", "not valid JSON"),
            ("{\"name\":\"x\",", "a.conflist", "not valid JSON"),
            (
                "{\"name\":\"x\",\"plugins\":[{\"type\":\"a\"}]} trailing",
                "a.conflist",
                "not valid JSON",
            ),
            ("[]", "a.conflist", "JSON object"),
            (r#"{"plugins":[{"type":"a"}]}"#, "a.conflist", "\"name\""),
            (
                r#"{"name":"-x","plugins":[{"type":"a"}]}"#,
                "a.conflist",
                "invalid",
            ),
            (r#"{"name":"x","plugins":[]}"#, "a.conflist", "empty"),
            (r#"{"name":"x","plugins":{}}"#, "a.conflist", "array"),
            (
                r#"{"name":"x","type":"bridge"}"#,
                "a.conflist",
                "name it .conf",
            ),
            (
                r#"{"name":"x","plugins":[{"type":"a"}]}"#,
                "a.conf",
                "name it .conflist",
            ),
            (r#"{"name":"x","plugins":[{}]}"#, "a.conflist", "plugins[0]"),
            (r#"{"name":"x","plugins":[7]}"#, "a.conflist", "object"),
            (
                r#"{"name":"x","plugins":[{"type":"/bin/sh"}]}"#,
                "a.conflist",
                "not a path",
            ),
            (
                r#"{"name":"x","plugins":[{"type":7}]}"#,
                "a.conflist",
                "string",
            ),
            (
                r#"{"name":"x","cniVersion":"9.9.9","plugins":[{"type":"a"}]}"#,
                "a.conflist",
                "9.9.9",
            ),
            (
                r#"{"name":"x","cniVersion":31,"plugins":[{"type":"a"}]}"#,
                "a.conflist",
                "string",
            ),
            (
                r#"{"name":"x","cniVersions":[1],"plugins":[{"type":"a"}]}"#,
                "a.conflist",
                "array of strings",
            ),
            (
                r#"{"name":"x","disableCheck":"yes","plugins":[{"type":"a"}]}"#,
                "a.conflist",
                "true or false",
            ),
            (r#"{"name":"x"}"#, "a.conf", "\"type\""),
            (r#"{"name":"x","type":"a"}"#, "a.yaml", "only loads"),
        ];
        for (conf, file, want) in cases {
            let err = ConfList::from_bytes(conf.as_bytes(), file).expect_err(conf);
            assert!(
                err.to_string().contains(want),
                "{conf} as {file}: {err:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn files_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(conf_files(&dir.path().join("missing")).unwrap().is_empty());
        for f in [
            "20-b.conf",
            "10-a.conflist",
            "README",
            "30-c.json",
            "x.conf.bak",
        ] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        std::fs::create_dir(dir.path().join("05-dir.conflist")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("00-dangling.conf")).unwrap();
        let names: Vec<String> = conf_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "00-dangling.conf",
                "10-a.conflist",
                "20-b.conf",
                "30-c.json"
            ]
        );
        let err = ConfList::load(&dir.path().join("00-dangling.conf")).unwrap_err();
        assert!(matches!(err, ConfListError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("00-dangling.conf"), "{err}");
    }
}
