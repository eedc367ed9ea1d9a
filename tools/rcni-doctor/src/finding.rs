//! What the checks report: stable finding ids, severities, and the outcome of each check.

use std::fmt;

use serde::Serialize;

/// A finding's stable id (README and tests rely on these strings), in report order: the
/// root cause first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Id {
    CniConfigMissing,
    CniConfigInvalid,
    PluginMissing,
    SubnetEnvMissing,
    SubnetEnvInvalid,
    BridgeAddressMismatch,
    IpForwardDisabled,
    ForwardDrop,
    BridgeNfCallDisabled,
    MtuMismatch,
    StaleReservation,
    LeftoverRules,
    PoolNearlyExhausted,
    NoRouteToPeers,
}

impl Id {
    /// Every id, in report order.
    pub const ALL: [Id; 14] = [
        Id::CniConfigMissing,
        Id::CniConfigInvalid,
        Id::PluginMissing,
        Id::SubnetEnvMissing,
        Id::SubnetEnvInvalid,
        Id::BridgeAddressMismatch,
        Id::IpForwardDisabled,
        Id::ForwardDrop,
        Id::BridgeNfCallDisabled,
        Id::MtuMismatch,
        Id::StaleReservation,
        Id::LeftoverRules,
        Id::PoolNearlyExhausted,
        Id::NoRouteToPeers,
    ];

    /// The id as users see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Id::CniConfigMissing => "cni-config-missing",
            Id::CniConfigInvalid => "cni-config-invalid",
            Id::PluginMissing => "plugin-missing",
            Id::SubnetEnvMissing => "subnet-env-missing",
            Id::SubnetEnvInvalid => "subnet-env-invalid",
            Id::BridgeAddressMismatch => "bridge-address-mismatch",
            Id::IpForwardDisabled => "ip-forward-disabled",
            Id::ForwardDrop => "forward-drop",
            Id::BridgeNfCallDisabled => "bridge-nf-call-disabled",
            Id::MtuMismatch => "mtu-mismatch",
            Id::StaleReservation => "stale-reservation",
            Id::LeftoverRules => "leftover-rules",
            Id::PoolNearlyExhausted => "pool-nearly-exhausted",
            Id::NoRouteToPeers => "no-route-to-peers",
        }
    }

    /// Every finding with this id has this severity.
    pub fn severity(self) -> Severity {
        match self {
            Id::BridgeNfCallDisabled
            | Id::StaleReservation
            | Id::LeftoverRules
            | Id::PoolNearlyExhausted
            | Id::NoRouteToPeers => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error`: pods on this node cannot work until it is fixed; `warning`: they work, but
/// something will bite (leaks, a full pool, services, a one-node cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What `--fix` does for a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Write each `(key, value)` sysctl (key in slash form).
    Sysctl { settings: Vec<(String, String)> },
    /// Delete the bridge `name` (it had no ports when checked; checked again before).
    DeleteBridge { name: String },
    /// A CNI GC of the active network with the live attachments as the valid ones.
    Gc,
}

/// One problem found on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: Id,
    pub severity: Severity,
    /// What was found, why it matters and, when `--fix` cannot do it, how to fix it by hand.
    pub message: String,
    /// What `--fix` does about it; `None` when nothing can be done automatically.
    pub fix: Option<String>,
    #[serde(skip)]
    pub repair: Option<Repair>,
}

impl Finding {
    /// A finding that `--fix` cannot repair.
    pub fn new(id: Id, message: impl Into<String>) -> Self {
        Finding {
            id,
            severity: id.severity(),
            message: message.into(),
            fix: None,
            repair: None,
        }
    }

    /// Adds what `--fix` will do.
    pub fn with_repair(self, what: impl Into<String>, repair: Repair) -> Self {
        Finding {
            fix: Some(what.into()),
            repair: Some(repair),
            ..self
        }
    }
}

/// How one check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Looked, nothing wrong; the text says what was seen.
    Pass(String),
    /// Looked, found this (one finding per id).
    Found(Finding),
    /// Did not apply, or an earlier finding explains why it could not run.
    Skipped(String),
    /// Should have looked and could not: the doctor's answer is incomplete (exit 2).
    Unchecked(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What the check is about, for people ("IP forwarding").
    pub name: &'static str,
    pub outcome: Outcome,
}

/// The whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was looked at (the config file, the lease), for the heading.
    pub context: Vec<String>,
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// The findings, in report order.
    pub fn findings(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self
            .checks
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Found(f) => Some(f),
                _ => None,
            })
            .collect();
        v.sort_by_key(|f| f.id);
        v
    }

    /// No error-severity finding (warnings may stand beside it).
    pub fn healthy(&self) -> bool {
        !self
            .findings()
            .iter()
            .any(|f| f.severity == Severity::Error)
    }

    /// What could not be checked, with the reason.
    pub fn unchecked(&self) -> Vec<(&'static str, &str)> {
        self.checks
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Unchecked(why) => Some((c.name, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// 1 when an error was found, else 2 when something could not be checked, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.healthy() {
            1
        } else if !self.unchecked().is_empty() {
            2
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_documented_strings_in_order() {
        let ids: Vec<&str> = Id::ALL.iter().map(|i| i.as_str()).collect();
        assert_eq!(
            ids,
            [
                "cni-config-missing",
                "cni-config-invalid",
                "plugin-missing",
                "subnet-env-missing",
                "subnet-env-invalid",
                "bridge-address-mismatch",
                "ip-forward-disabled",
                "forward-drop",
                "bridge-nf-call-disabled",
                "mtu-mismatch",
                "stale-reservation",
                "leftover-rules",
                "pool-nearly-exhausted",
                "no-route-to-peers",
            ]
        );
        for id in Id::ALL {
            assert_eq!(
                serde_json::to_value(id).expect("json"),
                serde_json::json!(id.as_str())
            );
        }
        let mut sorted = Id::ALL;
        sorted.sort();
        assert_eq!(sorted, Id::ALL);
    }

    #[test]
    fn exit_codes() {
        let check = |outcome| CheckResult { name: "x", outcome };
        let mut r = Report::default();
        assert_eq!(r.exit_code(), 0);
        r.checks.push(check(Outcome::Found(Finding::new(
            Id::NoRouteToPeers,
            "one node",
        ))));
        assert!(r.healthy());
        assert_eq!(r.exit_code(), 0);
        r.checks.push(check(Outcome::Unchecked("no nft".into())));
        assert_eq!(r.exit_code(), 2);
        r.checks.push(check(Outcome::Found(Finding::new(
            Id::IpForwardDisabled,
            "off",
        ))));
        assert!(!r.healthy());
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.findings()[0].id, Id::IpForwardDisabled);
    }
}
