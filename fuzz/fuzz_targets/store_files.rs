//! host-local's store files: a directory as crashes, the reference plugin and people leave
//! it (reservations of every owner format, empty, garbage and oversized files, stray names,
//! any `last_reserved_ip.N`, an owner index that is torn, foreign or lying), then ADD
//! (allocation), DEL, CHECK, rollback and GC steps and foreign writes, run on the disk store
//! and on the in-memory model (`MemStore`, the reference plugin's semantics). After every
//! step the directory must be what the model says, and the answers must agree.
//!
//! The owner index is a hint that the store checks: an index that names the wrong file or
//! owner is caught. What it cannot catch is an index that leaves a file out while the
//! directory's times are as it recorded them (a change by another writer within one clock
//! tick, on kernels or filesystems without multigrain timestamps); a forged index or a
//! foreign write marked as made in the same tick models exactly that, and then, until a
//! listing of every file (GC), the store may see a subset of an attachment's files: an ADD
//! may miss a duplicate (and must then take a free address), DEL and CHECK may find a
//! subset. It must never take a taken address, release another attachment's file, or
//! answer "nothing" when the attachment has something.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use arbitrary::Arbitrary;
use ipam_store::index::{INDEX_FILE, fuzz_forge, fuzz_owner_hash};
use ipam_store::store::reservation_content;
use ipam_store::{AllocError, Allocator, DiskStore, MemStore, RangeSet, RawRange, Store};
use libfuzzer_sys::fuzz_target;

const IDS: [&str; 6] = [
    "c0",
    "c1",
    "c2",
    "C1",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "c1.eth0",
];
const IFNAMES: [&str; 3] = ["eth0", "eth1", "net1"];
/// Longer than host-local reads (`MAX_CONTENT`): such a file is unreadable, owned by no one.
const OVERSIZED: usize = 5000;

fn pool(i: u8) -> IpAddr {
    let i = usize::from(i) % 20;
    if i < 10 {
        format!("10.1.0.{i}").parse().expect("v4")
    } else {
        format!("fd00::{}", i - 10).parse().expect("v6")
    }
}

fn id(i: u8) -> &'static str {
    IDS[usize::from(i) % IDS.len()]
}

fn ifname(i: u8) -> &'static str {
    IFNAMES[usize::from(i) % IFNAMES.len()]
}

#[derive(Arbitrary, Debug, Clone)]
enum Content {
    /// `<id>\r\n<ifname>`, as both plugins write it.
    Attachment(u8, u8),
    /// `<id>` alone (old plugin versions).
    Container(u8),
    /// Padded with whitespace (a person's edit).
    Padded(u8, u8),
    /// Empty (the reference plugin killed between create and write, or a power cut).
    Empty,
    Raw(Vec<u8>),
    Oversized,
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Attachment(i, f) => reservation_content(id(*i), ifname(*f)).into_bytes(),
            Content::Container(i) => id(*i).as_bytes().to_vec(),
            Content::Padded(i, f) => format!(" \n{}\r\n{}\n\n", id(*i), ifname(*f)).into_bytes(),
            Content::Empty => Vec::new(),
            Content::Raw(b) => b.iter().take(300).copied().collect(),
            Content::Oversized => vec![b'x'; OVERSIZED],
        }
    }

    /// What the store reads: trimmed text, or "" for a file it does not read.
    fn seen(&self) -> String {
        seen(&self.bytes())
    }
}

