//! A result (or prevResult) of any spec version: parsed, rendered in every version, parsed
//! again. Rendering never fails for a parsed result; what we render parses back and renders
//! the same (libcni must read what we print); 1.1.0 (the canonical shape) loses nothing;
//! converting through an intermediate version gives what converting directly gives (libcni
//! converts step by step).
#![no_main]

use cni::CniResult;
use cni::version::SUPPORTED;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    // The config's version, used when the result has none (prevResult).
    let fallback = SUPPORTED[usize::from(pick) % SUPPORTED.len()];
    let Ok(parsed) = CniResult::from_json(&v, fallback) else {
        return;
    };
    let mut rendered = Vec::new();
    for version in SUPPORTED {
        if (version.starts_with("0.1.") || version.starts_with("0.2.")) && parsed.ips.is_empty() {
            // libcni's convertTo02x refuses as well: the legacy layout needs an address.
            let e = parsed
                .to_json(version)
                .expect_err("legacy result without an address");
            assert_eq!(e.msg, "cannot convert: no valid IP addresses");
            continue;
        }
        let out = parsed
            .to_json(version)
            .unwrap_or_else(|e| panic!("render {version}: {e:?}"));
        assert_eq!(out["cniVersion"], *version, "{out}");
        let text = cni::skel::to_go_json(&out);
        let back: serde_json::Value = serde_json::from_str(&text).expect("printed JSON parses");
        assert_eq!(back, out, "printing loses nothing");
        let again = CniResult::from_json(&out, "")
            .unwrap_or_else(|e| panic!("our {version} result does not parse: {e:?}\n{out}"));
        let out2 = again.to_json(version).expect("render again");
        assert_eq!(out, out2, "{version}: not stable through a parse");
        if *version == "1.1.0" {
            assert_eq!(again, parsed, "1.1.0 loses nothing\n{out}");
        }
        rendered.push((*version, again));
    }
    // Down-conversion through any newer version equals the direct one.
    for (from, via) in &rendered {
        let newer = SUPPORTED.iter().position(|v| v == from).unwrap_or_default();
        for to in &SUPPORTED[..newer] {
            let (Ok(direct), Ok(stepped)) = (parsed.to_json(to), via.to_json(to)) else {
                continue;
            };
            assert_eq!(direct, stepped, "{to} directly vs via {from}");
        }
    }
});
