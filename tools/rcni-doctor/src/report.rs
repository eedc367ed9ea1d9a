//! Printing a [`Report`]: one line per check for people, or one JSON object for programs.

use std::io::Write;

use serde::Serialize;

use crate::finding::{Finding, Outcome, Report, Severity};
use crate::network::Config;
use crate::{Context, Lease};

/// What was looked at, for the heading of the text report.
pub fn context_lines(ctx: &Context) -> Vec<String> {
    let mut v = Vec::new();
    match &ctx.config {
        Config::Loaded { path, list } => {
            v.push(format!("network {:?} from {}", list.name, path.display()))
        }
        _ => v.push(format!(
            "no usable config in {}",
            ctx.opts.conf_dir.display()
        )),
    }
    match &ctx.lease {
        Lease::Loaded { path, env } => {
            let subnets: Vec<String> = env
                .subnet
                .iter()
                .chain(&env.ipv6_subnet)
                .map(ToString::to_string)
                .collect();
            v.push(format!("lease {} ({})", subnets.join(", "), path.display()));
        }
        Lease::Missing { path } | Lease::Invalid { path, .. } => {
            v.push(format!("lease file {}", path.display()));
        }
        Lease::NotFlannel => {}
    }
    v
}

/// The `--json` document.
#[derive(Serialize)]
struct Json<'a> {
    healthy: bool,
    findings: Vec<&'a Finding>,
}

/// Prints `r` as text on `out`, or as JSON on `out` with what could not be checked on `err`
/// (stdout carries the JSON object and nothing else).
pub fn print(r: &Report, json: bool, out: &mut dyn Write, err: &mut dyn Write) {
    if json {
        let doc = Json {
            healthy: r.healthy(),
            findings: r.findings(),
        };
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let _ = writeln!(out, "{text}");
        for (name, why) in r.unchecked() {
            let _ = writeln!(err, "rcni-doctor: could not check {name}: {why}");
        }
    } else {
        print_text(r, out);
    }
}

/// Marks: ✓ fine, ✗ error, ! warning, - not applicable here, ? could not be checked.
pub fn print_text(r: &Report, out: &mut dyn Write) {
    let mut s = String::new();
    for line in &r.context {
        s.push_str(&format!("rcni-doctor: {line}\n"));
    }
    for c in &r.checks {
        match &c.outcome {
            Outcome::Pass(what) => s.push_str(&format!("✓ {}: {what}\n", c.name)),
            Outcome::Found(f) => {
                let mark = match f.severity {
                    Severity::Error => '✗',
                    Severity::Warning => '!',
                };
                s.push_str(&format!("{mark} {}: {}\n", f.id, f.message));
                if let Some(fix) = &f.fix {
                    s.push_str(&format!("    --fix: {fix}\n"));
                }
            }
            Outcome::Skipped(why) => s.push_str(&format!("- {}: {why}\n", c.name)),
            Outcome::Unchecked(why) => {
                s.push_str(&format!("? {}: could not check: {why}\n", c.name));
            }
        }
    }
    s.push_str(&summary(r));
    s.push('\n');
    let _ = out.write_all(s.as_bytes());
}

fn summary(r: &Report) -> String {
    let findings = r.findings();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let fixable = findings.iter().filter(|f| f.fix.is_some()).count();
    let unchecked = r.unchecked().len();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let mut s = if findings.is_empty() {
        "no problem found".to_owned()
    } else {
        format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    };
    if fixable > 0 {
        s.push_str(&format!("; rcni-doctor --fix repairs {fixable} of them"));
    }
    if unchecked > 0 {
        s.push_str(&format!(
            "; {} could not run, so this answer is incomplete",
            plural(unchecked, "check")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{CheckResult, Id, Repair};

    fn report() -> Report {
        Report {
            context: vec!["network \"cbr0\" from /etc/cni/net.d/10-flannel.conflist".into()],
            checks: vec![
                CheckResult {
                    name: "CNI config",
                    outcome: Outcome::Pass("fine".into()),
                },
                CheckResult {
                    name: "IP forwarding",
                    outcome: Outcome::Found(
                        Finding::new(Id::IpForwardDisabled, "net.ipv4.ip_forward is 0")
                            .with_repair(
                                "set it to 1",
                                Repair::Sysctl {
                                    settings: vec![("net/ipv4/ip_forward".into(), "1".into())],
                                },
                            ),
                    ),
                },
                CheckResult {
                    name: "routes to peers",
                    outcome: Outcome::Found(Finding::new(Id::NoRouteToPeers, "no route")),
                },
                CheckResult {
                    name: "FORWARD chain",
                    outcome: Outcome::Unchecked("no nft, no iptables".into()),
                },
                CheckResult {
                    name: "MTU",
                    outcome: Outcome::Skipped("not checked: needs the lease".into()),
                },
            ],
        }
    }

    #[test]
    fn text() {
        let mut out = Vec::new();
        print_text(&report(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "rcni-doctor: network \"cbr0\" from /etc/cni/net.d/10-flannel.conflist\n\
             ✓ CNI config: fine\n\
             ✗ ip-forward-disabled: net.ipv4.ip_forward is 0\n    --fix: set it to 1\n\
             ! no-route-to-peers: no route\n\
             ? FORWARD chain: could not check: no nft, no iptables\n\
             - MTU: not checked: needs the lease\n\
             1 error, 1 warning; rcni-doctor --fix repairs 1 of them; 1 check could not run, \
             so this answer is incomplete\n"
        );
    }

    #[test]
    fn json_is_one_object_and_nothing_else() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print(&report(), true, &mut out, &mut err);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"healthy": false, "findings": [
                {"id": "ip-forward-disabled", "severity": "error",
                 "message": "net.ipv4.ip_forward is 0", "fix": "set it to 1"},
                {"id": "no-route-to-peers", "severity": "warning",
                 "message": "no route", "fix": null}]})
        );
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "rcni-doctor: could not check FORWARD chain: no nft, no iptables\n"
        );
    }
}
