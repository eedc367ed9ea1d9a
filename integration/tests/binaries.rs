//! The release binaries a node installs: static (they must run whatever the node's
//! libc) and answering VERSION like the reference.

use rcni_integration::{Call, bin, run};
use serde_json::json;

const BINARIES: &[&str] = &[
    "host-local",
    "loopback",
    "bridge",
    "flannel",
    "portmap",
    "install-cni",
];

/// A statically linked ELF has no PT_INTERP program header (no dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([elf[o], elf[o + 1], elf[o + 2], elf[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b)
    };
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "expected a 64-bit ELF");
    let phoff = usize::try_from(u64_at(0x20)).expect("phoff");
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3 /* PT_INTERP */)
}

#[test]
fn release_binaries_are_static() {
    for name in BINARIES {
        let path = bin(name);
        let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !has_interpreter(&elf),
            "{name} is dynamically linked: build it with scripts/build.sh (+crt-static)"
        );
        // And `ldd` agrees.
        let out = run("ldd", &[path.to_str().unwrap_or_default()]);
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("statically linked") || text.contains("not a dynamic executable"),
            "ldd {name}: {text}"
        );
    }
}

#[test]
fn every_plugin_answers_version() {
    for name in ["host-local", "loopback", "bridge", "flannel", "portmap"] {
        let reply = Call::new(bin(name), "VERSION", json!({"cniVersion": "0.3.1"})).run();
        let v = reply.expect_ok();
        assert_eq!(v["cniVersion"], json!("1.1.0"), "{name}");
        assert_eq!(
            v["supportedVersions"],
            json!([
                "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
            ]),
            "{name}"
        );
    }
}
