//! The `CNI_*` environment table and its validators (Go `skel.getCmdArgsFromEnv`,
//! `pkg/utils/utils.go`).

use super::Command;
use crate::error::{CniError, code};

/// Checks a variable's value.
pub(crate) type Validator = fn(&str) -> Result<(), CniError>;

/// One environment variable the dispatcher reads.
pub(crate) struct EnvVar {
    /// Variable name.
    pub name: &'static str,
    /// Commands for which the variable must be non-empty.
    pub required_for: &'static [Command],
    /// Checked when the variable is required and present (Go checks in table order and
    /// returns the first failure before reporting missing variables).
    pub validate: Option<Validator>,
}

use Command::{Add, Check, Del, Gc, Status, Version};

/// The table, in Go's order (which is also the order of the "missing" list).
/// `CNI_COMMAND` is required whatever its value.
pub(crate) const ENV_TABLE: &[EnvVar] = &[
    EnvVar {
        name: "CNI_COMMAND",
        required_for: &[Add, Check, Del, Gc, Status, Version],
        validate: None,
    },
    EnvVar {
        name: "CNI_CONTAINERID",
        required_for: &[Add, Check, Del],
        validate: Some(validate_container_id),
    },
    EnvVar {
        name: "CNI_NETNS",
        required_for: &[Add, Check],
        validate: None,
    },
    EnvVar {
        name: "CNI_IFNAME",
        required_for: &[Add, Check, Del],
        validate: Some(validate_interface_name),
    },
    EnvVar {
        name: "CNI_ARGS",
        required_for: &[],
        validate: None,
    },
    EnvVar {
        name: "CNI_PATH",
        required_for: &[Add, Check, Del, Gc, Status],
        validate: None,
    },
    EnvVar {
        name: "CNI_NETNS_OVERRIDE",
        required_for: &[],
        validate: None,
    },
];

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the spec's rule for container IDs and network names.
pub fn is_valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The longest container ID: NAME_MAX, the longest file name. Plugins keep per-container
/// state in files named after the ID (flannel's `<dataDir>/<containerID>`, as the reference),
/// so a longer one could never be saved or cleaned up.
pub const MAX_CONTAINER_ID_LENGTH: usize = 255;

/// Go `utils.ValidateContainerID`: code 3 when empty, code 4 (details = the ID) when invalid.
/// Also code 4 when the ID cannot be a file name: the spec's characters already rule out
/// `/`, `.` and `..`, which leaves the length (the Go library has no limit; its flannel then
/// fails to save with an I/O error).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !is_valid_name(id) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid characters in containerID",
        )
        .with_details(id));
    }
    if id.len() > MAX_CONTAINER_ID_LENGTH {
        return Err(
            CniError::new(code::INVALID_ENVIRONMENT, "containerID is too long").with_details(
                format!(
                    "CNI_CONTAINERID must be at most {MAX_CONTAINER_ID_LENGTH} bytes (it names files), got {}",
                    id.len()
                ),
            ),
        );
    }
    Ok(())
}

/// Go `utils.ValidateNetworkName`: code 7.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "missing network name",
        ));
    }
    if !is_valid_name(name) {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid characters found in network name",
        )
        .with_details(name));
    }
    Ok(())
}

/// The kernel's IFNAMSIZ - 1.
pub const MAX_INTERFACE_NAME_LENGTH: usize = 15;

/// Go `utils.ValidateInterfaceName`: all code 4.
pub fn validate_interface_name(name: &str) -> Result<(), CniError> {
    let err = |msg: &str| CniError::new(code::INVALID_ENVIRONMENT, msg);
    if name.is_empty() {
        return Err(err("interface name is empty"));
    }
    if name.len() > MAX_INTERFACE_NAME_LENGTH {
        return Err(err("interface name is too long").with_details(format!(
            "interface name should be less than {} characters",
            MAX_INTERFACE_NAME_LENGTH + 1
        )));
    }
    if name == "." || name == ".." {
        return Err(err("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "A1", "abc-DEF_1.2", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a b", "a/b", "a:b", "é", "a\n"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn container_id() {
        assert_eq!(validate_container_id("").unwrap_err().code, 3);
        let e = validate_container_id("bad id").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (4, "invalid characters in containerID", "bad id")
        );
        assert!(validate_container_id("Abc123").is_ok());
        // A file name at most: NAME_MAX bytes.
        assert!(validate_container_id(&"a".repeat(255)).is_ok());
        let e = validate_container_id(&"a".repeat(10_000)).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (
                4,
                "containerID is too long",
                "CNI_CONTAINERID must be at most 255 bytes (it names files), got 10000"
            )
        );
        assert_eq!(validate_container_id(&"a".repeat(256)).unwrap_err().code, 4);
    }

    #[test]
    fn ifname() {
        assert!(validate_interface_name("eth0").is_ok());
        assert!(validate_interface_name("a23456789012345").is_ok());
        let e = validate_interface_name("a234567890123456").unwrap_err();
        assert_eq!(e.msg, "interface name is too long");
        assert_eq!(
            e.details,
            "interface name should be less than 16 characters"
        );
        assert_eq!(
            validate_interface_name("..").unwrap_err().msg,
            "interface name is . or .."
        );
        for bad in ["a/b", "a:b", "a b", "a\tb", "a\u{a0}b"] {
            assert_eq!(
                validate_interface_name(bad).unwrap_err().msg,
                "interface name contains / or : or whitespace characters"
            );
        }
        assert_eq!(validate_interface_name("").unwrap_err().code, 4);
    }

    #[test]
    fn network_name() {
        assert_eq!(
            validate_network_name("").unwrap_err().msg,
            "missing network name"
        );
        let e = validate_network_name("a b").unwrap_err();
        assert_eq!((e.code, e.details.as_str()), (7, "a b"));
    }
}
