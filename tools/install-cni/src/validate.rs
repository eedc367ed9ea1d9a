//! Checks a CNI config the way the runtime's loader (libcni) will read it, before it is
//! installed: a config the runtime cannot load must never replace a working one.

use cni::config::ConfList;
use serde_json::{Map, Value};

/// What a valid config holds, for the post-install checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    /// Network name.
    pub name: String,
    /// The `type` of each plugin, in order.
    pub plugin_types: Vec<String>,
}

/// Validates `bytes` as the config installed under `file_name` with the runtime's loader
/// ([`ConfList::from_bytes`]), plus the checks flannel itself makes on ADD (so the mistake
/// shows up at install time, not at the first pod). The error is a sentence saying what is
/// wrong.
pub fn validate(bytes: &[u8], file_name: &str) -> Result<ConfigSummary, String> {
    let list = ConfList::from_bytes(bytes, file_name).map_err(|e| e.to_string())?;
    for p in &list.plugins {
        if p.get("type").and_then(Value::as_str) == Some("flannel") {
            flannel_delegate(p.get("delegate"))?;
        }
    }
    Ok(ConfigSummary {
        plugin_types: list.plugin_types().into_iter().map(str::to_owned).collect(),
        name: list.name,
    })
}

/// flannel refuses a `delegate` that sets what it owns.
fn flannel_delegate(delegate: Option<&Value>) -> Result<(), String> {
    let d: &Map<String, Value> = match delegate {
        None => return Ok(()),
        Some(Value::Object(d)) => d,
        Some(_) => return Err("\"delegate\" must be an object".into()),
    };
    for key in ["name", "ipam"] {
        if d.contains_key(key) {
            return Err(format!(
                "'delegate' dictionary must not have '{key}' field, it'll be set by flannel"
            ));
        }
    }
    if d.get("type").is_some_and(|t| !t.is_string()) {
        return Err("'delegate' field 'type' must be a string".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube-flannel's config, as the examples ship it.
    const KUBE_FLANNEL: &str = include_str!("../../../conf-examples/10-flannel.conflist");

    #[test]
    fn kube_flannel_conflist_is_valid() {
        let s = validate(KUBE_FLANNEL.as_bytes(), "10-flannel.conflist").expect("valid");
        assert_eq!(s.name, "cbr0");
        assert_eq!(s.plugin_types, ["flannel", "portmap"]);
    }

    #[test]
    fn single_conf_is_valid() {
        let c = r#"{"cniVersion":"0.3.1","name":"flannel","type":"flannel",
                    "delegate":{"isDefaultGateway":true,"ipMasq":true}}"#;
        let s = validate(c.as_bytes(), "10-flannel.conf").expect("valid");
        assert_eq!(s.plugin_types, ["flannel"]);
        assert!(validate(c.as_bytes(), "10-flannel.json").is_ok());
    }

    #[test]
    fn refused() {
        let cases: &[(&str, &str, &str)] = &[
            // The runtime's loader (its own cases are tested in the cni crate).
            ("{\"name\":\"x\",", "a.conflist", "not valid JSON"),
            (r#"{"name":"x","plugins":[{}]}"#, "a.conflist", "plugins[0]"),
            (r#"{"name":"x","type":"a"}"#, "a.yaml", "only loads"),
            // flannel's own rules.
            (
                r#"{"name":"x","type":"flannel","delegate":{"name":"y"}}"#,
                "a.conf",
                "'name'",
            ),
            (
                r#"{"name":"x","plugins":[{"type":"flannel","delegate":{"ipam":{}}}]}"#,
                "a.conflist",
                "'ipam'",
            ),
            (
                r#"{"name":"x","type":"flannel","delegate":[]}"#,
                "a.conf",
                "object",
            ),
            (
                r#"{"name":"x","type":"flannel","delegate":{"type":1}}"#,
                "a.conf",
                "'type' must be a string",
            ),
        ];
        for (conf, file, want) in cases {
            let err = validate(conf.as_bytes(), file).expect_err(conf);
            assert!(
                err.contains(want),
                "{conf} as {file}: {err:?} lacks {want:?}"
            );
        }
    }
}
