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

impl StderrLogger {
    /// `"<plugin>: <level>: <message>\n"`.
    fn line(&self, record: &Record<'_>) -> String {
        format!(
            "{}: {}: {}\n",
            self.plugin,
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
        assert_eq!(level_from(Some(" warning ")), LevelFilter::Warn);
        assert_eq!(level_from(Some("error")), LevelFilter::Error);
        assert_eq!(level_from(Some("none")), LevelFilter::Off);
        assert_eq!(level_from(Some("bogus")), LevelFilter::Warn);
    }

    #[test]
    fn line_format() {
        let logger = StderrLogger {
            plugin: "bridge".into(),
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
