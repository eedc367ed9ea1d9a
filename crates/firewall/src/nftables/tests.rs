//! The encoder against `nft` itself: each fixture in `testdata/` is an nft script and the
//! messages `nft -f` sent for it (captured with `testdata/capture.py`); the same objects
//! built with this module must produce the same messages, attribute for attribute.

use super::matches::{self, Dir};
use super::*;
use ipnetwork::IpNetwork;
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

fn assert_same(batch: &Batch, fixture_text: &str) {
    let expected = fixture(fixture_text);
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

fn net(s: &str) -> IpNetwork {
    s.parse().expect("network")
}

fn nat_postrouting(t: &Table) -> Chain {
    Chain::base(
        t,
        "postrouting",
        BaseChain {
            kind: ChainType::Nat,
            hook: hook::POSTROUTING,
            priority: priority::SRCNAT,
            accept: Some(true),
        },
    )
}

/// `ip|ip6 saddr X ip daddr != subnet ip daddr != multicast masquerade`.
fn masq_rule(fam: Family, ip: &str, subnet: &str, multicast: &str) -> Vec<Expr> {
    let mut e = matches::addr(fam, Dir::Src, &net(ip), CmpOp::Eq);
    e.extend(matches::addr(fam, Dir::Dst, &net(subnet), CmpOp::Neq));
    e.extend(matches::addr(fam, Dir::Dst, &net(multicast), CmpOp::Neq));
    e.push(matches::masquerade());
    e
}

/// The masquerade layout of one family, as in the fixtures.
fn layout(b: &mut Batch, fam: Family, set: &str, ip: &str, subnet: &str, comment: &str) {
    let v6 = fam == Family::Ip6;
    let t = Table::new(fam, "rcni_masquerade");
    let key = if v6 {
        DataType::IPV6_ADDR
    } else {
        DataType::IPV4_ADDR
    };
    let post = nat_postrouting(&t);
    let m = Chain::regular(&t, "m-x");
    let multicast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
    let host = if v6 { "/128" } else { "/32" };
    b.add_table(&t)
        .add_set(&Set::new(&t, set, key, Some(DataType::VERDICT)))
        .add_chain(&post)
        .add_rule(&Rule::new(
            &post,
            matches::addr_lookup(fam, Dir::Src, v6, set, Some(Reg::VERDICT)),
            None,
        ))
        .add_chain(&m)
        .add_rule(&Rule::new(
            &m,
            masq_rule(fam, &format!("{ip}{host}"), subnet, multicast),
            Some(comment.into()),
        ))
        .add_elements(
            &SetRef::new(&t, set),
            &[Elem {
                key: match ip.parse::<std::net::IpAddr>().expect("ip") {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                },
                data: Some(Data::Verdict(Verdict::Jump("m-x".into()))),
            }],
        );
}

#[test]
fn masquerade_ip_layout_matches_nft() {
    let mut b = Batch::new();
    layout(
        &mut b,
        Family::Ip,
        "saddr4",
        "10.244.1.5",
        "10.244.1.0/24",
        "hello",
    );
    assert_same(&b, include_str!("testdata/masquerade_ip.txt"));
}

#[test]
fn masquerade_ip6_inet_and_spoofcheck_match_nft() {
    let mut b = Batch::new();
    layout(
        &mut b,
        Family::Ip6,
        "saddr6",
        "fd00:1::5",
        "fd00:1::/64",
        "hello6",
    );
    // inet: every IP match gets nft's `meta nfproto` guard.
    let t = Table::new(Family::Inet, "t");
    let post = nat_postrouting(&t);
    let mut e = matches::addr(Family::Inet, Dir::Src, &net("fd00::1/128"), CmpOp::Eq);
    e.extend(
        matches::addr(Family::Inet, Dir::Dst, &net("fd00::/63"), CmpOp::Neq)
            .into_iter()
            // nft checks nfproto once per rule.
            .skip(2),
    );
    e.push(matches::masquerade());
    b.add_table(&t)
        .add_set(&Set::new(
            &t,
            "saddr4",
            DataType::IPV4_ADDR,
            Some(DataType::VERDICT),
        ))
        .add_chain(&post)
        .add_rule(&Rule::new(
            &post,
            matches::addr_lookup(Family::Inet, Dir::Src, false, "saddr4", Some(Reg::VERDICT)),
            None,
        ))
        .add_rule(&Rule::new(&post, e, None));
    // The reference's spoof check layout (bridge family).
    let t = Table::new(Family::Bridge, "nat");
    let pre = Chain::base(
        &t,
        "PREROUTING",
        BaseChain {
            kind: ChainType::Filter,
            hook: hook::PREROUTING,
            priority: -300,
            accept: Some(true),
        },
    );
    let iface = Chain::regular(&t, "cni-br-iface-c1-eth0");
    let mac = Chain::regular(&t, "cni-br-iface-c1-eth0-mac");
    let c = Some("macspoofchk-c1-eth0".to_string());
    let mut jump = matches::iifname("veth1");
    jump.push(matches::verdict(Verdict::Jump(iface.name.clone())));
    let mut ret = matches::ether_saddr([2, 0, 0, 0, 0, 1]);
    ret.push(matches::verdict(Verdict::Return));
    b.add_table(&t)
        .add_chain(&pre)
        .add_chain(&iface)
        .add_chain(&mac)
        .add_rule(&Rule::new(&pre, jump, c.clone()))
        .add_rule(&Rule::new(
            &iface,
            vec![matches::verdict(Verdict::Jump(mac.name.clone()))],
            c.clone(),
        ))
        .add_rule(&Rule::new(&mac, ret, c.clone()))
        .add_rule(&Rule::new(&mac, vec![matches::verdict(Verdict::Drop)], c));
    assert_same(
        &b,
        include_str!("testdata/masquerade_ip6_inet_spoofcheck.txt"),
    );
}

#[test]
fn general_expressions_and_deletions_match_nft() {
    let t = Table::new(Family::Ip, "t");
    let c = Chain::regular(&t, "c");
    let set = |name: &str, key, data| Set::new(&t, name, key, data);
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&Chain::regular(&t, "b2"))
        .add_set(&set("s1", DataType::IPV4_ADDR, None))
        .add_set(&set("m2", DataType::IPV4_ADDR, Some(DataType::IPV4_ADDR)))
        .add_set(&set("m3", DataType::INET_SERVICE, Some(DataType::VERDICT)))
        .add_set(&set("s4", DataType::MARK, None))
        .add_chain(&c)
        .add_chain(&Chain::base(
            &t,
            "b",
            BaseChain {
                kind: ChainType::Filter,
                hook: hook::PREROUTING,
                priority: priority::RAW,
                accept: Some(true),
            },
        ));
    // ip protocol tcp accept
    b.add_rule(&Rule::new(
        &c,
        vec![
            Expr::Payload(Payload::load(PayloadBase::Network, 9, 1, Reg::R1)),
            Expr::Cmp(Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: vec![6],
            }),
            matches::verdict(Verdict::Accept),
        ],
        None,
    ));
    // meta l4proto tcp tcp dport 80 dnat to 10.0.0.1:8080
    let mut dnat = matches::l4proto(6);
    dnat.extend(matches::transport_port(Dir::Dst, 80));
    dnat.push(Expr::Immediate(Immediate::value(
        Reg::R1,
        vec![10, 0, 0, 1],
    )));
    dnat.push(Expr::Immediate(Immediate::value(
        Reg::R2,
        8080u16.to_be_bytes().to_vec(),
    )));
    dnat.push(Expr::Nat(Nat {
        kind: NatType::Dnat,
        family: 2,
        addr_min: Some(Reg::R1),
        addr_max: None,
        proto_min: Some(Reg::R2),
        proto_max: None,
        flags: nat_flags::PROTO_SPECIFIED,
    }));
    b.add_rule(&Rule::new(&c, dnat, None));
    // inet: meta nfproto ipv4 accept
    let i = Table::new(Family::Inet, "i");
    let ic = Chain::regular(&i, "c");
    b.add_table(&i).add_chain(&ic).add_rule(&Rule::new(
        &ic,
        vec![
            Expr::Meta(Meta {
                key: MetaKey::NfProto,
                dreg: Some(Reg::R1),
                sreg: None,
            }),
            Expr::Cmp(Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: vec![2],
            }),
            matches::verdict(Verdict::Accept),
        ],
        None,
    ));
    // meta mark set 0x10 counter
    b.add_rule(&Rule::new(
        &c,
        vec![
            Expr::Immediate(Immediate::value(Reg::R1, 0x10u32.to_ne_bytes().to_vec())),
            Expr::Meta(Meta {
                key: MetaKey::Mark,
                dreg: None,
                sreg: Some(Reg::R1),
            }),
            Expr::Counter {
                bytes: 0,
                packets: 0,
            },
        ],
        None,
    ));
    // ct state established,related accept
    b.add_rule(&Rule::new(
        &c,
        vec![
            Expr::Ct(Ct {
                key: CtKey::State,
                dreg: Some(Reg::R1),
                sreg: None,
                direction: None,
            }),
            Expr::Bitwise(Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                len: 4,
                mask: 6u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            }),
            Expr::Cmp(Cmp {
                sreg: Reg::R1,
                op: CmpOp::Neq,
                data: vec![0; 4],
            }),
            matches::verdict(Verdict::Accept),
        ],
        None,
    ));
    // iifname "veth1" jump b2
    let mut j = matches::iifname("veth1");
    j.push(matches::verdict(Verdict::Jump("b2".into())));
    b.add_rule(&Rule::new(&c, j, None));
    let s1 = SetRef::new(&t, "s1");
    let e = [Elem {
        key: vec![10, 0, 0, 1],
        data: None,
    }];
    b.add_elements(&s1, &e)
        .delete_elements(&s1, &e)
        .flush_chain(&c)
        .delete_chain(&c)
        .delete_table(&t);
    assert_same(&b, include_str!("testdata/expressions.txt"));

    let mut d = Batch::new();
    let pre = Chain::regular(&Table::new(Family::Bridge, "nat"), "PREROUTING");
    d.delete_rule(&pre, 4);
    assert_same(&d, include_str!("testdata/delete_rule.txt"));
}

