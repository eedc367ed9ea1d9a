//! Shared by the root tests: a private network namespace per test, and running tools.

#![allow(dead_code, clippy::unwrap_used)]

use nix::sched::{CloneFlags, unshare};
use std::process::Command;

/// Run `f` on a thread inside a new, private network namespace (it vanishes with the
/// thread). Needs root: without it the test fails, it does not skip.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let before = std::fs::read_link("/proc/thread-self/ns/net").expect("read netns link");
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) failed: these tests must run as root");
            let after = std::fs::read_link("/proc/thread-self/ns/net").expect("read netns link");
            assert_ne!(
                before, after,
                "not in a new netns; refusing to touch the host"
            );
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Run a tool (in the calling thread's netns) and return its stdout; panics on failure.
pub fn sh(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `nft -f -` with `script`; panics on failure.
pub fn nft_script(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f - failed for:\n{script}"
    );
}
