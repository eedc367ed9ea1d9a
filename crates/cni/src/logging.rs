//! A tiny stderr logger for the `log` facade.
//!
//! stdout carries the protocol, so logs only ever go to stderr. The level comes from
//! `CNI_LOG_LEVEL` (`error`, `warn`, `info`, `debug`, `trace`, `off`; default `warn`), so a
//! runtime that passes its environment through can turn on debugging per call.

use std::io::Write;
use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    plugin: String,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line so concurrent plugins don't interleave mid-line.
            let line = format!(
                "{}: {}: {}\n",
                self.plugin,
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
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
/// env `CNI_LOG_LEVEL` (default warn). Calling it again only updates the level.
pub fn init_logging(plugin: &str) {
    let level = level_from(std::env::var("CNI_LOG_LEVEL").ok().as_deref());
    let logger = LOGGER.get_or_init(|| StderrLogger {
        plugin: plugin.to_string(),
    });
    // Err only means a logger is already installed, which is fine.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_from(None), LevelFilter::Warn);
        assert_eq!(level_from(Some("DEBUG")), LevelFilter::Debug);
        assert_eq!(level_from(Some("error")), LevelFilter::Error);
        assert_eq!(level_from(Some("bogus")), LevelFilter::Warn);
        init_logging("test");
        init_logging("test");
        log::warn!("logger works");
    }
}
