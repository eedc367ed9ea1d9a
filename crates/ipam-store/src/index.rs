//! The owner index: who owns which reservation file, so that an ADD finds out whether the
//! attachment already has an address (the spec forbids a second one) without opening, or even
//! listing, the reservation files. Reading every file on every ADD, as the reference does, made
//! the 1000th ADD cost 2.5 times the first.
//!
//! It is a hint, checked before it is believed:
//! * it records the directory's identity and change times (`mtime`, `ctime`) as they were
//!   after the last change it describes. Another writer that adds or removes a file (the
//!   reference plugin sharing the store, an older rcni, a person) changes them: then the
//!   directory is listed and every file read again, as the reference does on every call;
//! * an owner found through it is confirmed by reading that one file; a wrong entry means
//!   every file is read again;
//! * an attachment it knows nothing about is looked for in a listing of the directory
//!   (names and inode numbers; only new names are read) before DEL or CHECK give up, since
//!   before Linux 6.13 (multigrain timestamps: a change after a `stat` gets a fine-grained
//!   time) two changes within one clock tick leave the times as they were.
//!
//! What it cannot see: a reservation another writer adds in the same clock tick as our last
//! change, until the next listing. The only effect is on a second ADD of that same
//! attachment, which gets another address instead of the "duplicate allocation" error (the
//! runtime must not send it anyway; DEL still finds and frees both).
//!
//! The file is `<dir>/.rcni-owners`: hidden and not an address, so neither plugin takes it for
//! a reservation. It is rewritten in place under the store lock (a new directory entry would
//! change the times it records), ends its header with a checksum, and is never fsynced: a torn
//! or stale copy after a crash fails the checks and is rebuilt.
//!
//! Format: one header line `rcni host-local owners v1 <dev> <ino> <mtime s> <mtime ns>
//! <ctime s> <ctime ns> <body length> <checksum>`, then one line per reservation file:
//! `<owner hash, 16 hex digits, or 16 '-' when unreadable> <inode> <name>`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Name of the index file in the store directory.
pub const INDEX_FILE: &str = ".rcni-owners";

const MAGIC: &str = "rcni host-local owners v1";
const UNREADABLE: &[u8; 16] = b"----------------";

/// The directory's identity and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirStamp([i64; 6]);

impl DirStamp {
    pub(crate) fn of(dir: &Path) -> io::Result<Self> {
        let m = fs::metadata(dir)?;
        Ok(DirStamp([
            m.dev() as i64,
            m.ino() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ]))
    }
}

/// What the index knows of one reservation file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    /// Its inode number when it was read.
    pub ino: u64,
    /// [`owner_hash`] of its trimmed content; `None` when it could not be read.
    pub owner: Option<u64>,
}

/// One entry, borrowed from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    pub name: &'a str,
    pub known: Known,
}

/// The index: the directory stamp it is true for, and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    pub stamp: DirStamp,
    body: Vec<u8>,
}

/// FNV-1a, 64 bits: stable across Rust releases (unlike `DefaultHasher`), which matters for a
/// file that outlives the binary that wrote it.
pub(crate) fn owner_hash(content: &str) -> u64 {
    content.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checksum of the index: eight bytes at a time, so it stays cheap on a large store.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }
    for b in chunks.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    }
    h ^ (h >> 31)
}

fn hex16(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let (owner, rest) = (line.get(..16)?, line.get(17..)?);
    let owner = if owner == UNREADABLE {
        None
    } else {
        Some(u64::from_str_radix(std::str::from_utf8(owner).ok()?, 16).ok()?)
    };
    let sp = rest.iter().position(|b| *b == b' ')?;
    let ino = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
    let name = std::str::from_utf8(&rest[sp + 1..]).ok()?;
    Some(Line {
        name,
        known: Known { ino, owner },
    })
}

