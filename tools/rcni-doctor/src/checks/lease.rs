//! flanneld's lease: `subnet-env-missing`, `subnet-env-invalid`.

use crate::finding::{CheckResult, Finding, Id, Outcome};
use crate::{Context, Lease};

/// Where an operator looks next when flanneld has no (good) lease.
const FLANNELD_HINT: &str = "Check flanneld on this node: is it running, can it reach the API \
    server, does the node have a podCIDR? (kubectl -n kube-flannel logs on this node's \
    kube-flannel pod)";

pub fn lease(ctx: &Context) -> CheckResult {
    let outcome = match &ctx.lease {
        Lease::NotFlannel => {
            Outcome::Skipped("not checked: the network does not use flannel".into())
        }
        Lease::Loaded { path, env } => {
            let mut parts: Vec<String> = Vec::new();
            for (subnet, networks) in [
                (env.subnet, &env.networks),
                (env.ipv6_subnet, &env.ipv6_networks),
            ] {
                if let Some(s) = subnet {
                    let nets: Vec<String> = networks.iter().map(ToString::to_string).collect();
                    parts.push(format!("node subnet {s} of {}", nets.join(",")));
                }
            }
            Outcome::Pass(format!(
                "{}: {}, MTU {}",
                path.display(),
                parts.join(", "),
                env.mtu
            ))
        }
        Lease::Missing { path } => Outcome::Found(Finding::new(
            Id::SubnetEnvMissing,
            format!(
                "{} does not exist: flanneld has no lease for this node, so every pod ADD fails \
                 (\"failed to load flannel 'subnet.env' file\"). {FLANNELD_HINT}",
                path.display()
            ),
        )),
        Lease::Invalid { path, why } => Outcome::Found(Finding::new(
            Id::SubnetEnvInvalid,
            format!(
                "{} cannot be used: {why}. Every pod ADD fails or gets the wrong subnet; \
                 flanneld rewrites the file when it (re)starts. {FLANNELD_HINT}",
                path.display()
            ),
        )),
    };
    CheckResult {
        name: "flannel lease",
        outcome,
    }
}
