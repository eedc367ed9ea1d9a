//! Temp file names: `.tmp-<hint>.<pid>.<seq>.<l|u>`.
//!
//! Hidden, never a valid address, container ID or config name (`.conf`, `.conflist` and
//! `.json` are what libcni loads), so no reader of the directories we write to picks one up.
//! The last field says how the file was born: `l` locked before it had a name, `u` named first
//! and locked right after (filesystems without `O_TMPFILE`).

/// What every temp name starts with.
pub const PREFIX: &str = ".tmp-";

/// Longest hint kept in a name, in bytes (names stay far below `NAME_MAX`).
const MAX_HINT: usize = 96;

/// How a temp file was born.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Born {
    /// Locked before it had a name: unlocked means its writer is gone.
    Locked,
    /// Named, then locked: an unlocked young one may be a writer between the two steps.
    Unlocked,
}

impl Born {
    fn tag(self) -> &'static str {
        match self {
            Born::Locked => "l",
            Born::Unlocked => "u",
        }
    }
}

/// The temp name for a file about to become `hint` (any text; shortened and made safe).
pub(crate) fn name(hint: &str, seq: u32, born: Born) -> String {
    let mut end = hint.len().min(MAX_HINT);
    while !hint.is_char_boundary(end) {
        end -= 1;
    }
    let hint: String = hint[..end]
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    format!("{PREFIX}{hint}.{}.{seq}.{}", std::process::id(), born.tag())
}

/// How the temp file named `name` was born, or `None` when `name` is not one of ours.
pub(crate) fn parse(name: &str) -> Option<Born> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut fields = rest.rsplitn(4, '.');
    let born = match fields.next()? {
        "l" => Born::Locked,
        "u" => Born::Unlocked,
        _ => return None,
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (seq, pid) = (fields.next()?, fields.next()?);
    fields.next()?;
    (digits(seq) && digits(pid)).then_some(born)
}

/// True for the names this crate gives temp files.
pub fn is_temp_name(name: &str) -> bool {
    parse(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let n = name("10.1.2.3", 7, Born::Locked);
        assert!(
            n.starts_with(".tmp-10.1.2.3.") && n.ends_with(".7.l"),
            "{n}"
        );
        assert_eq!(parse(&n), Some(Born::Locked));
        assert_eq!(parse(&name("a/b", 0, Born::Unlocked)), Some(Born::Unlocked));
        assert!(!name("a/b", 0, Born::Unlocked).contains('/'));
        let long = "é".repeat(200);
        assert!(name(&long, 1, Born::Locked).len() < 130);
        for other in [
            "10.1.2.3",
            "lock",
            "last_reserved_ip.0",
            ".tmp-10.9.0.4-99999",
            ".tmp-x.1.2.z",
            ".tmp-x.a.2.l",
            ".c1.tmp42",
            ".install-cni.flannel.1.0",
            ".tmp-.1.l",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
        // An empty hint is still a name of ours.
        assert_eq!(parse(".tmp-.1.2.l"), Some(Born::Locked));
    }
}
