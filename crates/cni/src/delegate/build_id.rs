//! A binary's build identity: the GNU build ID note (`NT_GNU_BUILD_ID`) the linker writes, a
//! hash of the linked file (`-Wl,--build-id=sha1`, which the multi-call binary's build script
//! asks for explicitly). Two files with the same ID hold the same code; a rebuild from changed
//! sources, another version, the Go plugins and a fault-injection build all differ; a script
//! or a file without the note has none.
//!
//! It is read from the file's first bytes: the ELF header, the program headers, then each
//! `PT_NOTE` segment (all within the first page of our binaries: one `read`, no mapping, no
//! section headers). Anything unexpected (not ELF, truncated, an odd layout) is `None`, which
//! the caller treats as "not provably ours".

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

/// What is read up front: the headers and, in practice, the notes.
const HEAD: usize = 4096;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;
/// Longest note segment read (ours is under 100 bytes).
const MAX_NOTES: u64 = 64 * 1024;

/// The build ID of the file at `path`, if it is an ELF file with one.
pub fn of_file(path: &Path) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    let mut head = Vec::with_capacity(HEAD);
    (&mut f).take(HEAD as u64).read_to_end(&mut head).ok()?;
    parse(&head, &mut |off, len| read_at(&f, off, len))
        .ok()
        .flatten()
}

/// The build ID of the running executable (`/proc/self/exe`: the file this process was
/// started from, even when its name has since been replaced or removed), read once.
pub fn own() -> Option<&'static [u8]> {
    static OWN: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    OWN.get_or_init(|| of_file(Path::new("/proc/self/exe")))
        .as_deref()
}

fn read_at(f: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len).map_err(io::Error::other)?];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// Bytes of the file at an offset: from `head` when they are there, else from `more`.
type More<'a> = dyn FnMut(u64, u64) -> io::Result<Vec<u8>> + 'a;

/// The build ID in the ELF file starting with `head`; `Ok(None)` for a file without one,
/// `Err` for one that is not a well-formed ELF file.
pub(crate) fn parse(head: &[u8], more: &mut More<'_>) -> io::Result<Option<Vec<u8>>> {
    let bad = || io::Error::from(io::ErrorKind::InvalidData);
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Err(bad());
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return Err(bad()),
    };
    let big = match head[5] {
        1 => false,
        2 => true,
        _ => return Err(bad()),
    };
    let r = Reader { big };
    // e_phoff, e_phentsize, e_phnum.
    let (phoff, phentsize, phnum) = if wide {
        (r.u64(head, 0x20)?, r.u16(head, 0x36)?, r.u16(head, 0x38)?)
    } else {
        (
            u64::from(r.u32(head, 0x1c)?),
            r.u16(head, 0x2a)?,
            r.u16(head, 0x2c)?,
        )
    };
    let table_len = u64::from(phentsize) * u64::from(phnum);
    let table = slice_or_read(head, phoff, table_len, more)?;
    for i in 0..usize::from(phnum) {
        let ph = &table[i * usize::from(phentsize)..];
        if r.u32(ph, 0)? != PT_NOTE {
            continue;
        }
        let (off, size) = if wide {
            (r.u64(ph, 0x08)?, r.u64(ph, 0x20)?)
        } else {
            (u64::from(r.u32(ph, 0x04)?), u64::from(r.u32(ph, 0x10)?))
        };
        if size > MAX_NOTES {
            return Err(bad());
        }
        let notes = slice_or_read(head, off, size, more)?;
        if let Some(id) = gnu_build_id(&notes, r)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// `len` bytes at `off`: from `head` when they are there, else read.
fn slice_or_read(head: &[u8], off: u64, len: u64, more: &mut More<'_>) -> io::Result<Vec<u8>> {
    let end = off.checked_add(len).ok_or(io::ErrorKind::InvalidData)?;
    match (usize::try_from(off), usize::try_from(end)) {
        (Ok(o), Ok(e)) if e <= head.len() => Ok(head[o..e].to_vec()),
        _ => more(off, len),
    }
}

/// The `NT_GNU_BUILD_ID` descriptor among the notes of one segment (4-byte aligned entries:
/// namesz, descsz, type, name, desc).
fn gnu_build_id(mut notes: &[u8], r: Reader) -> io::Result<Option<Vec<u8>>> {
    let pad = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let namesz = usize::try_from(r.u32(notes, 0)?).map_err(io::Error::other)?;
        let descsz = usize::try_from(r.u32(notes, 4)?).map_err(io::Error::other)?;
        let kind = r.u32(notes, 8)?;
        let name_end = 12 + pad(namesz);
        let desc_end = name_end + pad(descsz);
        if desc_end > notes.len() {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..12 + namesz] == b"GNU\0" && descsz > 0 {
            return Ok(Some(notes[name_end..name_end + descsz].to_vec()));
        }
        notes = &notes[desc_end..];
    }
    Ok(None)
}

