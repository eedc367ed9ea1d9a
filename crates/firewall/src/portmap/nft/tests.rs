//! The planned transactions: byte for byte what `nft` sends for the same layout
//! (`nftables/testdata/portmap_*.txt`), and how refusals change the next attempt.

use super::*;
use crate::Refused;
use crate::nftables::fixture::{assert_same, assert_same_but};
use crate::portmap::fixtures::{att, pm};
use crate::portmap::{Options, Protocol};

/// The fixture's request: dual stack, a wildcard and a host-IP mapping per family,
/// conditions in both.
fn fixture_opts() -> Options {
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    Options {
        conditions_v4: words("ip saddr != 192.0.2.0/24 iifname != \"veth*\""),
        conditions_v6: words("ip6 daddr != fc00::/7"),
        ..Options::default()
    }
}

fn fixture_mappings() -> Vec<PortMapping> {
    vec![
        pm(8080, 80, Protocol::Tcp, None),
        pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")),
        pm(5353, 53, Protocol::Udp, Some("::")),
        pm(9999, 99, Protocol::Sctp, Some("fd00:1::1")),
    ]
}

fn dual() -> Vec<IpNetwork> {
    vec![
        "10.244.1.5/24".parse().unwrap(),
        "fd00::5/64".parse().unwrap(),
    ]
}

fn key(m: &PortMapping) -> Key {
    Key::of(m)
}

fn none() -> BTreeMap<Family, Own> {
    BTreeMap::new()
}

fn refused(index: usize, errno: i32) -> Refused {
    Refused {
        index: Some(index),
        what: String::new(),
        errno,
        detail: None,
    }
}

#[test]
fn first_setup_on_a_node_matches_nft() {
    let a = att("cid1");
    let (ms, addrs, opts) = (fixture_mappings(), dual(), fixture_opts());
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &opts,
    };
    let retry = Retry {
        skeleton: true,
        ..Retry::default()
    };
    let p = plan_setup(&req, &none(), &retry).unwrap();
    assert_same(
        &p.batch,
        include_str!("../../nftables/testdata/portmap_setup.txt"),
    );
}

#[test]
fn a_new_attachment_on_a_set_up_node_deletes_nothing() {
    let a = att("cid1");
    let (ms, addrs, opts) = (fixture_mappings(), dual(), fixture_opts());
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &opts,
    };
    let p = plan_setup(&req, &none(), &Retry::default()).unwrap();
    let d = p.batch.descriptions();
    assert!(
        d.iter().all(|m| m.starts_with("add chain")
            || m.starts_with("add rule")
            || m.starts_with("add element")),
        "{d:#?}"
    );
    assert_eq!(d.iter().filter(|m| m.starts_with("add chain")).count(), 2);
    // The fixture's attachment part, without the skeleton.
    assert_eq!(d.iter().filter(|m| m.starts_with("add element")).count(), 5);
    assert_eq!(d.len(), 2 + 6 + 6 + 5);
}

#[test]
fn re_add_replaces_rules_and_releases_only_its_own_old_keys() {
    let a = att("c");
    let ms = vec![pm(8080, 80, Protocol::Tcp, None)];
    let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
    let opts = Options::default();
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &opts,
    };
    let old = key(&pm(9090, 90, Protocol::Udp, None));
    let kept = key(&ms[0]);
    let own = BTreeMap::from([
        (
            Family::Ip,
            Own {
                chain: true,
                keys: vec![old.clone(), kept.clone()],
            },
        ),
        // An earlier ADD mapped IPv6 too: that family's chain goes.
        (
            Family::Ip6,
            Own {
                chain: true,
                keys: vec![kept.clone()],
            },
        ),
    ]);
    let p = plan_setup(&req, &own, &Retry::default()).unwrap();
    let d = p.batch.descriptions();
    let ch = chain_name(&a);
    let want_prefix = [
        format!("add chain ip rcni_hostport {ch}"),
        format!("flush chain ip rcni_hostport {ch}"),
    ];
    assert_eq!(d[..2], want_prefix, "{d:#?}");
    assert!(
        d.contains(
            &format!("add element ip rcni_hostport hostports {{ 1100000023820000 : jump {ch} }}")
                .as_str()
        ),
        "{d:#?}"
    );
    // The old key: released conditionally (add as ours, then delete), never blindly.
    let release = d
        .iter()
        .position(|m| m.starts_with("delete element ip rcni_hostport"))
        .expect("release");
    assert!(d[release - 1].starts_with("add element ip rcni_hostport hostports { 11000000"));
    assert_eq!(p.roles[release - 1], Role::IfOurs(Family::Ip, old.clone()));
    assert!(
        !d.iter()
            .any(|m| m.starts_with("delete element ip rcni_hostport hostports { 06"))
    );
    // IPv6: elements released, chain flushed and deleted.
    assert_eq!(
        d[d.len() - 2..],
        [
            format!("flush chain ip6 rcni_hostport {ch}"),
            format!("delete chain ip6 rcni_hostport {ch}")
        ]
    );
    // A key found not ours any more is left alone on the next attempt.
    let retry = Retry {
        not_ours: HashSet::from([(Family::Ip, old)]),
        ..Retry::default()
    };
    let p = plan_setup(&req, &own, &retry).unwrap();
    assert!(
        !p.batch
            .descriptions()
            .iter()
            .any(|m| m.starts_with("delete element ip rcni_hostport")),
        "{:#?}",
        p.batch.descriptions()
    );
}

