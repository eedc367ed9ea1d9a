//! The nf_tables encoder against a real kernel (root; each test in a private netns): what
//! we commit is what `nft list` shows, dumps decode what we wrote, and refused
//! transactions come back with the failing message and the errno's meaning.

#![allow(clippy::unwrap_used)]

mod common;

use common::{in_private_netns, sh};
use firewall::nftables::matches::{self, Dir};
use firewall::nftables::*;
use netlink::NfNetlink;

fn nl() -> NfNetlink {
    NfNetlink::new().unwrap()
}

fn net(s: &str) -> ipnetwork::IpNetwork {
    s.parse().unwrap()
}

fn nat_chain(t: &Table, name: &str) -> Chain {
    Chain::base(
        t,
        name,
        BaseChain {
            kind: ChainType::Nat,
            hook: hook::POSTROUTING,
            priority: priority::SRCNAT,
            accept: Some(true),
        },
    )
}

#[test]
fn committed_rules_list_like_nft_text_and_decode_back() {
    in_private_netns(|| {
        let t = Table::new(Family::Ip, "demo");
        let post = nat_chain(&t, "post");
        let per = Chain::regular(&t, "per");
        let mut rule = matches::addr(Family::Ip, Dir::Src, &net("10.1.0.5/32"), CmpOp::Eq);
        rule.extend(matches::addr(
            Family::Ip,
            Dir::Dst,
            &net("10.1.0.0/16"),
            CmpOp::Neq,
        ));
        rule.push(matches::masquerade());
        let mut b = Batch::new();
        b.add_table(&t)
            .add_set(&Set::new(
                &t,
                "m",
                DataType::IPV4_ADDR,
                Some(DataType::VERDICT),
            ))
            .add_chain(&post)
            .add_chain(&per)
            .add_rule(&Rule::new(
                &post,
                matches::addr_lookup(Family::Ip, Dir::Src, false, "m", Some(Reg::VERDICT)),
                None,
            ))
            .add_rule(&Rule::new(&per, rule.clone(), Some("c1".into())))
            .add_elements(
                &SetRef::new(&t, "m"),
                &[Elem {
                    key: vec![10, 1, 0, 5],
                    data: Some(Data::Verdict(Verdict::Jump("per".into()))),
                }],
            );
        let mut nl = nl();
        b.commit(&mut nl).unwrap();
        let listed = sh("nft", &["list", "table", "ip", "demo"]);
        for line in [
            "elements = { 10.1.0.5 : jump per }",
            "type nat hook postrouting priority srcnat; policy accept;",
            "ip saddr vmap @m",
            "ip saddr 10.1.0.5 ip daddr != 10.1.0.0/16 masquerade comment \"c1\"",
        ] {
            assert!(listed.contains(line), "{line:?} not in:\n{listed}");
        }
        let rules = list::rules(&mut nl, None, "demo", Some("per")).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].exprs, rule);
        assert_eq!(rules[0].comment.as_deref(), Some("c1"));
        assert!(rules[0].handle.is_some());
        let elems = list::elements(&mut nl, &SetRef::new(&t, "m")).unwrap();
        assert_eq!(
            elems,
            [Elem {
                key: vec![10, 1, 0, 5],
                data: Some(Data::Verdict(Verdict::Jump("per".into())))
            }]
        );
        let chains = list::chains(&mut nl, Some(Family::Ip), "demo").unwrap();
        let mut names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["per", "post"]);
        assert!(
            list::chain(&mut nl, Family::Ip, "demo", "nope")
                .unwrap()
                .is_none()
        );
        assert!(
            list::chain(&mut nl, Family::Ip, "nope", "post")
                .unwrap()
                .is_none()
        );
        assert!(
            list::rules(&mut nl, None, "nope", Some("x"))
                .unwrap()
                .is_empty()
        );
        assert!(
            list::elements(&mut nl, &SetRef::new(&t, "nope"))
                .unwrap()
                .is_empty()
        );
        let tables = list::tables(&mut nl).unwrap();
        assert_eq!(tables, [t]);
    });
}

#[test]
fn a_refused_batch_names_the_message_and_applies_nothing() {
    in_private_netns(|| {
        let t = Table::new(Family::Ip, "demo");
        let mut b = Batch::new();
        b.add_table(&t)
            .add_chain(&Chain::regular(&t, "a"))
            .delete_chain(&Chain::regular(&t, "missing"));
        let err = b.commit(&mut nl()).unwrap_err();
        let refused = err.refused();
        assert_eq!(refused.len(), 1, "{err}");
        assert_eq!(refused[0].index, Some(2));
        assert_eq!(refused[0].errno, libc::ENOENT);
        assert_eq!(refused[0].what, "delete chain ip demo missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
        // Atomic: the table of message 0 was not created.
        assert_eq!(sh("nft", &["list", "tables"]), "");
    });
}

#[test]
fn the_1025th_nat_base_chain_is_refused_with_e2big_and_its_meaning() {
    in_private_netns(|| {
        let t = Table::new(Family::Ip, "many");
        let mut nl = nl();
        let mut b = Batch::new();
        b.add_table(&t);
        for i in 0..1024 {
            b.add_chain(&nat_chain(&t, &format!("c{i}")));
        }
        b.commit(&mut nl).unwrap();
        let mut b = Batch::new();
        b.add_chain(&nat_chain(&t, "c1024"));
        let err = b.commit(&mut nl).unwrap_err();
        assert_eq!(err.refused()[0].errno, libc::E2BIG, "{err}");
        assert!(
            err.to_string()
                .contains("at most 1024 base chains per hook"),
            "{err}"
        );
    });
}

#[test]
fn an_element_owned_by_another_chain_is_not_deleted_by_add_then_delete() {
    in_private_netns(|| {
        let t = Table::new(Family::Ip, "demo");
        let set = SetRef::new(&t, "m");
        let elem = |c: &str| Elem {
            key: vec![10, 0, 0, 5],
            data: Some(Data::Verdict(Verdict::Jump(c.into()))),
        };
        let mut b = Batch::new();
        b.add_table(&t)
            .add_set(&Set::new(
                &t,
                "m",
                DataType::IPV4_ADDR,
                Some(DataType::VERDICT),
            ))
            .add_chain(&Chain::regular(&t, "a"))
            .add_chain(&Chain::regular(&t, "b"))
            .add_elements(&set, &[elem("b")]);
        let mut nl = nl();
        b.commit(&mut nl).unwrap();
        // "Delete 10.0.0.5 if it is a's": refused, b keeps it.
        let mut b = Batch::new();
        b.add_elements(&set, &[elem("a")])
            .delete_elements(&set, &[elem("a")]);
        let err = b.commit(&mut nl).unwrap_err();
        assert_eq!(err.refused()[0].index, Some(0), "{err}");
        assert!(
            matches!(err.refused()[0].errno, libc::EEXIST | libc::EBUSY),
            "{err}"
        );
        assert_eq!(list::elements(&mut nl, &set).unwrap(), [elem("b")]);
        // "Delete it if it is b's": done.
        let mut b = Batch::new();
        b.add_elements(&set, &[elem("b")])
            .delete_elements(&set, &[elem("b")]);
        b.commit(&mut nl).unwrap();
        assert!(list::elements(&mut nl, &set).unwrap().is_empty());
    });
}
