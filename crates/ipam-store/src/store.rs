//! The storage interface the allocator uses, the reservation file format,
//! and an in-memory implementation for tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use crate::error::StoreError;

/// Separator between container ID and interface name in a reservation.
pub const LINE_BREAK: &str = "\r\n";

/// Content of a reservation made by `(id, ifname)`: `<id>\r\n<ifname>`.
pub fn reservation_content(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

/// Who owns a reservation, decoded from its (trimmed) content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<containerID>\r\n<ifname>` (current format).
    Attachment {
        /// Container ID.
        container_id: String,
        /// Interface name.
        ifname: String,
    },
    /// `<containerID>` alone (files written by old plugin versions): owned by
    /// that container for any interface.
    Container(String),
    /// Empty or unreadable content (e.g. a plugin killed between creating
    /// and writing the file): taken, but owned by nobody known.
    Unknown,
}

impl Owner {
    /// Whether an attachment of `valid` (containerID, ifname) owns this reservation: that
    /// exact attachment for the current format, any interface of the container for files
    /// holding only a container ID, nobody for an unknown owner. This is what GC keeps.
    pub fn is_owned_by(&self, valid: &HashSet<(&str, &str)>) -> bool {
        match self {
            Owner::Attachment {
                container_id,
                ifname,
            } => valid.contains(&(container_id.as_str(), ifname.as_str())),
            Owner::Container(cid) => valid.iter().any(|(c, _)| c == cid),
            Owner::Unknown => false,
        }
    }
}

/// One reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The reserved address (the file name).
    pub ip: IpAddr,
    /// The file content, whitespace-trimmed.
    pub content: String,
}

fn plausible_id(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Entry {
    /// Decodes the owner of this reservation.
    pub fn owner(&self) -> Owner {
        match self.content.split_once(LINE_BREAK) {
            Some((cid, ifname)) if plausible_id(cid) && plausible_id(ifname) => Owner::Attachment {
                container_id: cid.to_owned(),
                ifname: ifname.to_owned(),
            },
            None if plausible_id(&self.content) => Owner::Container(self.content.clone()),
            _ => Owner::Unknown,
        }
    }

    /// Whether this is exactly `(id, ifname)`'s reservation (current format).
    pub fn matches_attachment(&self, id: &str, ifname: &str) -> bool {
        self.content == reservation_content(id, ifname)
    }

    /// Whether this is an old-format reservation of container `id`.
    pub fn matches_container(&self, id: &str) -> bool {
        self.content == id.trim()
    }
}

/// A reservation store. Implementations must be used under the store's
/// lock (the disk store only hands one out through `DiskStore::lock`).
///
/// The provided methods implement the reference plugin's matching rules on
/// top of [`Store::list`] and [`Store::release`].
pub trait Store {
    /// Reserves `ip` for `(id, ifname)` and records it as the last address
    /// reserved from range set `rangeset_idx`. `Ok(false)`: already taken.
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        rangeset_idx: usize,
    ) -> Result<bool, StoreError>;

    /// The last address reserved from range set `rangeset_idx`, if recorded
    /// and parseable.
    fn last_reserved(&mut self, rangeset_idx: usize) -> Result<Option<IpAddr>, StoreError>;

    /// Removes the reservation of `ip` (absent: no error).
    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError>;

    /// Every reservation.
    fn list(&mut self) -> Result<Vec<Entry>, StoreError>;

    /// Addresses owned by `(id, ifname)`, including old-format files that
    /// hold only `id` (Go's `GetByID`).
    fn find_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|e| e.matches_attachment(id, ifname) || e.matches_container(id))
            .map(|e| e.ip)
            .collect())
    }

    /// Releases every address of `(id, ifname)`; when there is none, every
    /// old-format address of container `id` (Go's `ReleaseByID`). Returns
    /// the released addresses.
    fn release_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let entries = self.list()?;
        let mut ips: Vec<IpAddr> = entries
            .iter()
            .filter(|e| e.matches_attachment(id, ifname))
            .map(|e| e.ip)
            .collect();
        if ips.is_empty() {
            ips = entries
                .iter()
                .filter(|e| e.matches_container(id))
                .map(|e| e.ip)
                .collect();
        }
        for ip in &ips {
            self.release(*ip)?;
        }
        Ok(ips)
    }
}

/// In-memory store with the same semantics as the disk store.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    /// Reservations: address → raw content.
    pub files: BTreeMap<IpAddr, String>,
    /// `last_reserved_ip.<idx>`.
    pub last: HashMap<usize, IpAddr>,
}

impl Store for MemStore {
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        rangeset_idx: usize,
    ) -> Result<bool, StoreError> {
        if self.files.contains_key(&ip) {
            return Ok(false);
        }
        self.files.insert(ip, reservation_content(id, ifname));
        self.last.insert(rangeset_idx, ip);
        Ok(true)
    }

    fn last_reserved(&mut self, rangeset_idx: usize) -> Result<Option<IpAddr>, StoreError> {
        Ok(self.last.get(&rangeset_idx).copied())
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        self.files.remove(&ip);
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .files
            .iter()
            .map(|(ip, c)| Entry {
                ip: *ip,
                content: c.trim().to_owned(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn owners() {
        let e = |c: &str| Entry {
            ip: ip("10.0.0.2"),
            content: c.into(),
        };
        assert_eq!(
            e("c1\r\neth0").owner(),
            Owner::Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }
        );
        assert_eq!(e("c1").owner(), Owner::Container("c1".into()));
        assert_eq!(e("").owner(), Owner::Unknown);
        assert_eq!(e("a b").owner(), Owner::Unknown);
    }

    #[test]
    fn owned_by() {
        let valid: HashSet<(&str, &str)> = [("c1", "eth0")].into_iter().collect();
        let e = |c: &str| Entry {
            ip: ip("10.0.0.2"),
            content: c.into(),
        };
        assert!(e("c1\r\neth0").owner().is_owned_by(&valid));
        assert!(!e("c1\r\neth1").owner().is_owned_by(&valid));
        assert!(e("c1").owner().is_owned_by(&valid));
        assert!(!e("c2").owner().is_owned_by(&valid));
        assert!(!e("").owner().is_owned_by(&valid));
    }

    #[test]
    fn release_by_id_prefers_new_format() {
        let mut s = MemStore::default();
        s.files.insert(ip("10.0.0.2"), "c1\r\neth0".into());
        s.files.insert(ip("10.0.0.3"), "c1".into());
        s.files.insert(ip("10.0.0.4"), "c1\r\neth1".into());
        assert_eq!(
            s.find_by_id("c1", "eth0").expect("find"),
            vec![ip("10.0.0.2"), ip("10.0.0.3")]
        );
        assert_eq!(
            s.release_by_id("c1", "eth0").expect("rel"),
            vec![ip("10.0.0.2")]
        );
        // Nothing left in the new format for eth0: the old-format file goes.
        assert_eq!(
            s.release_by_id("c1", "eth0").expect("rel"),
            vec![ip("10.0.0.3")]
        );
        assert!(s.release_by_id("c1", "eth0").expect("rel").is_empty());
        assert_eq!(s.files.len(), 1);
    }
}