#[test]
fn refusals_are_learned_from() {
    let a = att("c");
    let ms = vec![pm(8080, 80, Protocol::Tcp, None)];
    let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
    let opts = Options::default();
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &opts,
    };
    let k = key(&ms[0]);
    let p = plan_setup(&req, &none(), &Retry::default()).unwrap();
    let claim = p
        .roles
        .iter()
        .position(|r| *r == Role::Claim(Family::Ip, k.clone()))
        .unwrap();
    // Another attachment holds the host port: take it over (delete, then add ours).
    let mut retry = Retry::default();
    assert!(retry.learn(&p, &Error::Refused(vec![refused(claim, libc::EEXIST)])));
    assert!(retry.take_over.contains(&(Family::Ip, k.clone())));
    let p2 = plan_setup(&req, &none(), &retry).unwrap();
    let d = p2.batch.descriptions();
    let del = d
        .iter()
        .position(|m| m.starts_with("delete element"))
        .unwrap();
    assert!(d[del + 1].starts_with("add element"), "{d:#?}");
    // Still refused after the take-over: a real error.
    let claim2 = p2
        .roles
        .iter()
        .position(|r| *r == Role::Claim(Family::Ip, k.clone()))
        .unwrap();
    assert!(
        !retry
            .clone()
            .learn(&p2, &Error::Refused(vec![refused(claim2, libc::EBUSY)]))
    );
    // The element left meanwhile: no take-over next time.
    assert!(retry.learn(&p2, &Error::Refused(vec![refused(del, libc::ENOENT)])));
    assert!(retry.take_over.is_empty());
    // Everything missing (first use): ENOENT everywhere adds the skeleton, once.
    let mut retry = Retry::default();
    let all: Vec<Refused> = (0..p.batch.len())
        .map(|i| refused(i, libc::ENOENT))
        .collect();
    assert!(retry.learn(&p, &Error::Refused(all.clone())));
    assert!(retry.skeleton);
    let p3 = plan_setup(&req, &none(), &retry).unwrap();
    assert_eq!(p3.batch.descriptions()[0], "add table ip rcni_hostport");
    assert!(!retry.learn(&p3, &Error::Refused(all)));
    // Anything else is reported.
    let mut retry = Retry::default();
    assert!(!retry.learn(&p, &Error::Refused(vec![refused(0, libc::EPERM)])));
    assert!(!retry.learn(&p, &Error::Check("x".into())));
}

#[test]
fn teardown_matches_nft() {
    let a = att("cid1");
    let (ms, addrs, opts) = (fixture_mappings(), dual(), fixture_opts());
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &opts,
    };
    let own: BTreeMap<Family, Own> = FAMILIES
        .into_iter()
        .map(|f| {
            let mut keys = wanted_keys(&req, f);
            // Element dumps list the hostports map first.
            keys.sort_by_key(|k| k.map != HOSTPORTS);
            (f, Own { chain: true, keys })
        })
        .collect();
    let reference = vec![Rule {
        handle: Some(2),
        ..Rule::new(
            &Chain::regular(&Table::new(Family::Ip6, REFERENCE_TABLE), "hostports"),
            vec![],
            Some("cid1".into()),
        )
    }];
    let ipt = vec![IptablesNft {
        family: Family::Ip,
        chain: reference_dnat_chain("mynet", "cid1"),
        jumps: vec![5],
    }];
    let p = plan_teardown(&chain_name(&a), &own, &reference, &ipt, &Retry::default());
    assert_same_but(
        &p.batch,
        include_str!("../../nftables/testdata/portmap_teardown.txt"),
        true,
    );
}

