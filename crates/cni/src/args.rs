//! `CNI_ARGS` (SPEC §2 parameters; deprecated in favour of `args` in the config).
//!
//! Format `K=V;K=V`. Semantics follow Go `types.LoadArgs`: every pair must split on `=` into
//! exactly two parts (`ARGS: invalid pair "..."`); a key the plugin does not know is an error
//! (`ARGS: unknown args ["K8S_POD_NAME=x"]`) unless `IgnoreUnknown` is `1`/`true`
//! (case-insensitive). Keys are case-sensitive (they are Go struct field names).
//!
//! The dispatcher builds [`CniArgs`] leniently: the Go skel does not look at `CNI_ARGS` at all,
//! only the plugin does (through `LoadArgs`), so a malformed pair must not break commands of a
//! plugin that never reads `CNI_ARGS` (e.g. a DEL that has to succeed). The pair error is kept
//! and reported by [`CniArgs::check_known`], where a Go plugin would call `LoadArgs`.

use crate::error::{CniError, code};

/// The key that turns unknown keys from an error into a no-op (Go `types.CommonArgs`).
pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";

/// Parsed `CNI_ARGS` (`"K=V;K=V"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    /// The first malformed pair, when built leniently by the dispatcher.
    invalid: Option<String>,
}

fn invalid_pair(pair: &str) -> CniError {
    CniError::new(
        code::INVALID_ENVIRONMENT,
        format!("ARGS: invalid pair {pair:?}"),
    )
}

/// Go `UnmarshallableBool`: `1`/`true` and `0`/`false`, case-insensitive.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl CniArgs {
    /// Parses `raw` strictly: a malformed pair is an error (code 4).
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let args = Self::parse_lenient(raw);
        match &args.invalid {
            Some(pair) => Err(invalid_pair(pair)),
            None => Ok(args),
        }
    }

    /// Parses `raw`, keeping the well-formed pairs and remembering the first malformed one
    /// (reported by [`CniArgs::check_known`]).
    pub fn parse_lenient(raw: &str) -> Self {
        let mut args = CniArgs::default();
        if raw.is_empty() {
            return args;
        }
        for pair in raw.split(';') {
            let mut it = pair.split('=');
            match (it.next(), it.next(), it.next()) {
                (Some(k), Some(v), None) => args.pairs.push((k.to_string(), v.to_string())),
                _ => {
                    if args.invalid.is_none() {
                        args.invalid = Some(pair.to_string());
                    }
                }
            }
        }
        args
    }

    /// The value of `key` (case-sensitive; the last one wins, as Go assigns in order).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All well-formed pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// True when `IgnoreUnknown` is `1` or `true` (case-insensitive).
    pub fn ignore_unknown(&self) -> bool {
        self.get(IGNORE_UNKNOWN)
            .and_then(parse_go_bool)
            .unwrap_or(false)
    }

    /// What Go `types.LoadArgs` checks, given the keys the plugin's args struct declares.
    ///
    /// Errors (code 4): a malformed pair; an `IgnoreUnknown` value that is not a bool
    /// (`ARGS: error parsing value of pair "IgnoreUnknown=x": boolean unmarshal error: invalid
    /// input x`); `ARGS: unknown args ["K=V" ...]` unless `IgnoreUnknown` is set.
    ///
    /// `IgnoreUnknown` itself is always known (every Go args struct embeds `types.CommonArgs`);
    /// `K8S_POD_*` keys are unknown unless listed in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if let Some(pair) = &self.invalid {
            return Err(invalid_pair(pair));
        }
        let mut unknown = Vec::new();
        for (k, v) in &self.pairs {
            if k == IGNORE_UNKNOWN {
                if parse_go_bool(v).is_none() {
                    return Err(CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!(
                            "ARGS: error parsing value of pair {:?}: boolean unmarshal error: invalid input {}",
                            format!("{k}={v}"),
                            v.to_ascii_lowercase()
                        ),
                    ));
                }
            } else if !known.contains(&k.as_str()) {
                unknown.push(format!("{k}={v}"));
            }
        }
        if !unknown.is_empty() && !self.ignore_unknown() {
            let quoted: Vec<String> = unknown.iter().map(|p| format!("{p:?}")).collect();
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("ARGS: unknown args [{}]", quoted.join(" ")),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pairs() {
        let a = CniArgs::parse("IP=10.0.0.5;K8S_POD_NAME=web;IgnoreUnknown=1").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("ip"), None);
        assert!(a.ignore_unknown());
        assert!(a.check_known(&["IP"]).is_ok());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse("A=").unwrap().get("A"), Some(""));
    }

    #[test]
    fn invalid_pairs() {
        for raw in ["A", "A=1=2", "A=1;", "A=1;;B=2"] {
            let e = CniArgs::parse(raw).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENVIRONMENT, "{raw}");
            assert!(e.msg.starts_with("ARGS: invalid pair "), "{}", e.msg);
        }
        assert_eq!(
            CniArgs::parse("A=1=2").unwrap_err().msg,
            "ARGS: invalid pair \"A=1=2\""
        );
        // Lenient parsing keeps good pairs and reports the bad one later.
        let a = CniArgs::parse_lenient("IP=1.2.3.4;bad");
        assert_eq!(a.get("IP"), Some("1.2.3.4"));
        assert_eq!(
            a.check_known(&["IP"]).unwrap_err().msg,
            "ARGS: invalid pair \"bad\""
        );
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("K8S_POD_NAME=x;K8S_POD_NAMESPACE=y").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(
            e.msg,
            "ARGS: unknown args [\"K8S_POD_NAME=x\" \"K8S_POD_NAMESPACE=y\"]"
        );
        assert!(
            a.check_known(&["K8S_POD_NAME", "K8S_POD_NAMESPACE"])
                .is_ok()
        );
        let a = CniArgs::parse("K8S_POD_NAME=x;IgnoreUnknown=TRUE").unwrap();
        assert!(a.check_known(&[]).is_ok());
        let a = CniArgs::parse("IgnoreUnknown=0").unwrap();
        assert!(!a.ignore_unknown());
        assert!(a.check_known(&[]).is_ok());
        let e = CniArgs::parse("IgnoreUnknown=yes")
            .unwrap()
            .check_known(&[])
            .unwrap_err();
        assert_eq!(
            e.msg,
            "ARGS: error parsing value of pair \"IgnoreUnknown=yes\": boolean unmarshal error: invalid input yes"
        );
    }
}
