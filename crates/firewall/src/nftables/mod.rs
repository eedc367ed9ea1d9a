//! nf_tables spoken over netlink: a small typed encoder and decoder on top of
//! [`netlink::NfNetlink`] (the generic nfnetlink socket of the `netlink` crate).
//!
//! No `nft` process, no text to parse: changes are built as a [`Batch`] of typed objects
//! ([`Table`], [`Chain`], [`Rule`] made of [`Expr`]essions, [`Set`], [`Elem`]) and
//! committed as one nf_tables transaction, which the kernel applies whole or not at all;
//! reads are netlink dumps decoded by [`list`]. Every object is encoded attribute for
//! attribute as `nft` 1.0 (libnftnl) encodes the same rule, so `nft list ruleset` shows our
//! rules as if `nft` had made them (the unit tests compare with bytes `nft` sent).
//!
//! ```no_run
//! # use firewall::nftables::*;
//! # fn main() -> Result<(), firewall::Error> {
//! let mut nl = netlink::NfNetlink::new().map_err(|e| firewall::Error::netlink("open", e))?;
//! let t = Table::new(Family::Ip, "demo");
//! let post = Chain::base(&t, "post", BaseChain {
//!     kind: ChainType::Nat, hook: hook::POSTROUTING, priority: priority::SRCNAT, accept: Some(true),
//! });
//! let net: ipnetwork::IpNetwork = "10.1.0.0/16".parse().unwrap();
//! let mut exprs = matches::addr(Family::Ip, matches::Dir::Src, &net, CmpOp::Eq);
//! exprs.push(matches::masquerade());
//! let mut b = Batch::new();
//! b.add_table(&t).add_chain(&post).add_rule(&Rule::new(&post, exprs, Some("demo".into())));
//! b.commit(&mut nl)?; // Err(Error::Refused) says which message the kernel refused and why
//! # Ok(()) }
//! ```
//!
//! Kernel errors come back per message ([`crate::Error::Refused`]) with their meaning
//! (E2BIG: too many base chains on a hook; EEXIST: exists with other contents; ENOENT: a
//! referenced object is missing; EBUSY: still referenced; EPERM: needs CAP_NET_ADMIN;
//! EOPNOTSUPP: not in this kernel).
//!
//! Scope: what CNI plugins need — tables, base and regular chains, rules with payload,
//! meta, ct, cmp, bitwise, fib, lookup, immediate (verdicts and constants), nat, masq, redir
//! and counter expressions, sets and maps (verdict or value, keys of one type or
//! concatenations) and their elements. Anything else decodes as [`Expr::Other`] and is
//! written back unchanged.

mod attr;
mod batch;
mod expr;
pub mod list;
pub mod matches;
mod object;

pub use batch::Batch;
pub use expr::{
    Bitwise, Cmp, CmpOp, Ct, CtKey, Data, Expr, Fib, Immediate, Lookup, Masq, Meta, MetaKey, Nat,
    NatType, Payload, PayloadBase, Redir, Reg, Verdict, fib, nat_flags,
};
pub use object::{
    BaseChain, ByteOrder, Chain, ChainType, DataType, Elem, Family, Rule, Set, SetRef, Table,
    concat_key, hook, priority, set_flags,
};

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