#[test]
fn keys_and_chain_names() {
    let k = key(&pm(8443, 443, Protocol::Tcp, Some("192.168.1.5")));
    assert_eq!(k.map, HOSTIP_HOSTPORTS);
    assert_eq!(k.describe(), "192.168.1.5 . tcp . 8443");
    let k = key(&pm(9999, 99, Protocol::Sctp, Some("fd00:1::1")));
    assert_eq!(k.describe(), "fd00:1::1 . sctp . 9999");
    // `0.0.0.0` / `::` mean any address: the wildcard map.
    let k = key(&pm(53, 53, Protocol::Udp, Some("::")));
    assert_eq!((k.map, k.describe()), (HOSTPORTS, "udp . 53".to_string()));
    let c = chain_name(&att("x"));
    assert!(is_attachment_chain(&c, None));
    assert!(is_attachment_chain(&c, Some(&network_hash("mynet"))));
    assert!(!is_attachment_chain(&c, Some(&network_hash("other"))));
    assert!(!is_attachment_chain("prerouting", None));
    assert!(!is_attachment_chain("a-short", None));
    assert_eq!(
        parse_comment(&comment(&att("x"))),
        Some(("mynet".into(), "eth0".into(), "x".into()))
    );
}

#[test]
fn options_shape_the_rules() {
    let a = att("c");
    let ms = vec![pm(80, 8080, Protocol::Tcp, None)];
    let addrs: Vec<IpNetwork> = vec!["10.0.0.2/24".parse().unwrap()];
    let all = Options {
        masq_all: true,
        mark: MarkMasq::Bit(0),
        ..Options::default()
    };
    let req = Request {
        att: &a,
        addrs: &addrs,
        mappings: &ms,
        opts: &all,
    };
    let rules = attachment_rules(Family::Ip, &req, addrs[0]).unwrap();
    // masqAll: one mark rule without a source, then the DNAT.
    assert_eq!(rules.len(), 2);
    let jump = matches::verdict(Verdict::Jump("setmark-bit0".into()));
    assert_eq!(rules[0].exprs.last(), Some(&jump));
    assert_eq!(rules[0].exprs.len(), 5);
    let retry = Retry {
        skeleton: true,
        ..Retry::default()
    };
    let d = plan_setup(&req, &none(), &retry)
        .unwrap()
        .batch
        .descriptions()
        .join("\n");
    assert!(
        d.contains("add chain ip rcni_hostport masquerade-bit0 { type Nat hook 4"),
        "{d}"
    );
    assert!(d.contains("add chain ip rcni_hostport setmark-bit0"), "{d}");
    // snat off: no mark rules, no mark chains.
    let off = Options {
        snat: false,
        ..Options::default()
    };
    let req = Request { opts: &off, ..req };
    assert_eq!(
        attachment_rules(Family::Ip, &req, addrs[0]).unwrap().len(),
        1
    );
    let d = plan_setup(&req, &none(), &retry)
        .unwrap()
        .batch
        .descriptions()
        .join("\n");
    assert!(!d.contains("setmark") && !d.contains("masquerade"), "{d}");
    // An external mark chain is the iptables backend's: nothing marks here.
    let ext = Options {
        mark: MarkMasq::External("KUBE-MARK-MASQ".into()),
        ..Options::default()
    };
    let req = Request { opts: &ext, ..req };
    assert_eq!(
        attachment_rules(Family::Ip, &req, addrs[0]).unwrap().len(),
        1
    );
    // Conditions the backend cannot express fail the setup before anything is sent.
    let bad = Options {
        conditions_v4: vec!["tcp".into(), "dport".into(), "1".into()],
        ..Options::default()
    };
    let req = Request { opts: &bad, ..req };
    let e = plan_setup(&req, &none(), &Retry::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidCondition(_)), "{e}");
    // No address of a mapped family, nothing earlier: an empty transaction.
    let v6_only = vec![pm(1, 1, Protocol::Tcp, Some("fd00::1"))];
    let req = Request {
        mappings: &v6_only,
        opts: &all,
        ..req
    };
    assert!(
        plan_setup(&req, &none(), &Retry::default())
            .unwrap()
            .batch
            .is_empty()
    );
}
