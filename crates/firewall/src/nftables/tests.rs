//! The encoder against `nft` itself: each fixture in `testdata/` is an nft script and the
//! messages `nft -f` sent for it (captured with `testdata/capture.py`); the same objects
//! built with this module must produce the same messages, attribute for attribute.

use super::fixture::assert_same;
use super::matches::{self, Dir, Field};
use super::*;
use ipnetwork::IpNetwork;

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
                op: None,
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

#[test]
fn interface_names_and_concatenated_sets_match_nft() {
    let t = Table::new(Family::Ip, "t");
    let c = Chain::regular(&t, "c");
    let pair = DataType::concat(&[DataType::IPV4_ADDR, DataType::IPV4_ADDR]);
    assert_eq!((pair.id, pair.len), ((7 << 6) | 7, 8));
    let accept = |mut e: Vec<Expr>| {
        e.push(matches::verdict(Verdict::Accept));
        Rule::new(&c, e, None)
    };
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&c)
        .add_set(&Set::new(&t, "s2", pair, None))
        .add_rule(&accept(matches::ifname(Dir::Dst, "eth0", CmpOp::Eq)))
        .add_rule(&accept(matches::ifname(Dir::Dst, "br-*", CmpOp::Neq)));
    let mut e = matches::addr(Family::Ip, Dir::Dst, &net("10.1.2.3/32"), CmpOp::Eq);
    e.extend(matches::iifname("lo"));
    b.add_rule(&accept(e))
        .add_rule(&accept(matches::concat_lookup(
            Family::Ip,
            &[
                Field::Addr {
                    dir: Dir::Src,
                    v6: false,
                },
                Field::Addr {
                    dir: Dir::Dst,
                    v6: false,
                },
            ],
            "s2",
            None,
        )));
    b.add_elements(
        &SetRef::new(&t, "s2"),
        &[Elem {
            key: concat_key(&[&[10, 0, 0, 1], &[10, 0, 0, 2]]),
            data: None,
        }],
    );
    assert_same(&b, include_str!("testdata/matches.txt"));
}

#[test]
fn concatenations_are_laid_out_as_nft_does() {
    // Each part takes whole 32-bit registers; a part starting a 16-byte register is named
    // by it (reg 1, reg 2), others by their 32-bit number (reg 9 = NFT_REG32_01).
    let regs = |fam, fields: &[Field]| -> Vec<u32> {
        matches::concat_lookup(fam, fields, "m", Some(Reg::VERDICT))
            .iter()
            .filter_map(|e| match e {
                Expr::Payload(p) => p.dreg,
                Expr::Meta(m) => m.dreg,
                _ => None,
            })
            .map(|r| r.0)
            .collect()
    };
    let key = |v6| {
        [
            Field::Addr { dir: Dir::Dst, v6 },
            Field::L4Proto,
            Field::Port(Dir::Dst),
        ]
    };
    assert_eq!(regs(Family::Ip, &key(false)), [1, 9, 10]);
    assert_eq!(regs(Family::Ip6, &key(true)), [1, 2, 13]);
    assert_eq!(
        regs(Family::Ip, &[Field::L4Proto, Field::Port(Dir::Dst)]),
        [1, 9]
    );
    // In an inet table the address part brings nft's nfproto guard.
    let inet = matches::concat_lookup(Family::Inet, &key(true), "m", None);
    assert!(matches!(
        inet[0],
        Expr::Meta(Meta {
            key: MetaKey::NfProto,
            ..
        })
    ));
    assert_eq!(
        concat_key(&[&[192, 168, 1, 5], &[6], &8443u16.to_be_bytes()]),
        [192, 168, 1, 5, 6, 0, 0, 0, 0x20, 0xfb, 0, 0]
    );
    let t = DataType::concat(&[
        DataType::IPV6_ADDR,
        DataType::INET_PROTO,
        DataType::INET_SERVICE,
    ]);
    assert_eq!(
        (t.id, t.len, t.order),
        ((8 << 12) | (12 << 6) | 13, 24, ByteOrder::Mixed)
    );
}

#[test]
fn new_expressions_decode_to_what_was_encoded() {
    let t = Table::new(Family::Ip6, "t");
    let c = Chain::regular(&t, "c");
    let mut exprs = matches::fib_daddr_local();
    exprs.extend(matches::mark_set_or(0x2000));
    exprs.extend(matches::mark_all(0x4000));
    exprs.extend(matches::dnat("fd00::5".parse().expect("ip"), 80));
    let rule = Rule::new(&c, exprs, None);
    let mut b = Batch::new();
    b.add_rule(&rule);
    let m = b.messages()[0].clone();
    let reply = netlink::nfnetlink::NfReply {
        subsys: m.subsys,
        kind: m.kind,
        family: m.family,
        attrs: m.attrs,
    };
    assert_eq!(Rule::parse(&reply).expect("decodes"), rule);
    assert_eq!(rule.exprs[0].to_string(), "[ fib daddr type => reg 1 ]");
    // What the kernel answers for `op` or the nat registers and flags it fills in is the
    // same expression.
    let Expr::Bitwise(mut bw) = rule.exprs[3].clone() else {
        panic!("bitwise expected: {}", rule.exprs[3]);
    };
    let sent = bw.clone();
    bw.op = None;
    assert_eq!(bw, sent);
    bw.op = Some(1);
    assert_ne!(bw, sent);
    let Expr::Nat(mut nat) = rule.exprs[rule.exprs.len() - 1] else {
        panic!("nat expected");
    };
    let sent = nat;
    nat.addr_max = nat.addr_min;
    nat.proto_max = nat.proto_min;
    nat.flags |= nat_flags::MAP_IPS;
    assert_eq!(nat, sent);
    nat.proto_min = Some(Reg::R3);
    assert_ne!(nat, sent);
}
