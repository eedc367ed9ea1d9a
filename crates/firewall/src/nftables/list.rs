//! Reading the ruleset: dumps of tables, chains, rules and set elements, decoded.
//!
//! Dump filters (table, chain) are sent to the kernel and applied again here: kernels
//! that do not know a filter attribute ignore it and dump everything. That path is forced
//! (no filter sent) by the shared old-kernel test switch (`RCNI_TEST_KERNEL_FALLBACKS=1`,
//! see `netlink::compat`) or, in-process, [`set_kernel_filters`]`(false)`.

use std::sync::atomic::{AtomicU8, Ordering};

use netlink::NfNetlink;

use super::object::{
    self, Chain, Elem, Family, Rule, SetRef, Table, chain_filter, elements_filter, get_message,
    msg, rule_filter,
};
use crate::Error;

/// 0: not decided yet, 1: send filters, 2: do not.
static KERNEL_FILTERS: AtomicU8 = AtomicU8::new(0);

/// Test switch: `false` makes dumps ask the kernel for everything, as a kernel that
/// ignores the filter attributes would answer, so the userspace filtering is what decides.
pub fn set_kernel_filters(enabled: bool) {
    KERNEL_FILTERS.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

fn kernel_filters() -> bool {
    match KERNEL_FILTERS.load(Ordering::Relaxed) {
        0 => {
            let on = !netlink::compat::fallbacks_forced();
            if !on {
                log::debug!("nf_tables dumps without filters (old-kernel path)");
            }
            set_kernel_filters(on);
            on
        }
        v => v == 1,
    }
}

fn family_matches(want: Option<Family>, got: Family) -> bool {
    want.is_none_or(|f| f == got)
}

/// Every table of the namespace (all families).
pub fn tables(nl: &mut NfNetlink) -> Result<Vec<Table>, Error> {
    let replies = nl
        .dump(&get_message(msg::GETTABLE, None, |_| {}))
        .map_err(|e| Error::netlink("list tables", e))?;
    Ok(replies.iter().filter_map(Table::parse).collect())
}

/// Chain `name` of `table` (`family`), `None` when the table or the chain does not exist.
pub fn chain(
    nl: &mut NfNetlink,
    family: Family,
    table: &str,
    name: &str,
) -> Result<Option<Chain>, Error> {
    let req = get_message(msg::GETCHAIN, Some(family), |w| {
        chain_filter(w, table, Some(name))
    });
    match nl.get(&req) {
        Ok(replies) => Ok(replies.iter().filter_map(Chain::parse).next()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::netlink(
            format!("get chain {family} {table} {name}"),
            e,
        )),
    }
}

/// The chains of every table named `table` (of `family`, or of any family).
pub fn chains(
    nl: &mut NfNetlink,
    family: Option<Family>,
    table: &str,
) -> Result<Vec<Chain>, Error> {
    let req = get_message(msg::GETCHAIN, family, |w| {
        if kernel_filters() {
            chain_filter(w, table, None)
        }
    });
    let replies = nl
        .dump(&req)
        .map_err(|e| Error::netlink(format!("list chains of table {table}"), e))?;
    Ok(replies
        .iter()
        .filter_map(Chain::parse)
        .filter(|c| c.table == table && family_matches(family, c.family))
        .collect())
}

/// The rules of every table named `table` (of `family`, or of any family), only those of
/// `chain` when given. A missing table or chain lists as empty.
pub fn rules(
    nl: &mut NfNetlink,
    family: Option<Family>,
    table: &str,
    chain: Option<&str>,
) -> Result<Vec<Rule>, Error> {
    let req = get_message(msg::GETRULE, family, |w| {
        if kernel_filters() {
            rule_filter(w, table, chain)
        }
    });
    let replies = match nl.dump(&req) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(Error::netlink(format!("list rules of table {table}"), e)),
    };
    Ok(replies
        .iter()
        .filter_map(Rule::parse)
        .filter(|r| {
            r.table == table
                && family_matches(family, r.family)
                && chain.is_none_or(|c| r.chain == c)
        })
        .collect())
}

/// The elements of a set or map; empty when it does not exist.
pub fn elements(nl: &mut NfNetlink, set: &SetRef) -> Result<Vec<Elem>, Error> {
    let req = get_message(msg::GETSETELEM, Some(set.family), |w| {
        elements_filter(w, set)
    });
    match nl.dump(&req) {
        Ok(replies) => Ok(replies.iter().flat_map(object::parse_elements).collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(Error::netlink(
            format!("list elements of {} {} {}", set.family, set.table, set.name),
            e,
        )),
    }
}
