//! Stable names and comments that identify rules.
//!
//! * Instance hash (nftables comments and iptables comments alike), identical to the Go
//!   nftables backend: `sha512(network)[..16] + "-" + sha512(ifname + ":" + containerID)[..16]`.
//!   The first 16 hex chars (the network hash) let GC select one network's rules.
//! * Comment: `<instance hash>, net: <network>, if: <ifname>, id: <containerID>`, cut to
//!   [`COMMENT_MAX`] bytes; `"`, `\` and control characters are removed so the text can be
//!   quoted verbatim in an nft script or an iptables-restore line.
//! * Our iptables chain: `RCNI-` + 23 hex chars of `sha512(network \0 ifname \0 containerID)`
//!   (28 chars, the iptables limit).
//! * The Go reference's iptables chain: `CNI-` + 24 hex chars of `sha512(network + containerID)`.

use crate::Attachment;
use sha2::{Digest, Sha512};
use std::fmt::Write;

/// nftables' maximum comment length (bytes; what `nft` accepts and shows).
pub const COMMENT_MAX: usize = 128;
/// iptables' maximum comment length (bytes; `XT_MAX_COMMENT_LEN` minus the NUL). A 64-hex
/// container ID fits whole with the usual network and interface names.
pub const IPTABLES_COMMENT_MAX: usize = 255;
/// Length of [`network_hash`].
pub const NETWORK_HASH_LEN: usize = 16;
/// Length of [`instance_hash`] (`16 + 1 + 16`).
pub const INSTANCE_HASH_LEN: usize = 2 * NETWORK_HASH_LEN + 1;
/// Prefix of our own iptables chains.
pub const CHAIN_PREFIX: &str = "RCNI-";
/// Prefix of the Go reference's masquerade chains.
pub const REFERENCE_CHAIN_PREFIX: &str = "CNI-";
/// Hex chars after `CNI-` in a reference chain name.
pub const REFERENCE_CHAIN_HEX: usize = 24;

