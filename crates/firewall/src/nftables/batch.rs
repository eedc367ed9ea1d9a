//! A transaction: an ordered list of changes, sent as one nf_tables batch and applied by
//! the kernel all together or not at all.

use netlink::NfNetlink;
use netlink::nfnetlink::NfMessage;

use super::object::{self, Chain, Elem, NLM_F_CREATE, NLM_F_EXCL, Rule, Set, SetRef, Table, msg};
use crate::Error;
use crate::error::Refused;

struct Op {
    msg: NfMessage,
    what: String,
}

/// The changes of one transaction, in order. Each method appends one message; nothing
/// reaches the kernel before [`Batch::commit`].
///
/// `add_*` are idempotent (an existing object is left as it is), `create_*` fail with
/// EEXIST when the object exists; deleting something absent fails with ENOENT (and with
/// it the whole batch), so blind deletions are written as "add, then delete".
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
    /// Sets created by this batch, with the ids that rules and elements refer to them by.
    sets: Vec<(SetRef, u32)>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ops.iter().map(|o| &o.what))
            .finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// What message `i` does, in `nft` words (`add chain ip t c`).
    pub fn describe(&self, i: usize) -> Option<&str> {
        self.ops.get(i).map(|o| o.what.as_str())
    }

    /// Every message's description, in order.
    pub fn descriptions(&self) -> Vec<&str> {
        self.ops.iter().map(|o| o.what.as_str()).collect()
    }

    /// The messages, in order.
    pub fn messages(&self) -> Vec<&NfMessage> {
        self.ops.iter().map(|o| &o.msg).collect()
    }

    /// Bytes this batch takes on the wire (without BEGIN/END).
    pub fn wire_len(&self) -> usize {
        self.ops.iter().map(|o| 20 + o.msg.attrs.len()).sum()
    }

    fn push(&mut self, msg: NfMessage, what: String) -> &mut Self {
        self.ops.push(Op { msg, what });
        self
    }

    /// `add table` (no-op when it exists).
    pub fn add_table(&mut self, t: &Table) -> &mut Self {
        self.push(
            t.message(msg::NEWTABLE, 0),
            format!("add table {} {}", t.family, t.name),
        )
    }

    /// `create table` (EEXIST when it exists).
    pub fn create_table(&mut self, t: &Table) -> &mut Self {
        self.push(
            t.message(msg::NEWTABLE, NLM_F_EXCL),
            format!("create table {} {}", t.family, t.name),
        )
    }

    /// `delete table` (with everything in it).
    pub fn delete_table(&mut self, t: &Table) -> &mut Self {
        self.push(
            t.message(msg::DELTABLE, 0),
            format!("delete table {} {}", t.family, t.name),
        )
    }

    fn chain_what(verb: &str, c: &Chain) -> String {
        let mut s = format!("{verb} chain {} {} {}", c.family, c.table, c.name);
        if let (Some(b), "add" | "create") = (&c.base, verb) {
            s.push_str(&format!(
                " {{ type {:?} hook {} priority {}; }}",
                b.kind, b.hook, b.priority
            ));
        }
        s
    }

    /// `add chain` (no-op when it exists).
    pub fn add_chain(&mut self, c: &Chain) -> &mut Self {
        self.push(
            c.message(msg::NEWCHAIN, NLM_F_CREATE),
            Self::chain_what("add", c),
        )
    }

    /// `create chain` (EEXIST when it exists).
    pub fn create_chain(&mut self, c: &Chain) -> &mut Self {
        self.push(
            c.message(msg::NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL),
            Self::chain_what("create", c),
        )
    }

    /// `flush chain`: delete every rule of the chain.
    pub fn flush_chain(&mut self, c: &Chain) -> &mut Self {
        self.push(
            object::delete_rule_message(c.family, &c.table, &c.name, None),
            Self::chain_what("flush", c),
        )
    }

    /// `delete chain` (EBUSY while rules or map elements jump to it; flush it first to
    /// delete its own rules on every kernel).
    pub fn delete_chain(&mut self, c: &Chain) -> &mut Self {
        self.push(c.message(msg::DELCHAIN, 0), Self::chain_what("delete", c))
    }

    /// `add rule` (appended to its chain). A `lookup` of a set created earlier in this
    /// batch gets the set's batch id, as `nft` does.
    pub fn add_rule(&mut self, r: &Rule) -> &mut Self {
        let mut r = r.clone();
        for e in &mut r.exprs {
            if let super::Expr::Lookup(l) = e
                && l.set_id.is_none()
            {
                l.set_id = self.set_id(&SetRef {
                    family: r.family,
                    table: r.table.clone(),
                    name: l.set.clone(),
                });
            }
        }
        let mut what = format!("add rule {} {} {}", r.family, r.table, r.chain);
        if let Some(c) = &r.comment {
            what.push_str(&format!(" comment {c:?}"));
        }
        self.push(r.message(), what)
    }

    /// `delete rule ... handle N`.
    pub fn delete_rule(&mut self, c: &Chain, handle: u64) -> &mut Self {
        self.push(
            object::delete_rule_message(c.family, &c.table, &c.name, Some(handle)),
            format!(
                "delete rule {} {} {} handle {handle}",
                c.family, c.table, c.name
            ),
        )
    }

    /// `add set` / `add map` (no-op when it exists with the same type).
    pub fn add_set(&mut self, s: &Set) -> &mut Self {
        let set = SetRef {
            family: s.family,
            table: s.table.clone(),
            name: s.name.clone(),
        };
        let id = self.sets.len() as u32 + 1;
        self.sets.push((set, id));
        let kind = if s.data.is_some() { "map" } else { "set" };
        self.push(
            s.message(id),
            format!("add {kind} {} {} {}", s.family, s.table, s.name),
        )
    }

    /// The batch id of a set this batch creates.
    pub fn set_id(&self, set: &SetRef) -> Option<u32> {
        self.sets.iter().find(|(s, _)| s == set).map(|(_, id)| *id)
    }

    fn elems_what(verb: &str, set: &SetRef, elems: &[Elem]) -> String {
        let items: Vec<String> = elems
            .iter()
            .map(|e| {
                let key = render_key(&e.key);
                match &e.data {
                    Some(super::Data::Verdict(v)) => format!("{key} : {v}"),
                    Some(super::Data::Value(v)) => format!("{key} : {}", render_key(v)),
                    None => key,
                }
            })
            .collect();
        format!(
            "{verb} element {} {} {} {{ {} }}",
            set.family,
            set.table,
            set.name,
            items.join(", ")
        )
    }

    /// `add element` (no-op for an element that exists with the same value; EEXIST when it
    /// exists with another value).
    pub fn add_elements(&mut self, set: &SetRef, elems: &[Elem]) -> &mut Self {
        let id = self.set_id(set);
        self.push(
            object::elements_message(msg::NEWSETELEM, set, id, elems),
            Self::elems_what("add", set, elems),
        )
    }

    /// `delete element` (by key; any value is ignored).
    pub fn delete_elements(&mut self, set: &SetRef, elems: &[Elem]) -> &mut Self {
        self.push(
            object::elements_message(msg::DELSETELEM, set, None, elems),
            Self::elems_what("delete", set, elems),
        )
    }

    /// Sends the batch over `nl`. `Err(Error::Refused)` lists the messages the kernel
    /// refused, with what they meant to do; nothing was applied then.
    pub fn commit(&self, nl: &mut NfNetlink) -> Result<(), Error> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let msgs: Vec<NfMessage> = self.ops.iter().map(|o| o.msg.clone()).collect();
        match nl.batch(&msgs) {
            Ok(()) => Ok(()),
            Err(netlink::Error::Batch { failures }) => Err(Error::Refused(
                failures
                    .into_iter()
                    .map(|f| Refused {
                        index: f.index,
                        what: f
                            .index
                            .and_then(|i| self.describe(i))
                            .unwrap_or("the transaction")
                            .to_string(),
                        errno: f.errno,
                        detail: f.detail,
                    })
                    .collect(),
            )),
            Err(e) => Err(Error::netlink("nf_tables transaction", e)),
        }
    }
}

/// A key for descriptions: an address when it has an address's length, hex otherwise.
fn render_key(k: &[u8]) -> String {
    match k.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(k).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(k).unwrap_or_default()).to_string(),
        _ => k.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
