//! The checks, one per finding id (or pair of ids), in report order: what the others depend
//! on comes first, so the root cause is the first finding.

mod bridge;
mod config;
mod firewall;
mod kernel;
mod lease;
mod state;

pub use state::live_attachments;

use crate::Context;
use crate::finding::CheckResult;

/// Every check, in report order.
pub fn all(ctx: &Context) -> Vec<CheckResult> {
    vec![
        config::config(ctx),
        config::plugins(ctx),
        lease::lease(ctx),
        bridge::address(ctx),
        kernel::ip_forward(ctx),
        firewall::forward_drop(ctx),
        kernel::bridge_nf_call(ctx),
        bridge::mtu(ctx),
        state::stale_reservations(ctx),
        firewall::leftover_rules(ctx),
        state::pool(ctx),
        kernel::routes_to_peers(ctx),
    ]
}

/// `CheckResult` from a name and a closure that may bail out with an outcome.
fn check(
    name: &'static str,
    f: impl FnOnce() -> Result<crate::finding::Outcome, crate::finding::Outcome>,
) -> CheckResult {
    CheckResult {
        name,
        outcome: f().unwrap_or_else(|o| o),
    }
}

/// "a, b and c" (at most `max` items, then "and N more").
fn list(items: &[String], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    match (items.len(), shown.split_last()) {
        (_, None) => String::new(),
        (1, Some((only, _))) => (*only).to_owned(),
        (n, Some((last, rest))) if n <= max => format!("{} and {last}", rest.join(", ")),
        (n, _) => format!("{} and {} more", shown.join(", "), n - max),
    }
}

/// `n word` or `n words`.
fn count(n: usize, word: &str) -> String {
    match (n, word.ends_with('s')) {
        (1, _) => format!("1 {word}"),
        (_, true) => format!("{n} {word}es"),
        (_, false) => format!("{n} {word}s"),
    }
}

/// A container ID short enough to read (the first 12 characters, as docker/crictl show it).
fn short_id(id: &str) -> String {
    match id.char_indices().nth(12) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ids() {
        let v = |n: usize| (1..=n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(list(&v(0), 3), "");
        assert_eq!(list(&v(1), 3), "1");
        assert_eq!(list(&v(3), 3), "1, 2 and 3");
        assert_eq!(list(&v(5), 3), "1, 2, 3 and 2 more");
        assert_eq!(count(1, "port"), "1 port");
        assert_eq!(count(2, "port"), "2 ports");
        assert_eq!(count(0, "address"), "0 addresses");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(&"a".repeat(64)), format!("{}…", "a".repeat(12)));
    }
}
