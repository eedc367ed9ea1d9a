//! Round-robin allocation of one address from one range set
//! (the reference `IPAllocator`).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{AllocError, StoreError};
use crate::ip;
use crate::range::Range;
use crate::range_set::RangeSet;
use crate::store::Store;

/// An address handed out: with the subnet's prefix length, and the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Address with the prefix length of its subnet.
    pub address: IpNetwork,
    /// The range's gateway.
    pub gateway: IpAddr,
}

/// Allocates from range set number `idx` (the index names its
/// `last_reserved_ip.<idx>` file).
#[derive(Debug, Clone, Copy)]
pub struct Allocator<'a> {
    set: &'a RangeSet,
    idx: usize,
}

impl<'a> Allocator<'a> {
    /// An allocator for `set`, the `idx`-th range set of the config.
    pub fn new(set: &'a RangeSet, idx: usize) -> Self {
        Allocator { set, idx }
    }

    /// Reserves an address for `(id, ifname)`: `requested` if given, else the
    /// next free one after the last reserved. The caller holds the store lock.
    pub fn get(
        &self,
        store: &mut dyn Store,
        id: &str,
        ifname: &str,
        requested: Option<IpAddr>,
    ) -> Result<Allocation, AllocError> {
        if let Some(req) = requested {
            let req = ip::canonical(req);
            let range = self
                .set
                .range_for(req)
                .ok_or_else(|| AllocError::NotInRangeSet {
                    ip: req,
                    set: self.set.to_string(),
                })?;
            if req == range.gateway {
                return Err(AllocError::RequestedGateway(req));
            }
            if !store.reserve(id, ifname, req, self.idx)? {
                return Err(AllocError::Unavailable {
                    ip: req,
                    set: self.set.to_string(),
                });
            }
            return Ok(allocation(range, req));
        }

        // The spec forbids a second ADD for the same attachment.
        if let Some(ip) = store
            .find_by_id(id, ifname)?
            .into_iter()
            .find(|ip| self.set.contains(*ip))
        {
            return Err(AllocError::Duplicate {
                ip,
                id: id.to_owned(),
            });
        }

        let mut iter = self.iter(store)?;
        while let Some((candidate, range)) = iter.next() {
            if store.reserve(id, ifname, candidate, self.idx)? {
                return Ok(allocation(range, candidate));
            }
        }
        Err(AllocError::Exhausted {
            set: self.set.to_string(),
        })
    }

    /// Releases everything `(id, ifname)` holds (Go's `Release`: not limited
    /// to this set). The caller holds the store lock.
    pub fn release(
        &self,
        store: &mut dyn Store,
        id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        store.release_by_id(id, ifname)
    }

    /// The candidate iterator: starts after `last_reserved_ip.<idx>` when
    /// that address is in the set, else at the first range's start.
    fn iter(&self, store: &mut dyn Store) -> Result<RangeIter<'a>, StoreError> {
        let last = match store.last_reserved(self.idx) {
            Ok(v) => v,
            Err(e) => {
                // Losing round robin once is not worth failing the ADD.
                log::warn!("Error retrieving last reserved ip: {e}");
                None
            }
        };
        let start = last.and_then(|l| {
            self.set
                .ranges()
                .iter()
                .position(|r| r.contains(l))
                .map(|i| (i, l))
        });
        Ok(match start {
            Some((range_idx, last)) => RangeIter {
                set: self.set,
                range_idx,
                cur: Some(last),
                start: None,
            },
            None => RangeIter {
                set: self.set,
                range_idx: 0,
                cur: None,
                start: None,
            },
        })
    }
}

fn allocation(range: &Range, ip: IpAddr) -> Allocation {
    Allocation {
        address: range.with_prefix(ip),
        gateway: range.gateway,
    }
}

