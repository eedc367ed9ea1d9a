//! Sysctls under `/proc/sys`, in the calling thread's netns.
//!
//! `/proc/sys/net/*` resolves to the netns of the thread that opens the file, so for another
//! netns wrap the call in [`crate::netns::run_in`].

use std::path::PathBuf;

use crate::{Error, Result};

/// Keys are in slash form (`net/ipv4/ip_forward`), not dotted: interface names may contain dots
/// (`net/ipv6/conf/br0.100/accept_ra`).
fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.trim_start_matches('/'))
}

/// Writes `value` to `key`.
pub fn set(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key), value).map_err(|e| Error::io(format!("set sysctl {key}={value}"), e))
}

/// Reads `key`, without the trailing newline.
pub fn get(key: &str) -> Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim_end().to_string())
        .map_err(|e| Error::io(format!("read sysctl {key}"), e))
}

/// Writes `value` only if `key` holds something else. Writes are not free: writing
/// `net/ipv4/ip_forward` re-applies forwarding to every interface (`inet_forward_change`).
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if get(key)? == value {
        return Ok(());
    }
    set(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_slash_form() {
        assert_eq!(
            path("net/ipv6/conf/br0.100/accept_ra"),
            PathBuf::from("/proc/sys/net/ipv6/conf/br0.100/accept_ra")
        );
        assert_eq!(
            path("/net/ipv4/ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