/// Integers of the file's byte order.
#[derive(Clone, Copy)]
struct Reader {
    big: bool,
}

impl Reader {
    fn bytes<const N: usize>(b: &[u8], at: usize) -> io::Result<[u8; N]> {
        b.get(at..at + N)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| io::ErrorKind::InvalidData.into())
    }
    fn u16(self, b: &[u8], at: usize) -> io::Result<u16> {
        let a = Self::bytes(b, at)?;
        Ok(if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }
    fn u32(self, b: &[u8], at: usize) -> io::Result<u32> {
        let a = Self::bytes(b, at)?;
        Ok(if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
    fn u64(self, b: &[u8], at: usize) -> io::Result<u64> {
        let a = Self::bytes(b, at)?;
        Ok(if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian file: header, one PT_NOTE program header, notes.
    fn elf64(notes: &[u8], note_off: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[0x08..0x10].copy_from_slice(&note_off.to_le_bytes());
        ph[0x20..0x28].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f.extend(ph);
        f.resize(usize::try_from(note_off).unwrap(), 0);
        f.extend(notes);
        f
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend((name.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(kind.to_le_bytes());
        n.extend(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    fn parse_all(file: &[u8], head: usize) -> io::Result<Option<Vec<u8>>> {
        let h = &file[..head.min(file.len())];
        parse(h, &mut |off, len| {
            let (o, l) = (usize::try_from(off).unwrap(), usize::try_from(len).unwrap());
            file.get(o..o + l)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
        })
    }

    #[test]
    fn finds_the_gnu_build_id_after_other_notes() {
        let mut notes = note(
            b"GNU\0",
            1,
            &[0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        );
        notes.extend(note(b"Go\0\0", 4, b"go build id"));
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        let f = elf64(&notes, 200);
        assert_eq!(parse_all(&f, 4096).unwrap(), Some(vec![0xab; 20]));
        // Notes beyond what was read up front are read on demand.
        assert_eq!(parse_all(&f, 100).unwrap(), Some(vec![0xab; 20]));
    }

    #[test]
    fn no_build_id_and_not_elf() {
        let f = elf64(&note(b"GNU\0", 1, &[0; 16]), 200);
        assert_eq!(parse_all(&f, 4096).unwrap(), None);
        assert!(parse_all(b"#!/bin/sh\nexec /usr/lib/cni/bridge\n", 4096).is_err());
        assert!(parse_all(b"", 4096).is_err());
        // A note running past its segment is malformed, not an ID.
        let mut broken = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20]);
        broken.truncate(20);
        assert!(parse_all(&elf64(&broken, 200), 4096).is_err());
    }

    #[test]
    fn this_test_binary_has_one_and_reads_the_same_each_way() {
        let exe = std::env::current_exe().unwrap();
        let id = of_file(&exe).expect("the linker writes a build ID");
        assert!(id.len() >= 8, "{id:?}");
        assert_eq!(own(), Some(id.as_slice()));
    }
}
