//! Checks a CNI config the way the runtime's loader (libcni) will read it, before it is
//! installed: a config the runtime cannot load must never replace a working one.

use serde_json::{Map, Value};

/// Spec versions our plugins speak.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// What a valid config holds, for the post-install checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    /// Network name.
    pub name: String,
    /// The `type` of each plugin, in order.
    pub plugin_types: Vec<String>,
}

/// Validates `bytes` as the config installed under `file_name` (the extension decides the
/// shape, as in libcni: `.conflist` is a plugin list, `.conf`/`.json` a single plugin).
/// The error is a sentence saying what is wrong.
pub fn validate(bytes: &[u8], file_name: &str) -> Result<ConfigSummary, String> {
    let is_list = if file_name.ends_with(".conflist") {
        true
    } else if file_name.ends_with(".conf") || file_name.ends_with(".json") {
        false
    } else {
        return Err(format!(
            "the runtime only loads *.conf, *.conflist and *.json files, not {file_name:?}"
        ));
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(top) = v else {
        return Err("the config must be a JSON object".into());
    };
    let name = network_name(&top)?;
    version(&top, "cniVersion")?;
    if let Some(vs) = top.get("cniVersions") {
        let ok = vs
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str().is_some()));
        if !ok {
            return Err("\"cniVersions\" must be an array of strings".into());
        }
    }

    let plugin_types = if is_list {
        if top.contains_key("type") && !top.contains_key("plugins") {
            return Err(format!(
                "{file_name:?} is a .conflist but this is a single plugin config (it has \
                 \"type\", no \"plugins\"): name it .conf, or wrap it in {{\"plugins\":[...]}}"
            ));
        }
        let plugins = match top.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p,
            Some(Value::Array(_)) => return Err("\"plugins\" is empty".into()),
            Some(_) => return Err("\"plugins\" must be an array".into()),
            None => return Err("a .conflist needs a \"plugins\" array".into()),
        };
        let mut types = Vec::with_capacity(plugins.len());
        for (i, p) in plugins.iter().enumerate() {
            let Value::Object(p) = p else {
                return Err(format!("plugins[{i}] must be an object"));
            };
            types.push(plugin(p).map_err(|e| format!("plugins[{i}]: {e}"))?);
            version(p, "cniVersion").map_err(|e| format!("plugins[{i}]: {e}"))?;
        }
        types
    } else {
        if top.contains_key("plugins") {
            return Err(format!(
                "{file_name:?} is loaded as a single plugin config but this is a plugin list \
                 (it has \"plugins\"): name it .conflist"
            ));
        }
        vec![plugin(&top)?]
    };
    Ok(ConfigSummary { name, plugin_types })
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

fn version(obj: &Map<String, Value>, key: &str) -> Result<(), String> {
    match obj.get(key) {
        None => Ok(()),
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(Value::String(v)) => Err(format!(
            "\"{key}\" {v:?} is not a CNI version the plugins support ({})",
            SUPPORTED_VERSIONS.join(", ")
        )),
        Some(_) => Err(format!("\"{key}\" must be a string")),
    }
}

/// One plugin entry: its `type` (a bare binary name), plus the checks flannel itself makes
/// on ADD (so the mistake shows up at install time, not at the first pod).
fn plugin(p: &Map<String, Value>) -> Result<String, String> {
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
    if ty == "flannel" {
        match p.get("delegate") {
            None => {}
            Some(Value::Object(d)) => {
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
            }
            Some(_) => return Err("\"delegate\" must be an object".into()),
        }
    }
    Ok(ty.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

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
                r#"{"name":"x","type":"flannel","delegate":{"name":"y"}}"#,
                "a.conf",
                "'name'",
            ),
            (
                r#"{"name":"x","type":"flannel","delegate":{"ipam":{}}}"#,
                "a.conf",
                "'ipam'",
            ),
            (
                r#"{"name":"x","type":"flannel","delegate":[]}"#,
                "a.conf",
                "object",
            ),
            (r#"{"name":"x","type":"a"}"#, "a.yaml", "only loads"),
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
