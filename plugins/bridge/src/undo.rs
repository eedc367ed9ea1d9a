//! The ADD rollback list: the Rust form of Go's `success := false` + `defer`.
//!
//! Each step that creates per-pod state records how to remove it *before* it can fail
//! half-way, and a failed ADD runs the list backwards: the list is a drop guard, so a panic
//! unwinding through ADD rolls back too. The reference relies on the runtime
//! calling DEL after a failed ADD (plugins#29), which leaves a veth and an IP behind when it
//! does not; we leave nothing.
//!
//! Shared state is deliberately never undone: the bridge, its gateway address, the VLAN
//! gateway interface and the forwarding sysctls. Another ADD running in parallel on the same
//! bridge may already rely on them (it saw the address present and did not add it), so
//! removing them would break a healthy pod to tidy up a failed one.

use cni::skel::CmdArgs;

use firewall::SpoofCheck;

use crate::error::Error;

/// One thing to remove on rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the host end of the veth (the container end goes with it).
    DeleteHostVeth(String),
    /// Release the addresses through the IPAM plugin (`DEL` with the same config).
    IpamDel(String),
    /// Remove the MAC spoof-check chains of this attachment id.
    MacspoofTeardown(String),
    /// Remove the masquerade rules of this attachment.
    MasqTeardown(firewall::Attachment),
}

/// The recorded actions of one ADD: a drop guard. Dropped without [`Undo::commit`] (the ADD
/// failed, or a panic is unwinding through it), it runs the actions newest first.
#[derive(Debug)]
pub struct Undo<'a> {
    args: &'a CmdArgs,
    actions: Vec<Action>,
    committed: bool,
}

impl<'a> Undo<'a> {
    /// An empty list for the ADD of `args`.
    pub fn new(args: &'a CmdArgs) -> Self {
        Undo {
            args,
            actions: Vec::new(),
            committed: false,
        }
    }

    /// Records an action.
    pub fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// The recorded actions, oldest first (for tests and logs).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The ADD succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Undo<'_> {
    /// Runs every action newest first. Failures are logged and do not stop the rollback:
    /// the caller returns the original error, which is what the runtime must see.
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if std::thread::panicking() {
            log::warn!("ADD panicked; rolling back {} step(s)", self.actions.len());
        }
        for action in self.actions.drain(..).rev() {
            log::debug!("rolling back: {action:?}");
            if let Err(e) = run(&action, self.args) {
                log::warn!("rollback step {action:?} failed: {e}");
            }
        }
    }
}

fn run(action: &Action, args: &CmdArgs) -> Result<(), String> {
    match action {
        Action::DeleteHostVeth(name) => {
            let mut nl = netlink::Netlink::new().map_err(|e| e.to_string())?;
            match nl.link_by_name(name).map_err(|e| e.to_string())? {
                Some(link) => match nl.delete_link(link.index) {
                    Err(e) if !e.is_not_found() => Err(e.to_string()),
                    _ => Ok(()),
                },
                None => Ok(()),
            }
        }
        Action::IpamDel(ipam_type) => {
            cni::delegate::del(ipam_type, &args.stdin, args).map_err(|e| e.to_string())
        }
        Action::MacspoofTeardown(id) => SpoofCheck::system()
            .teardown(id)
            .map_err(|e| Error::spoofcheck("teardown", e).to_string()),
        Action::MasqTeardown(att) => firewall::teardown_all(att).map_err(|e| e.to_string()),
    }
}