fn seen(bytes: &[u8]) -> String {
    if bytes.len() > 4096 {
        return String::new();
    }
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[derive(Arbitrary, Debug, Clone)]
enum Name {
    Pool(u8),
    /// Any other name: not a reservation unless it is an address.
    Raw(String),
}

impl Name {
    /// The file name, or None for names a store directory cannot hold or that stand for
    /// its own files (the lock, the index, `last_reserved_ip.N`), or for an address written
    /// in a form neither plugin writes (`fd00:0::2`, `::ffff:10.1.0.2`).
    fn file(&self) -> Option<String> {
        match self {
            Name::Pool(i) => Some(pool(*i).to_string()),
            Name::Raw(s) => {
                let bad = s.is_empty()
                    || s == "."
                    || s == ".."
                    || s.contains(['/', '\0'])
                    || s.len() > 200
                    || s == "lock"
                    || s == INDEX_FILE
                    || s.starts_with("last_reserved_ip.");
                let odd_address = s
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ipam_store::ip::canonical(ip).to_string() != *s);
                (!bad && !odd_address).then(|| s.clone())
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Owner {
    Of(Content),
    Unreadable,
    Hash(u64),
}

#[derive(Arbitrary, Debug, Clone)]
enum IndexLine {
    /// A well-formed line about `name`, with its real inode or another one.
    Entry {
        name: Name,
        owner: Owner,
        real_inode: bool,
        inode: u64,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Add {
        id: u8,
        ifname: u8,
        set: bool,
        requested: Option<u8>,
    },
    Del {
        id: u8,
        ifname: u8,
        passes: u8,
    },
    Check {
        id: u8,
        ifname: u8,
    },
    /// A failed ADD releasing what it reserved.
    Rollback {
        id: u8,
        ifname: u8,
        ips: Vec<u8>,
    },
    Gc {
        valid: Vec<(u8, u8)>,
    },
    /// Another writer (the reference plugin, a person) adds or replaces a file, in a later
    /// clock tick than the store's last change (so the directory's times show it) or in the
    /// same one (see the top).
    Foreign {
        name: Name,
        content: Content,
        same_tick: bool,
    },
    ForeignRemove {
        ip: u8,
        same_tick: bool,
    },
    /// The owner index is replaced by one with the directory's stamp (see the top).
    Forge(Vec<IndexLine>),
    /// The owner index is overwritten with anything (torn, foreign).
    Scribble(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    files: Vec<(Name, Content)>,
    last: [Option<Vec<u8>>; 2],
    ops: Vec<Op>,
}

fn sets() -> [RangeSet; 2] {
    let set = |subnet: &str| {
        let raw = RawRange {
            subnet: Some(subnet.into()),
            range_start: None,
            range_end: None,
            gateway: None,
        };
        RangeSet::canonicalize(&[raw.parse().expect("range")]).expect("set")
    };
    [set("10.1.0.0/29"), set("fd00::/125")]
}

/// Reservations on disk (files named by an address), as the store reads them.
fn on_disk(dir: &Path) -> Vec<(IpAddr, String)> {
    let mut out: Vec<(IpAddr, String)> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let ip = e.file_name().to_str()?.parse::<IpAddr>().ok()?;
            Some((ip, seen(&std::fs::read(e.path()).ok()?)))
        })
        .collect();
    out.sort();
    out
}

fn modelled(model: &MemStore) -> Vec<(IpAddr, String)> {
    model
        .files
        .iter()
        .map(|(ip, c)| (*ip, seen(c.as_bytes())))
        .collect()
}

fn last_on_disk(dir: &Path, idx: usize) -> Option<IpAddr> {
    let bytes = std::fs::read(dir.join(format!("last_reserved_ip.{idx}"))).ok()?;
    String::from_utf8_lossy(&bytes)
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(ipam_store::ip::canonical)
}

fn forge(dir: &Path, lines: &[IndexLine]) {
    let mut body = Vec::new();
    for line in lines.iter().take(40) {
        match line {
            IndexLine::Entry {
                name,
                owner,
                real_inode,
                inode,
            } => {
                let Some(name) = name.file() else { continue };
                let mut owner = match owner {
                    Owner::Of(c) => format!("{:016x}", fuzz_owner_hash(&c.seen())),
                    Owner::Unreadable => "-".repeat(16),
                    Owner::Hash(h) => format!("{h:016x}"),
                };
                let path = dir.join(&name);
                let ino = match std::fs::symlink_metadata(&path) {
                    Ok(m) if *real_inode => {
                        // Under the file's own inode the index tells its true owner: only a
                        // rewrite in place (same inode), which neither plugin does, could make
                        // it lie, and the store does not re-read such a file (it would read
                        // every file on every lookup).
                        let bytes = std::fs::read(&path).unwrap_or_default();
                        owner = if bytes.len() > 4096 {
                            "-".repeat(16)
                        } else {
                            format!("{:016x}", fuzz_owner_hash(&seen(&bytes)))
                        };
                        m.ino()
                    }
                    _ => *inode,
                };
                body.extend_from_slice(format!("{owner} {ino} {name}\n").as_bytes());
            }
            IndexLine::Raw(b) => body.extend(b.iter().take(100)),
        }
    }
    fuzz_forge(dir, &body).expect("forge the index");
}

/// After another writer changed `dir`: unless the change is to count as made in the clock
/// tick of the store's last one, the directory's modification time is moved to a time of its
/// own (as a later tick would), so that the store must see the change. Whether the owner index
/// may now be blind.
fn foreign_change(dir: &Path, same_tick: bool, ticks: &mut u64) -> bool {
    if same_tick {
        return true;
    }
    *ticks += 1;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + *ticks);
    std::fs::File::open(dir)
        .and_then(|d| d.set_modified(when))
        .expect("set the directory's mtime");
    false
}

/// The model's answer for DEL (the reference's `ReleaseByID`, `passes` times).
fn model_release(model: &mut MemStore, id: &str, ifname: &str, passes: usize) -> BTreeSet<IpAddr> {
    let entries = model.list().expect("list");
    let att: Vec<IpAddr> = entries
        .iter()
        .filter(|e| e.matches_attachment(id, ifname))
        .map(|e| e.ip)
        .collect();
    let cont: Vec<IpAddr> = entries
        .iter()
        .filter(|e| e.matches_container(id))
        .map(|e| e.ip)
        .collect();
    if passes >= 2 || att.is_empty() {
        att.into_iter().chain(cont).collect()
    } else {
        att.into_iter().collect()
    }
}

fn model_owned(model: &mut MemStore, id: &str, ifname: &str) -> BTreeSet<IpAddr> {
    model
        .find_by_id(id, ifname)
        .expect("find")
        .into_iter()
        .collect()
}

fuzz_target!(|input: Input| {
    let tmp = rcni_fuzz::scratch_dir();
    let store = DiskStore::open(tmp.path(), "net").expect("open");
    let dir = store.dir().to_owned();
    let sets = sets();
    let mut model = MemStore::default();

    for (name, content) in input.files.iter().take(24) {
        let Some(file) = name.file() else { continue };
        std::fs::write(dir.join(&file), content.bytes()).expect("write");
        if let Ok(ip) = file.parse::<IpAddr>() {
            model.files.insert(ip, content.seen());
        }
    }
    for (idx, last) in input.last.iter().enumerate() {
        if let Some(bytes) = last {
            std::fs::write(dir.join(format!("last_reserved_ip.{idx}")), bytes).expect("write");
        }
        if let Some(ip) = last_on_disk(&dir, idx) {
            model.last.insert(idx, ip);
        }
    }

    // The index may be omitting files (see the top) until every file is read again.
    let mut blind = false;
    let mut ticks = 0;
    for op in input.ops.iter().take(32) {
        match op {
            Op::Add {
                id: i,
                ifname: f,
                set,
                requested,
            } => {
                let (id, ifname) = (id(*i), ifname(*f));
                let idx = usize::from(*set);
                let a = Allocator::new(&sets[idx], idx);
                let wanted = requested.map(pool);
                let prepared = store.prepare(id, ifname).expect("prepare");
                let mut locked = store.lock().expect("lock");
                locked.stage(prepared);
                let got = a.get(&mut locked, id, ifname, wanted);
                drop(locked);
                store.sync().expect("sync");
                let mut twin = model.clone();
                let want = a.get(&mut twin, id, ifname, wanted);
                match (&got, &want) {
                    (Ok(g), Ok(w)) => assert_eq!(g, w, "ADD {id}/{ifname}"),
                    // A duplicate the blind index hid: a free address, or none left.
                    (Ok(g), Err(AllocError::Duplicate { .. })) if blind => {
                        let ip = g.address.ip();
                        assert!(!model.files.contains_key(&ip), "ADD took the taken {ip}");
                        assert!(twin.reserve(id, ifname, ip, idx).expect("reserve"));
                    }
                    (Err(AllocError::Exhausted { .. }), Err(AllocError::Duplicate { .. }))
                        if blind => {}
                    (
                        Err(AllocError::Duplicate { ip: g, .. }),
                        Err(AllocError::Duplicate { .. }),
                    ) => {
                        assert!(
                            model_owned(&mut model, id, ifname).contains(g),
                            "ADD: {g} is not a duplicate of {id}/{ifname}"
                        );
                    }
                    (Err(g), Err(w)) => {
                        assert_eq!(g.to_string(), w.to_string(), "ADD {id}/{ifname}")
                    }
                    _ => panic!("ADD {id}/{ifname}: store {got:?}, model {want:?}"),
                }
                model = twin;
            }
            Op::Del {
                id: i,
                ifname: f,
                passes,
            } => {
                let (id, ifname) = (id(*i), ifname(*f));
                let passes = usize::from(*passes % 3);
                let got: BTreeSet<IpAddr> = store
                    .lock()
                    .expect("lock")
                    .release_attachment(id, ifname, passes)
                    .expect("release")
                    .into_iter()
                    .collect();
                store.sync().expect("sync");
                let want = model_release(&mut model, id, ifname, passes);
                if blind {
                    let own = model_owned(&mut model, id, ifname);
                    assert!(
                        got.is_subset(&own),
                        "DEL {id}/{ifname} released {got:?}, owns {own:?}"
                    );
                    assert_eq!(
                        got.is_empty(),
                        own.is_empty(),
                        "DEL {id}/{ifname}: {got:?} of {own:?}"
                    );
                } else {
                    assert_eq!(got, want, "DEL {id}/{ifname} x{passes}");
                }
                for ip in &got {
                    model.release(*ip).expect("release");
                }
            }
            Op::Check { id: i, ifname: f } => {
                let (id, ifname) = (id(*i), ifname(*f));
                let got: BTreeSet<IpAddr> = store
                    .lock()
                    .expect("lock")
                    .find_attachment(id, ifname)
                    .expect("find")
                    .into_iter()
                    .collect();
                let want = model_owned(&mut model, id, ifname);
                if blind {
                    assert!(
                        got.is_subset(&want),
                        "CHECK {id}/{ifname}: {got:?} of {want:?}"
                    );
                    assert_eq!(got.is_empty(), want.is_empty(), "CHECK {id}/{ifname}");
                } else {
                    assert_eq!(got, want, "CHECK {id}/{ifname}");
                }
            }
            Op::Rollback {
                id: i,
                ifname: f,
                ips,
            } => {
                let (id, ifname) = (id(*i), ifname(*f));
                let ips: Vec<IpAddr> = ips.iter().take(4).map(|i| pool(*i)).collect();
                let got = store
                    .lock()
                    .expect("lock")
                    .release_own(id, ifname, &ips)
                    .expect("release");
                store.sync().expect("sync");
                let mine = reservation_content(id, ifname);
                let mut want = Vec::new();
                for ip in &ips {
                    if model
                        .files
                        .get(ip)
                        .is_some_and(|c| seen(c.as_bytes()) == mine)
                    {
                        model.release(*ip).expect("release");
                        want.push(*ip);
                    }
                }
                assert_eq!(got, want, "rollback of {id}/{ifname}");
            }
            Op::Gc { valid } => {
                let valid: Vec<(&str, &str)> =
                    valid.iter().map(|(i, f)| (id(*i), ifname(*f))).collect();
                let live = |e: &ipam_store::Entry| match e.owner() {
                    ipam_store::Owner::Attachment {
                        container_id,
                        ifname,
                    } => valid.contains(&(container_id.as_str(), ifname.as_str())),
                    ipam_store::Owner::Container(c) => valid.iter().any(|(v, _)| *v == c),
                    ipam_store::Owner::Unknown => false,
                };
                let mut locked = store.lock().expect("lock");
                locked.remove_stale_temp_files().expect("sweep");
                let listed = locked.list().expect("list");
                let mut want = model.list().expect("list");
                want.sort_by_key(|e| e.ip);
                assert_eq!(listed, want, "GC's listing");
                for e in listed.iter().filter(|e| !live(e)) {
                    locked.release(e.ip).expect("release");
                    model.release(e.ip).expect("release");
                }
                drop(locked);
                store.sync().expect("sync");
                blind = false;
            }
            Op::Foreign {
                name,
                content,
                same_tick,
            } => {
                let Some(file) = name.file() else { continue };
                let path = dir.join(&file);
                // A new inode, as the reference plugin's DEL then ADD makes.
                let _ = std::fs::remove_file(&path);
                std::fs::write(&path, content.bytes()).expect("write");
                if let Ok(ip) = file.parse::<IpAddr>() {
                    model.files.insert(ip, content.seen());
                }
                blind |= foreign_change(&dir, *same_tick, &mut ticks);
            }
            Op::ForeignRemove { ip, same_tick } => {
                let ip = pool(*ip);
                let _ = std::fs::remove_file(dir.join(ip.to_string()));
                model.files.remove(&ip);
                blind |= foreign_change(&dir, *same_tick, &mut ticks);
            }
            Op::Forge(lines) => {
                forge(&dir, lines);
                blind = true;
            }
            Op::Scribble(bytes) => {
                std::fs::write(dir.join(INDEX_FILE), bytes).expect("write");
            }
        }
        assert_eq!(on_disk(&dir), modelled(&model), "after {op:?}");
        for idx in 0..2 {
            assert_eq!(
                last_on_disk(&dir, idx),
                model.last.get(&idx).copied(),
                "last_reserved_ip.{idx} after {op:?}"
            );
        }
    }
});