/// Walks the set once, range after range, wrapping around, skipping gateways
/// (Go's `RangeIter`).
#[derive(Debug)]
struct RangeIter<'a> {
    set: &'a RangeSet,
    range_idx: usize,
    /// Current position (`None`: not started, begin at the range start).
    cur: Option<IpAddr>,
    /// First address returned; seeing it again ends the lap.
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    fn next(&mut self) -> Option<(IpAddr, &'a Range)> {
        let ranges = self.set.ranges();
        loop {
            let r = &ranges[self.range_idx];
            let Some(cur) = self.cur else {
                self.cur = Some(r.range_start);
                self.start = Some(r.range_start);
                if r.range_start == r.gateway {
                    continue;
                }
                return Some((r.range_start, r));
            };
            let next = if cur == r.range_end {
                self.range_idx = (self.range_idx + 1) % ranges.len();
                ranges[self.range_idx].range_start
            } else {
                ip::next(cur)
            };
            self.cur = Some(next);
            let r = &ranges[self.range_idx];
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway {
                continue;
            }
            return Some((next, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RawRange;
    use crate::store::MemStore;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    /// `(subnet, rangeStart, rangeEnd, gateway)`.
    type Spec<'s> = (&'s str, Option<&'s str>, Option<&'s str>, Option<&'s str>);

    fn set(specs: &[Spec<'_>]) -> RangeSet {
        let confs: Vec<_> = specs
            .iter()
            .map(|(subnet, start, end, gw)| {
                RawRange {
                    subnet: Some((*subnet).into()),
                    range_start: start.map(Into::into),
                    range_end: end.map(Into::into),
                    gateway: gw.map(Into::into),
                }
                .parse()
                .expect("parse")
            })
            .collect();
        RangeSet::canonicalize(&confs).expect("valid set")
    }

    fn all(a: &Allocator<'_>, store: &mut MemStore, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                a.get(store, &format!("c{i}"), "eth0", None)
                    .map(|x| x.address.to_string())
                    .unwrap_or_else(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn sequence_skips_gateway_and_exhausts() {
        let s = set(&[("10.1.2.0/29", None, None, None)]);
        let a = Allocator::new(&s, 0);
        let mut store = MemStore::default();
        let got = all(&a, &mut store, 7);
        assert_eq!(
            got,
            vec![
                "10.1.2.2/29",
                "10.1.2.3/29",
                "10.1.2.4/29",
                "10.1.2.5/29",
                "10.1.2.6/29",
                "no IP addresses available in range set: 10.1.2.1-10.1.2.6",
                "no IP addresses available in range set: 10.1.2.1-10.1.2.6",
            ]
        );
        let first = a.get(&mut store, "x", "eth0", None);
        assert!(first.is_err());
        assert_eq!(
            store.files.get(&ip("10.1.2.2")).map(String::as_str),
            Some("c0\r\neth0")
        );
    }

    #[test]
    fn round_robin_from_last_reserved() {
        let s = set(&[("10.1.2.0/29", None, None, None)]);
        let a = Allocator::new(&s, 0);
        let mut store = MemStore::default();
        let x = a.get(&mut store, "a", "eth0", None).expect("alloc");
        assert_eq!(x.address.ip(), ip("10.1.2.2"));
        assert_eq!(x.gateway, ip("10.1.2.1"));
        a.release(&mut store, "a", "eth0").expect("release");
        // Released .2 is not reused right away.
        let y = a.get(&mut store, "b", "eth0", None).expect("alloc");
        assert_eq!(y.address.ip(), ip("10.1.2.3"));
        // Wrap around after the end.
        store.last.insert(0, ip("10.1.2.6"));
        let z = a.get(&mut store, "c", "eth0", None).expect("alloc");
        assert_eq!(z.address.ip(), ip("10.1.2.2"));
        // A last-reserved address outside the set restarts at the beginning.
        store.last.insert(0, ip("192.168.0.1"));
        let w = a.get(&mut store, "d", "eth0", None).expect("alloc");
        assert_eq!(w.address.ip(), ip("10.1.2.4"));
    }

    #[test]
    fn multiple_ranges_wrap() {
        let s = set(&[
            ("10.1.1.0/30", None, None, None),
            ("10.1.2.0/30", None, None, Some("10.1.2.2")),
        ]);
        let a = Allocator::new(&s, 3);
        let mut store = MemStore::default();
        let got = all(&a, &mut store, 4);
        assert_eq!(
            got,
            vec![
                "10.1.1.2/30",
                "10.1.2.1/30",
                "no IP addresses available in range set: 10.1.1.1-10.1.1.2,10.1.2.1-10.1.2.2",
                "no IP addresses available in range set: 10.1.1.1-10.1.1.2,10.1.2.1-10.1.2.2",
            ]
        );
        assert_eq!(store.last.get(&3), Some(&ip("10.1.2.1")));
    }

    #[test]
    fn ipv6_reaches_last_address() {
        let s = set(&[("fd00::/126", None, None, None)]);
        let a = Allocator::new(&s, 0);
        let mut store = MemStore::default();
        assert_eq!(
            all(&a, &mut store, 3),
            vec![
                "fd00::2/126",
                "fd00::3/126",
                "no IP addresses available in range set: fd00::1-fd00::3"
            ]
        );
    }

    #[test]
    fn requested_ips() {
        let s = set(&[("10.1.2.0/24", Some("10.1.2.10"), Some("10.1.2.20"), None)]);
        let a = Allocator::new(&s, 0);
        let mut store = MemStore::default();
        let x = a
            .get(&mut store, "a", "eth0", Some(ip("10.1.2.15")))
            .expect("requested");
        assert_eq!(x.address.to_string(), "10.1.2.15/24");
        assert_eq!(store.last.get(&0), Some(&ip("10.1.2.15")));
        let e = a
            .get(&mut store, "b", "eth0", Some(ip("10.1.2.15")))
            .expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "requested IP address 10.1.2.15 is not available in range set 10.1.2.10-10.1.2.20"
        );
        let e = a
            .get(&mut store, "b", "eth0", Some(ip("10.1.2.30")))
            .expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "10.1.2.30 not in range set 10.1.2.10-10.1.2.20"
        );
        let s2 = set(&[("10.1.3.0/24", None, None, None)]);
        let e = Allocator::new(&s2, 1)
            .get(&mut store, "b", "eth0", Some(ip("10.1.3.1")))
            .expect_err("must fail");
        assert_eq!(e.to_string(), "requested ip 10.1.3.1 is subnet's gateway");
    }

    #[test]
    fn duplicate_allocation() {
        let s = set(&[("10.1.2.0/24", None, None, None)]);
        let a = Allocator::new(&s, 0);
        let mut store = MemStore::default();
        a.get(&mut store, "a", "eth0", None).expect("first");
        let e = a.get(&mut store, "a", "eth0", None).expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "10.1.2.2 has been allocated to a, duplicate allocation is not allowed"
        );
        // Another interface of the same container is fine.
        a.get(&mut store, "a", "eth1", None).expect("other ifname");
        // An old-format file of that container also counts.
        store.files.insert(ip("10.1.2.50"), "old".into());
        assert!(matches!(
            a.get(&mut store, "old", "eth0", None),
            Err(AllocError::Duplicate { .. })
        ));
    }

    #[test]
    fn disk_store_end_to_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = crate::DiskStore::open(tmp.path(), "net").expect("open");
        let s = set(&[("10.1.2.0/30", None, None, None)]);
        let a = Allocator::new(&s, 0);
        {
            let mut l = store.lock().expect("lock");
            let x = a.get(&mut l, "c1", "eth0", None).expect("alloc");
            assert_eq!(x.address.to_string(), "10.1.2.2/30");
            let e = a.get(&mut l, "c2", "eth0", None).expect_err("must fail");
            assert_eq!(
                e.to_string(),
                "no IP addresses available in range set: 10.1.2.1-10.1.2.2"
            );
        }
        let mut l = store.lock().expect("lock");
        assert_eq!(
            a.release(&mut l, "c1", "eth0").expect("release"),
            vec![ip("10.1.2.2")]
        );
        let x = a.get(&mut l, "c2", "eth0", None).expect("alloc again");
        assert_eq!(x.address.ip(), ip("10.1.2.2"));
    }
}
