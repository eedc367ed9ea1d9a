//! The crate's error type.

use std::fmt;

/// Everything that can go wrong while programming masquerade or spoof-check rules.
///
/// The bridge plugin maps these to CNI error codes (`UnknownBackend` and
/// `InvalidSpoofCheckId` are config errors, the rest are internal/I-O failures).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ipMasqBackend` holds a value we do not know (message as the Go plugin's).
    #[error("unknown ipmasq backend {0:?}")]
    UnknownBackend(String),

    /// The spoof-check attachment id (`<cid>-<ifname>`) holds characters that are not safe
    /// in an nft chain name.
    #[error(
        "macspoofchk: container ID and ifname {0:?} must only contain letters, digits, '_', '-' and '.'"
    )]
    InvalidSpoofCheckId(String),

    /// A port-mapping condition (`conditionsV4/V6`) the nftables backend cannot express.
    #[error("{0}")]
    InvalidCondition(String),

    /// The tool is neither on `PATH` nor in `/usr/sbin` or `/sbin`.
    #[error("{tool} not found in PATH, /usr/sbin or /sbin")]
    ToolNotFound {
        /// Binary name, e.g. `nft`.
        tool: String,
    },

    /// The tool exists but could not be started (or its pipes failed).
    #[error("failed to run {tool}: {source}")]
    Spawn {
        /// Binary name.
        tool: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The tool ran and exited with a failure status.
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Failed {
        /// Binary name.
        tool: String,
        /// Arguments, space-joined.
        args: String,
        /// Exit status as text (`exit status: 1`, `signal: 9`).
        status: String,
        /// Trimmed stderr of the tool (nft/iptables-restore name the failing line there).
        stderr: String,
    },

    /// The tool's output could not be understood.
    #[error("cannot parse output of {tool}: {reason}")]
    Parse {
        /// Binary name.
        tool: String,
        /// What was wrong.
        reason: String,
    },

    /// The kernel refused an nf_tables transaction; nothing of it was applied. One entry
    /// per refused message, with what it meant to do and why the kernel said no.
    #[error("nftables: {}", RefusedList(.0))]
    Refused(Vec<Refused>),

    /// Talking to nf_tables over netlink failed (opening the socket, a dump, a lost reply).
    #[error("nftables: {what}: {source}")]
    Netlink {
        /// What we were doing.
        what: String,
        /// The netlink error (keeps the errno).
        #[source]
        source: netlink::Error,
    },

    /// CHECK found an attachment's rules missing or different (the text says what).
    #[error("{0}")]
    Check(String),

    /// Several independent steps failed (e.g. both backends during `teardown_all`).
    #[error("{}", ErrorList(.0))]
    Multiple(Vec<Error>),
}

/// A message of an nf_tables transaction that the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its position in the batch (`None`: the batch as a whole).
    pub index: Option<usize>,
    /// What it meant to do, in `nft` words (`add chain ip t c`).
    pub what: String,
    /// Positive errno.
    pub errno: i32,
    /// The kernel's extended-ACK text, if any.
    pub detail: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            std::io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(m) = meaning(self.errno, &self.what) {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// What an errno means for an nf_tables message, in the words of the object it was about.
pub(crate) fn meaning(errno: i32, what: &str) -> Option<&'static str> {
    let base_chain = what.contains(" hook ");
    Some(match errno {
        libc::E2BIG if base_chain => {
            "the kernel allows at most 1024 base chains per hook in a network namespace"
        }
        libc::E2BIG => "too many objects for the kernel",
        libc::EEXIST if what.contains(" element ") => {
            "the key exists with another value (it belongs to someone else)"
        }
        libc::EEXIST => "it exists already",
        libc::ENOENT => {
            "a table, chain, set or element it refers to does not exist (or the kernel lacks the module for it)"
        }
        libc::EBUSY => {
            "it is still in use (a rule or map element jumps to the chain, or a rule uses the set)"
        }
        libc::EPERM | libc::EACCES => {
            "not permitted: CAP_NET_ADMIN in this network namespace is required"
        }
        libc::EOPNOTSUPP => {
            "not supported by this kernel (e.g. nat chains in inet tables need Linux 5.2)"
        }
        libc::EINVAL => "the kernel rejected an attribute (a feature this kernel lacks?)",
        libc::ENOSPC => "the set is full",
        libc::ENOMEM => "the kernel is out of memory",
        libc::ELOOP => "the jump would create a loop",
        libc::EMLINK => "too many nested jumps",
        _ => return None,
    })
}

struct RefusedList<'a>(&'a [Refused]);

impl fmt::Display for RefusedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

struct ErrorList<'a>(&'a [Error]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Error {
    /// A netlink failure while doing `what`.
    pub fn netlink(what: impl Into<String>, source: netlink::Error) -> Self {
        Error::Netlink {
            what: what.into(),
            source,
        }
    }

    /// The refused messages, when the kernel refused a transaction.
    pub fn refused(&self) -> &[Refused] {
        match self {
            Error::Refused(r) => r,
            _ => &[],
        }
    }

    /// True when this error only says that a binary is missing.
    pub fn is_tool_not_found(&self) -> bool {
        match self {
            Error::ToolNotFound { .. } => true,
            Error::Multiple(v) => !v.is_empty() && v.iter().all(Error::is_tool_not_found),
            _ => false,
        }
    }

    /// Turn a list of errors into a result: none → `Ok`, one → that error, more → `Multiple`.
    /// Nested `Multiple`s are flattened.
    pub fn collect(errors: Vec<Error>) -> Result<(), Error> {
        let mut flat = Vec::with_capacity(errors.len());
        for e in errors {
            match e {
                Error::Multiple(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(Error::Multiple(flat)),
        }
    }

    /// True when nf_tables cannot be reached at all (a kernel without nfnetlink or
    /// nf_tables): nothing of ours can exist there.
    pub fn is_nftables_unavailable(&self) -> bool {
        match self {
            Error::Netlink { source, .. } => matches!(
                source.errno(),
                Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::EOPNOTSUPP)
            ),
            _ => false,
        }
    }

    /// Drop the errors that only say a backend cannot exist here (`ToolNotFound`, no
    /// nf_tables), nested ones too; `None` when nothing else is left.
    pub(crate) fn without_absent_backends(self) -> Option<Error> {
        match self {
            Error::ToolNotFound { .. } => None,
            e if e.is_nftables_unavailable() => None,
            Error::Multiple(v) => {
                let rest: Vec<Error> = v
                    .into_iter()
                    .filter_map(Error::without_absent_backends)
                    .collect();
                Error::collect(rest).err()
            }
            other => Some(other),
        }
    }
}
