//! The node as the kernel shows it, read once in the namespace the doctor runs in: links,
//! addresses and routes over rtnetlink, and the firewall tools found on `PATH`.

use std::path::PathBuf;

use firewall::{Output, Runner, SystemRunner};
use netlink::{Addr, Family, Link, Netlink, RouteEntry};

/// The main routing table (RT_TABLE_MAIN).
const TABLE_MAIN: u32 = 254;

/// Links, addresses and routes of this netns.
#[derive(Debug, Clone, Default)]
pub struct Kernel {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<RouteEntry>,
}

impl Kernel {
    /// Dumps this netns over one rtnetlink socket.
    pub fn read() -> Result<Kernel, String> {
        let read = || -> netlink::Result<Kernel> {
            let mut nl = Netlink::new()?;
            Ok(Kernel {
                links: nl.links()?,
                addrs: nl.addrs(None)?,
                routes: nl.routes(Family::All)?,
            })
        };
        read().map_err(|e| format!("cannot read links, addresses and routes over netlink: {e}"))
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The pods' host veths on `bridge`, read again now (not from the snapshot); `None` when
    /// netlink cannot be read.
    pub fn veth_ports_now(bridge: &str) -> Option<usize> {
        let mut nl = Netlink::new().ok()?;
        let br = nl.link_by_name(bridge).ok()??;
        let links = nl.links().ok()?;
        Some(
            links
                .iter()
                .filter(|l| l.master == Some(br.index) && l.kind.as_deref() == Some("veth"))
                .count(),
        )
    }

    /// The links enslaved to `bridge`.
    pub fn ports(&self, bridge: &Link) -> Vec<&Link> {
        self.links
            .iter()
            .filter(|l| l.master == Some(bridge.index))
            .collect()
    }

    /// The addresses of link `index`.
    pub fn addrs_of(&self, index: u32) -> Vec<&Addr> {
        self.addrs.iter().filter(|a| a.index == index).collect()
    }

    /// Routes of the main table.
    pub fn main_routes(&self) -> impl Iterator<Item = &RouteEntry> {
        self.routes
            .iter()
            .filter(|r| r.table.unwrap_or(TABLE_MAIN) == TABLE_MAIN)
    }
}

/// Runs firewall tools found on `PATH` only. The plugins also look in `/usr/sbin` and
/// `/sbin`, because runtimes give them a minimal `PATH`; the doctor runs in an operator's
/// shell, where `PATH` is the truth about what is installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathRunner;

impl PathRunner {
    fn find(tool: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }
}

impl Runner for PathRunner {
    fn has(&self, tool: &str) -> bool {
        Self::find(tool).is_some()
    }

    fn run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, firewall::Error> {
        let path = Self::find(tool).ok_or_else(|| firewall::Error::ToolNotFound {
            tool: tool.to_owned(),
        })?;
        // A path with a '/' is run as it is.
        SystemRunner::new().run(&path.to_string_lossy(), args, stdin)
    }

    fn proc_net(&self, name: &str) -> Option<String> {
        SystemRunner::new().proc_net(name)
    }
}