#[test]
fn expressions_decode_to_what_was_encoded() {
    let t = Table::new(Family::Ip, "t");
    let c = Chain::regular(&t, "c");
    let mut exprs = masq_rule(Family::Ip, "10.0.0.5/32", "10.0.0.0/12", "224.0.0.0/4");
    exprs.push(Expr::Counter {
        bytes: 7,
        packets: 1,
    });
    exprs.push(Expr::Redir(Redir {
        proto_min: Some(Reg::R1),
        proto_max: None,
        flags: 0,
    }));
    exprs.push(matches::verdict(Verdict::Goto("x".into())));
    exprs.push(Expr::Lookup(Lookup {
        set: "s".into(),
        set_id: None,
        sreg: Reg::R1,
        dreg: None,
        invert: true,
    }));
    let rule = Rule::new(&c, exprs, Some("a comment".into()));
    let mut b = Batch::new();
    b.add_rule(&rule);
    let m = b.messages()[0].clone();
    let reply = netlink::nfnetlink::NfReply {
        subsys: m.subsys,
        kind: m.kind,
        family: m.family,
        attrs: m.attrs,
    };
    let back = Rule::parse(&reply).expect("decodes");
    assert_eq!(back, rule);
    // Display is the `nft --debug=netlink` notation.
    assert_eq!(
        back.exprs[0].to_string(),
        "[ payload load 4b @ network header + 12 => reg 1 ]"
    );
    assert_eq!(back.exprs[1].to_string(), "[ cmp Eq reg 1 0x0a000005 ]");
}

#[test]
fn unknown_expressions_survive_a_round_trip() {
    let other = Expr::Other {
        name: "log".into(),
        data: vec![8, 0, 1, 0, 0, 0, 0, 5],
    };
    let mut w = super::attr::Writer::new();
    other.write(&mut w);
    let bytes = w.finish();
    let (_, elem) = super::attr::iter(&bytes).next().expect("elem");
    assert_eq!(Expr::parse(elem), other);
}

#[test]
fn refused_messages_say_what_and_why() {
    let e = crate::Error::Refused(vec![crate::Refused {
        index: Some(1),
        what: "add chain ip t a { type Nat hook 4 priority 100; }".into(),
        errno: libc::E2BIG,
        detail: None,
    }]);
    let s = e.to_string();
    assert!(s.contains("Argument list too long"), "{s}");
    assert!(s.contains("at most 1024 base chains per hook"), "{s}");
    let e = crate::error::meaning(libc::EEXIST, "add element ip t m { 10.0.0.1 : jump x }");
    assert!(e.is_some_and(|m| m.contains("another value")));
    assert!(crate::error::meaning(libc::EPERM, "x").is_some_and(|m| m.contains("CAP_NET_ADMIN")));
}