/// Lower-case hex SHA-512 of `s` (128 chars).
pub fn sha512_hex(s: &str) -> String {
    let digest = Sha512::digest(s.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// First 16 hex chars of `sha512(network)`: prefix of every comment of that network.
pub fn network_hash(network: &str) -> String {
    sha512_hex(network)[..NETWORK_HASH_LEN].to_string()
}

/// `network_hash(net) + "-" + sha512(ifname ":" containerID)[..16]`: identifies one attachment.
pub fn instance_hash(att: &Attachment) -> String {
    let inst = sha512_hex(&format!("{}:{}", att.ifname, att.container_id));
    format!(
        "{}-{}",
        network_hash(&att.network),
        &inst[..NETWORK_HASH_LEN]
    )
}

/// nftables rule comment: the instance hash followed by readable identifiers, at most
/// [`COMMENT_MAX`] bytes.
pub fn comment(att: &Attachment) -> String {
    comment_within(att, COMMENT_MAX)
}

/// iptables rule comment: as [`comment`], at most [`IPTABLES_COMMENT_MAX`] bytes.
pub fn iptables_comment(att: &Attachment) -> String {
    comment_within(att, IPTABLES_COMMENT_MAX)
}

fn comment_within(att: &Attachment, max: usize) -> String {
    let mut c = format!(
        "{}, net: {}, if: {}, id: {}",
        instance_hash(att),
        sanitize(&att.network),
        sanitize(&att.ifname),
        sanitize(&att.container_id)
    );
    if c.len() > max {
        let mut end = max;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c
}

/// The instance hash a comment starts with, if it looks like one of ours.
pub fn hash_of_comment(comment: &str) -> Option<&str> {
    let h = comment.get(..INSTANCE_HASH_LEN)?;
    let ok = h.bytes().enumerate().all(|(i, b)| {
        if i == NETWORK_HASH_LEN {
            b == b'-'
        } else {
            b.is_ascii_hexdigit()
        }
    });
    ok.then_some(h)
}

/// Our per-attachment iptables chain name (28 chars).
pub fn iptables_chain(att: &Attachment) -> String {
    let h = sha512_hex(&format!(
        "{}\0{}\0{}",
        att.network, att.ifname, att.container_id
    ));
    format!("{CHAIN_PREFIX}{}", &h[..28 - CHAIN_PREFIX.len()])
}

/// The Go reference's chain for (network, containerID): `CNI-` + 24 hex chars (ifname ignored).
pub fn reference_chain(network: &str, container_id: &str) -> String {
    let h = sha512_hex(&format!("{network}{container_id}"));
    format!("{REFERENCE_CHAIN_PREFIX}{}", &h[..REFERENCE_CHAIN_HEX])
}

/// The Go reference portmap's per-container DNAT chain: `CNI-DN-` + 21 hex chars of
/// `sha512(network + containerID)` (28 chars; ifname ignored, as the reference does).
pub fn reference_dnat_chain(network: &str, container_id: &str) -> String {
    let prefix = format!("{REFERENCE_CHAIN_PREFIX}DN-");
    let h = sha512_hex(&format!("{network}{container_id}"));
    format!("{prefix}{}", &h[..28 - prefix.len()])
}

/// True for names shaped like a Go reference masquerade chain (`CNI-` + 24 lower hex).
pub fn is_reference_chain(name: &str) -> bool {
    name.strip_prefix(REFERENCE_CHAIN_PREFIX).is_some_and(|h| {
        h.len() == REFERENCE_CHAIN_HEX
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parse the Go reference comment `name: "<net>" id: "<containerID>"` (Go `%q`, plain names).
pub fn parse_reference_comment(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("name: \"")?;
    let (name, rest) = rest.split_once("\" id: \"")?;
    let id = rest.strip_suffix('"')?;
    Some((name, id))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(n: &str, c: &str, i: &str) -> Attachment {
        Attachment {
            network: n.into(),
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    #[test]
    fn reference_chain_matches_go() {
        // `printf '%s' mynetdummy | sha512sum | cut -c1-24`
        assert_eq!(
            reference_chain("mynet", "dummy"),
            "CNI-1b29d9511ed2bb3134d925d5"
        );
        assert_eq!(reference_chain("mynet", "dummy").len(), 28);
        assert!(is_reference_chain(&reference_chain("a", "b")));
        assert!(!is_reference_chain("CNI-HOSTPORT-DNAT"));
        assert!(!is_reference_chain("CNI-DN-0123456789abcdef01234"));
    }

    #[test]
    fn reference_dnat_chain_matches_go() {
        // The chain the Debian v1.1.1 portmap made for network "mynet", container "cid1".
        assert_eq!(
            reference_dnat_chain("mynet", "cid1"),
            "CNI-DN-a631aa8e1549a3b129110"
        );
        assert!(!is_reference_chain(&reference_dnat_chain("a", "b")));
    }

    #[test]
    fn sha512_known_vector() {
        assert_eq!(&sha512_hex("abc")[..32], "ddaf35a193617abacc417349ae204131");
    }

    #[test]
    fn instance_hash_shape_and_prefix() {
        let a = att("net1", "cid", "eth0");
        let h = instance_hash(&a);
        assert_eq!(h.len(), INSTANCE_HASH_LEN);
        assert!(h.starts_with(&network_hash("net1")));
        assert_eq!(hash_of_comment(&comment(&a)), Some(h.as_str()));
        assert_ne!(h, instance_hash(&att("net1", "cid", "eth1")));
        assert_ne!(h, instance_hash(&att("net2", "cid", "eth0")));
        assert_eq!(hash_of_comment("name: \"x\" id: \"y\""), None);
    }

    #[test]
    fn comment_is_sanitized_and_bounded() {
        let a = att("n\"et", &"é".repeat(100), "eth\n0");
        let c = comment(&a);
        assert!(c.len() <= COMMENT_MAX);
        assert!(c.contains("net: net, if: eth0, id: é"));
        assert!(!c.contains('"'));
    }

    #[test]
    fn iptables_comment_keeps_a_whole_container_id() {
        let cid = "0123456789abcdef".repeat(4);
        let a = att("cbr0", &cid, "eth0");
        assert!(iptables_comment(&a).ends_with(&format!("id: {cid}")));
        // The nftables comment (128 bytes) would not hold a long network name and the ID.
        let long = att(&"n".repeat(40), &cid, "eth0");
        assert!(!comment(&long).ends_with(&cid));
        assert!(iptables_comment(&long).ends_with(&cid));
        assert!(iptables_comment(&att(&"n".repeat(300), &cid, "eth0")).len() <= 255);
    }

    #[test]
    fn chains_are_28_chars_and_distinct() {
        let a = iptables_chain(&att("n", "c", "eth0"));
        let b = iptables_chain(&att("n", "c", "eth1"));
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("RCNI-"));
        assert_ne!(a, b);
    }

    #[test]
    fn parses_reference_comment() {
        assert_eq!(
            parse_reference_comment("name: \"mynet\" id: \"abc\""),
            Some(("mynet", "abc"))
        );
        assert_eq!(parse_reference_comment("dnat name: \"x\" id: \"y\""), None);
    }
}
