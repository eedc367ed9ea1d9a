//! A tiny stderr logger for the `log` facade.
//!
//! stdout carries the protocol, so logs only ever go to stderr. The level comes from
//! `CNI_LOG_LEVEL` (`error`, `warn`, `info`, `debug`, `trace`, `off`; default `warn`), so a
//! runtime that passes its environment through can turn on debugging per call.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use log::{LevelFilter, Log, Metadata, Record};

/// Lines are prefixed with the name of the plugin that is running: the process's, or that of
/// a delegate running in-process for the time it runs ([`Scope`]).
struct StderrLogger {
    plugin: Mutex<String>,
}

static LOGGER: StderrLogger = StderrLogger {
    plugin: Mutex::new(String::new()),
};

impl StderrLogger {
    fn name(&self) -> std::sync::MutexGuard<'_, String> {
        self.plugin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `"<plugin>: <level>: <message>\n"`.
    fn line(&self, record: &Record<'_>) -> String {
        format!(
            "{}: {}: {}\n",
            self.name(),
            record.level().as_str().to_ascii_lowercase(),
            record.args()
        )
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line so concurrent plugins don't interleave mid-line.
            let _ = std::io::stderr().write_all(self.line(record).as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Parses a `CNI_LOG_LEVEL` value; unknown or empty values give the default (warn).
pub(crate) fn level_from(value: Option<&str>) -> LevelFilter {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("off") | Some("none") => LevelFilter::Off,
        Some("error") => LevelFilter::Error,
        Some("warn") | Some("warning") => LevelFilter::Warn,
        Some("info") => LevelFilter::Info,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => LevelFilter::Warn,
    }
}

/// Installs the stderr logger (lines `"<plugin>: <level>: <message>"`, no timestamps), level from
/// env `CNI_LOG_LEVEL` (default warn). Calling it again updates the name and the level.
pub fn init_logging(plugin: &str) {
    let level = level_from(std::env::var("CNI_LOG_LEVEL").ok().as_deref());
    plugin.clone_into(&mut LOGGER.name());
    // Err only means a logger is already installed, which is fine.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Logging as a delegate running in-process logs when it is a process of its own: the stderr
/// logger under the delegate's name, level from `CNI_LOG_LEVEL`. Dropping it restores the
/// caller's name and level (also "off" for a caller that logs nothing, like the doctor).
pub(crate) struct Scope {
    name: String,
    level: LevelFilter,
}

impl Scope {
    pub(crate) fn enter(plugin: &str) -> Scope {
        let scope = Scope {
            name: LOGGER.name().clone(),
            level: log::max_level(),
        };
        init_logging(plugin);
        scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        *LOGGER.name() = std::mem::take(&mut self.name);
        log::set_max_level(self.level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_from(None), LevelFilter::Warn);
        assert_eq!(level_from(Some("DEBUG")), LevelFilter::Debug);
        assert_eq!(level_from(Some(" warning ")), LevelFilter::Warn);
        assert_eq!(level_from(Some("error")), LevelFilter::Error);
        assert_eq!(level_from(Some("none")), LevelFilter::Off);
        assert_eq!(level_from(Some("bogus")), LevelFilter::Warn);
    }

    #[test]
    fn line_format() {
        let logger = StderrLogger {
            plugin: Mutex::new("bridge".into()),
        };
        let line = logger.line(
            &Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("veth {} gone", "veth1"))
                .build(),
        );
        assert_eq!(line, "bridge: warn: veth veth1 gone\n");
    }

    #[test]
    fn init_installs_the_logger_and_sets_the_level() {
        init_logging("test");
        // Again: only the level is updated, no error.
        init_logging("test");
        let want = level_from(std::env::var("CNI_LOG_LEVEL").ok().as_deref());
        assert_eq!(log::max_level(), want);
        let meta = |level| log::Metadata::builder().level(level).build();
        assert_eq!(
            log::logger().enabled(&meta(log::Level::Error)),
            want >= LevelFilter::Error,
            "ours is the installed logger"
        );
        assert!(!log::logger().enabled(&meta(log::Level::Trace)) || want == LevelFilter::Trace);
    }
}
