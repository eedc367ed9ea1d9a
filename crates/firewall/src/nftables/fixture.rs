//! Fixtures: what `nft -f` itself sent for a script (captured by `testdata/capture.py`), and
//! the comparison of a [`Batch`]'s messages with them.

use super::Batch;
use netlink::nfnetlink::NfMessage;

/// One captured message: type name, flags, family, attributes.
#[derive(Debug, PartialEq, Eq)]
struct Captured {
    kind: String,
    flags: u16,
    family: u8,
    attrs: String,
}

fn fixture(text: &str) -> Vec<Captured> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let field = |p: &str| {
                parts
                    .iter()
                    .find_map(|x| x.strip_prefix(p))
                    .expect("fixture field")
            };
            Captured {
                kind: parts[0].to_string(),
                flags: u16::from_str_radix(field("flags=0x"), 16).expect("flags"),
                family: field("family=").parse().expect("family"),
                attrs: field("attrs=").to_string(),
            }
        })
        .collect()
}

fn kind_name(k: u8) -> &'static str {
    match k {
        0 => "NEWTABLE",
        2 => "DELTABLE",
        3 => "NEWCHAIN",
        5 => "DELCHAIN",
        6 => "NEWRULE",
        8 => "DELRULE",
        9 => "NEWSET",
        12 => "NEWSETELEM",
        14 => "DELSETELEM",
        _ => "?",
    }
}

fn ours(m: &NfMessage) -> Captured {
    // The flags on the wire: NLM_F_REQUEST is added by the socket layer.
    Captured {
        kind: kind_name(m.kind).to_string(),
        flags: m.flags | 1,
        family: m.family,
        attrs: m.attrs.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Splits hex attributes into top-level TLVs, for a readable failure message.
fn tlvs(hex: &str) -> Vec<String> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
        .collect();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = (u16::from_ne_bytes([rest[0], rest[1]]) as usize).max(4);
        let take = ((len + 3) & !3).min(rest.len());
        out.push(rest[..take].iter().map(|b| format!("{b:02x}")).collect());
        rest = &rest[take..];
    }
    out
}

/// Asserts that `batch` sends what `nft` sent in `fixture_text`, message for message and
/// attribute for attribute.
pub(crate) fn assert_same(batch: &Batch, fixture_text: &str) {
    assert_same_but(batch, fixture_text, false);
}

/// [`assert_same`]; with `set_ids`, the set id that nft gives every set an element message
/// names (`NFTA_SET_ELEM_LIST_SET_ID`, even for a set the batch does not create; the kernel
/// finds the set by name first) is not expected from us when we send none.
pub(crate) fn assert_same_but(batch: &Batch, fixture_text: &str, set_ids: bool) {
    let mut expected = fixture(fixture_text);
    if set_ids {
        for (e, m) in expected.iter_mut().zip(batch.messages()) {
            if e.kind == "NEWSETELEM" && !tlvs(&ours(m).attrs).iter().any(|t| is_set_id(t)) {
                e.attrs = tlvs(&e.attrs)
                    .into_iter()
                    .filter(|t| !is_set_id(t))
                    .collect();
            }
        }
    }
    let got: Vec<Captured> = batch.messages().into_iter().map(ours).collect();
    assert_eq!(got.len(), expected.len(), "{:#?}", batch.descriptions());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            (&g.kind, g.flags, g.family),
            (&e.kind, e.flags, e.family),
            "message {i} ({})",
            batch.describe(i).unwrap_or_default()
        );
        assert_eq!(
            tlvs(&g.attrs),
            tlvs(&e.attrs),
            "message {i} ({}): attributes differ from nft's",
            batch.describe(i).unwrap_or_default()
        );
    }
}

/// An `NFTA_SET_ELEM_LIST_SET_ID` attribute (type 4, a u32), as hex.
fn is_set_id(tlv: &str) -> bool {
    tlv.len() == 16 && &tlv[..8] == "08000400"
}
