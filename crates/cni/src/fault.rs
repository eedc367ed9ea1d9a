//! Panic injection for tests: named points in the plugins' code where a test build panics on
//! request, to prove what a runtime sees when a plugin panics (a CNI error object) and that
//! the undo lists roll back while the panic unwinds.
//!
//! The points exist only with the `fault-injection` feature, which release binaries are never
//! built with (`scripts/build-fault-injection.sh` builds a separate set for the tests); without
//! it [`point`] is an empty function.

/// The variable naming the point to panic at, e.g. `RCNI_TEST_PANIC_AT=bridge-add-end`.
pub const PANIC_AT_ENV: &str = "RCNI_TEST_PANIC_AT";

/// Panics when this is a fault-injection build and [`PANIC_AT_ENV`] names `name`.
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    if std::env::var(PANIC_AT_ENV).is_ok_and(|v| v == name) {
        panic!("injected panic at {name}");
    }
}

/// Panics when this is a fault-injection build and [`PANIC_AT_ENV`] names `name`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
