//! Small helpers: MAC formatting/parsing and random veth names.

use std::io::Read;

use crate::{Error, Result};

/// Formats a MAC as lower-case `aa:bb:cc:dd:ee:ff` (the form CNI results use).
pub fn format_mac(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated, any case).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in out.iter_mut() {
        let part = parts
            .next()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| Error::InvalidMac(s.to_string()))?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| Error::InvalidMac(s.to_string()))?;
    }
    if parts.next().is_some() {
        return Err(Error::InvalidMac(s.to_string()));
    }
    Ok(out)
}

/// A random host-side veth name, `veth` + 8 hex digits, as the reference (`veth%08x`).
///
/// Randomness comes from `/dev/urandom`; if that cannot be read (no /dev in a minimal
/// chroot), falls back to std's randomly seeded hasher, which is good enough for a name the
/// caller retries on EEXIST.
pub fn random_veth_name() -> String {
    let mut bytes = [0u8; 4];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    let n = if from_urandom {
        u32::from_ne_bytes(bytes)
    } else {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish() as u32
    };
    format!("veth{n:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac = parse_mac("0A:1b:2c:3d:4e:5F").expect("parse");
        assert_eq!(mac, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(format_mac(mac), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a-1b-2c-3d-4e-5f").expect("dash"), mac);
    }

    #[test]
    fn mac_rejects_garbage() {
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "a:1b:2c:3d:4e:5f",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn veth_name_shape() {
        let a = random_veth_name();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, random_veth_name());
    }
}
