//! `loopback`: brings `lo` up inside the container netns (ADD) and down again (DEL).
//!
//! Behaviour follows the reference plugin (containernetworking/plugins
//! plugins/main/loopback/loopback.go): CNI_IFNAME is ignored (always `lo`), a `prevResult`
//! is passed through, and a missing netns on DEL is success.

use std::path::Path;

use cni::skel::{AddOutput, CmdArgs, Plugin};
use cni::{CniError, CniResult, Interface, IpConfig, code};
use ipnetwork::IpNetwork;
use netlink::{Netlink, Netns};

/// The only interface this plugin handles, whatever CNI_IFNAME says.
const LO: &str = "lo";
/// The MAC the reference reports for `lo`.
const LO_MAC: &str = "00:00:00:00:00:00";

/// Everything that can go wrong in this plugin.
#[derive(Debug, thiserror::Error)]
enum LoopbackError {
    /// CNI_NETNS was empty on ADD or CHECK.
    #[error("missing CNI_NETNS")]
    NoNetns,
    /// A netlink or netns operation failed.
    #[error(transparent)]
    Netlink(#[from] netlink::Error),
    /// `lo` is absent (cannot happen in a real netns; kept for a clear message).
    #[error("failed to find link {LO:?}")]
    NoLo,
    /// `lo` carries an address that is not a loopback one.
    #[error("loopback interface found with non-loopback address {0:?}")]
    NonLoopbackAddress(String),
    /// CHECK found `lo` down.
    #[error("loopback interface is down")]
    Down,
    /// The prevResult could not be parsed.
    #[error("failed to parse prevResult: {0}")]
    PrevResult(CniError),
}

impl From<LoopbackError> for CniError {
    fn from(e: LoopbackError) -> Self {
        let code = match e {
            LoopbackError::NoNetns => code::INVALID_ENVIRONMENT,
            LoopbackError::PrevResult(_) => code::DECODING_FAILURE,
            // The reference returns plain Go errors here, which the skel reports as 999.
            _ => code::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}

/// A socket inside the netns at `path`, and `lo` as it is now.
fn open_lo(path: &Path) -> Result<(Netlink, netlink::Link), LoopbackError> {
    let ns = Netns::open(path)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let lo = nl.link_by_name(LO)?.ok_or(LoopbackError::NoLo)?;
    Ok((nl, lo))
}

/// Brings `lo` up and returns its first IPv4 and first IPv6 address, after checking that every
/// address on it is a loopback one. When that check fails, `lo` is left as it was found: taken
/// down again if this call brought it up, never taken down if it was already up (a repeated
/// ADD of a running pod).
fn bring_up(path: &Path) -> Result<Vec<IpNetwork>, LoopbackError> {
    let (mut nl, lo) = open_lo(path)?;
    nl.set_up(lo.index)?;
    let checked = loopback_addrs(&mut nl, lo.index);
    if checked.is_err()
        && !lo.up
        && let Err(e) = nl.set_down(lo.index)
    {
        log::warn!("taking lo down again after the failed ADD: {e}");
    }
    checked
}

/// The first IPv4 and first IPv6 address of `lo`; an error if any address is not a loopback one.
fn loopback_addrs(nl: &mut Netlink, idx: u32) -> Result<Vec<IpNetwork>, LoopbackError> {
    let addrs = nl.addrs(Some(idx))?;
    let mut first = Vec::new();
    for want_v4 in [true, false] {
        let family: Vec<IpNetwork> = addrs
            .iter()
            .map(|a| a.address)
            .filter(|a| a.is_ipv4() == want_v4)
            .collect();
        if let Some(bad) = family.iter().find(|a| !a.ip().is_loopback()) {
            return Err(LoopbackError::NonLoopbackAddress(bad.ip().to_string()));
        }
        first.extend(family.first().copied());
    }
    Ok(first)
}

/// The result the reference prints when there is no prevResult.
fn lo_result(netns: &Path, addrs: Vec<IpNetwork>) -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: Some(LO_MAC.into()),
            sandbox: Some(netns.to_string_lossy().into_owned()),
            ..Default::default()
        }],
        ips: addrs
            .into_iter()
            .map(|address| IpConfig {
                interface: Some(0),
                address,
                gateway: None,
            })
            .collect(),
        ..Default::default()
    }
}

/// The plugin (stateless).
#[derive(Debug, Default, Clone, Copy)]
pub struct Loopback;

impl Loopback {
    fn add(&self, args: &CmdArgs) -> Result<AddOutput, LoopbackError> {
        let netns = args.netns.as_deref().ok_or(LoopbackError::NoNetns)?;
        // Parse prevResult before touching the netns, as the reference does.
        let prev = match &args.conf.prev_result {
            Some(v) => Some(
                CniResult::from_json(v, &args.version.as_str())
                    .map_err(LoopbackError::PrevResult)?,
            ),
            None => None,
        };
        let addrs = bring_up(netns)?;
        Ok(AddOutput::Result(
            prev.unwrap_or_else(|| lo_result(netns, addrs)),
        ))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), LoopbackError> {
        let Some(netns) = args.netns.as_deref() else {
            return Ok(());
        };
        match open_lo(netns) {
            Ok((mut nl, lo)) => Ok(nl.set_down(lo.index)?),
            // The netns is already gone (repeated DEL, runtime cleaned up): nothing to undo.
            Err(LoopbackError::Netlink(e)) if e.is_not_found() && !netns.exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<(), LoopbackError> {
        let netns = args.netns.as_deref().ok_or(LoopbackError::NoNetns)?;
        let (_, lo) = open_lo(netns)?;
        if !lo.up {
            return Err(LoopbackError::Down);
        }
        Ok(())
    }
}

impl Plugin for Loopback {
    const NAME: &'static str = "loopback";

    fn add(&self, args: &CmdArgs) -> Result<AddOutput, CniError> {
        Ok(Loopback::add(self, args)?)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(Loopback::del(self, args)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        Ok(Loopback::check(self, args)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_shape_without_prev() {
        let r = lo_result(
            Path::new("/run/netns/x"),
            vec![
                "127.0.0.1/8".parse().expect("v4"),
                "::1/128".parse().expect("v6"),
            ],
        );
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.interfaces[0].name, "lo");
        assert_eq!(r.interfaces[0].mac.as_deref(), Some(LO_MAC));
        assert_eq!(r.interfaces[0].sandbox.as_deref(), Some("/run/netns/x"));
        assert_eq!(r.ips.len(), 2);
        assert!(
            r.ips
                .iter()
                .all(|ip| ip.interface == Some(0) && ip.gateway.is_none())
        );
    }

    #[test]
    fn error_codes_and_messages() {
        let e = CniError::from(LoopbackError::NonLoopbackAddress("10.0.0.1".into()));
        assert_eq!(e.code, code::INTERNAL);
        assert_eq!(
            e.msg,
            "loopback interface found with non-loopback address \"10.0.0.1\""
        );
        assert_eq!(
            CniError::from(LoopbackError::Down).msg,
            "loopback interface is down"
        );
    }
}