impl Index {
    /// An index of `files`, true for `stamp`.
    pub(crate) fn from_files(stamp: DirStamp, files: &HashMap<String, Known>) -> Self {
        let mut idx = Index {
            stamp,
            body: Vec::with_capacity(files.len() * 40),
        };
        for (name, known) in files {
            idx.append(name, *known);
        }
        idx
    }

    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.body
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
    }

    /// Every entry.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines().filter_map(parse_line)
    }

    /// Entries whose owner hash is one of `wanted`: one pass over the bytes, no allocation
    /// but for the matches.
    pub(crate) fn owned_by(&self, wanted: &[u64]) -> Vec<(String, u64)> {
        let wanted: Vec<[u8; 16]> = wanted.iter().map(|h| hex16(*h)).collect();
        self.lines()
            .filter(|line| line.len() > 16 && wanted.iter().any(|w| line[..16] == w[..]))
            .filter_map(parse_line)
            .filter_map(|l| l.known.owner.map(|h| (l.name.to_owned(), h)))
            .collect()
    }

    fn append(&mut self, name: &str, known: Known) {
        self.body
            .extend_from_slice(&known.owner.map_or(*UNREADABLE, hex16));
        self.body.push(b' ');
        self.body
            .extend_from_slice(known.ino.to_string().as_bytes());
        self.body.push(b' ');
        self.body.extend_from_slice(name.as_bytes());
        self.body.push(b'\n');
    }

    /// Forgets `name`; whether it was known.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        // A line ends with " <name>" (names hold no space): no need to parse the others.
        let tail = [b" ", name.as_bytes()].concat();
        let mut at = 0;
        while at < self.body.len() {
            let end = self.body[at..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(self.body.len(), |p| at + p);
            if self.body[at..end].ends_with(&tail) && end - at > 17 + tail.len() {
                let next = (end + 1).min(self.body.len());
                self.body.drain(at..next);
                return true;
            }
            at = end + 1;
        }
        false
    }

    /// Records `name` (replacing what was known of it).
    pub(crate) fn insert(&mut self, name: &str, known: Known) {
        self.remove(name);
        self.append(name, known);
    }

    /// The index file's bytes.
    pub(crate) fn render(&self) -> Vec<u8> {
        let fields: Vec<String> = self.stamp.0.iter().map(i64::to_string).collect();
        let head = format!("{MAGIC} {} {}", fields.join(" "), self.body.len());
        let sum = checksum(&[head.as_bytes(), &self.body].concat());
        let mut out = Vec::with_capacity(head.len() + 20 + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&hex16(sum));
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses what [`render`](Index::render) wrote; `None` for anything else (torn,
    /// foreign, another version).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Index> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..nl]).ok()?;
        let body = bytes.get(nl + 1..)?;
        let (head, sum) = header.rsplit_once(' ')?;
        let fields: Vec<i64> = head
            .strip_prefix(MAGIC)?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [dev, ino, ms, mns, cs, cns, len] = fields.as_slice().try_into().ok()?;
        if usize::try_from(len).ok()? != body.len()
            || u64::from_str_radix(sum, 16).ok()? != checksum(&[head.as_bytes(), body].concat())
        {
            return None;
        }
        Some(Index {
            stamp: DirStamp([dev, ino, ms, mns, cs, cns]),
            body: body.to_vec(),
        })
    }
}

/// Fuzzing only: the owner hash of a reservation's (trimmed) content.
#[cfg(feature = "fuzzing")]
pub fn fuzz_owner_hash(content: &str) -> u64 {
    owner_hash(content)
}

/// Fuzzing only: writes `body` (index lines, see the module's format) as the owner index of
/// `dir`, stamped with the directory as it is once the file exists and with a valid checksum:
/// the store then trusts whatever `body` says, as it would a stale index after a change made
/// within one clock tick, or a bug in this module.
#[cfg(feature = "fuzzing")]
pub fn fuzz_forge(dir: &Path, body: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(INDEX_FILE))?;
    let index = Index {
        stamp: DirStamp::of(dir)?,
        body: body.to_vec(),
    };
    file.write_all(&index.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ino: u64, owner: Option<&str>) -> Known {
        Known {
            ino,
            owner: owner.map(owner_hash),
        }
    }

    #[test]
    fn round_trip_lookups_and_torn_copies_are_refused() {
        let mut files = HashMap::new();
        files.insert("10.0.0.2".to_owned(), known(12, Some("c1\r\neth0")));
        files.insert("fd00::3".to_owned(), known(13, None));
        files.insert("10.0.0.4".to_owned(), known(14, Some("c1")));
        let mut idx = Index::from_files(DirStamp([1, 2, 3, 4, 5, -6]), &files);
        let bytes = idx.render();
        assert_eq!(Index::parse(&bytes), Some(idx.clone()));
        let mut got: Vec<(&str, Known)> = idx.entries().map(|l| (l.name, l.known)).collect();
        got.sort_by_key(|(n, _)| *n);
        assert_eq!(
            got,
            [
                ("10.0.0.2", known(12, Some("c1\r\neth0"))),
                ("10.0.0.4", known(14, Some("c1"))),
                ("fd00::3", known(13, None)),
            ]
        );
        let mut owned = idx.owned_by(&[owner_hash("c1\r\neth0"), owner_hash("c1")]);
        owned.sort();
        assert_eq!(
            owned,
            [
                ("10.0.0.2".to_owned(), owner_hash("c1\r\neth0")),
                ("10.0.0.4".to_owned(), owner_hash("c1"))
            ]
        );
        assert!(idx.owned_by(&[owner_hash("c2")]).is_empty());
        // A name that ends another one is not mistaken for it.
        assert!(!idx.remove("0.0.0.2"));
        assert!(idx.remove("10.0.0.2"));
        assert!(!idx.remove("10.0.0.2"));
        idx.insert("10.0.0.4", known(15, Some("c2\r\neth0")));
        assert_eq!(idx.owned_by(&[owner_hash("c2\r\neth0")]).len(), 1);
        assert!(idx.owned_by(&[owner_hash("c1")]).is_empty());
        assert_eq!(idx.entries().count(), 2);

        let bytes = idx.render();
        assert_eq!(Index::parse(&bytes), Some(idx));
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 3] {
            assert_eq!(Index::parse(&bytes[..cut]), None, "cut at {cut}");
        }
        for at in [30, bytes.len() - 5] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert_eq!(Index::parse(&flipped), None, "flipped at {at}");
        }
        assert_eq!(Index::parse(b"10.0.0.2 1 -\n"), None);
        // Known values: the owner hash must never change between releases.
        assert_eq!(owner_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(owner_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
