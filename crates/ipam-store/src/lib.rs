//! Disk store and allocator behind the `host-local` IPAM plugin.
//!
//! The on-disk layout is the one of the reference Go plugin
//! (`containernetworking/plugins` `host-local`), so both implementations can
//! share one store directory:
//!
//! * `<dataDir>/<network>/` (mode 0755) holds one file per reserved address,
//!   named by the address' canonical text and containing
//!   `<containerID>\r\n<ifname>` (no trailing newline);
//! * `last_reserved_ip.<rangeSetIndex>` holds the last address handed out of
//!   each range set (round robin);
//! * `lock` is `flock(LOCK_EX)`ed around every operation;
//! * `.rcni-owners` is our owner index (a verified hint, see [`index`]); the
//!   reference plugin ignores it.
//!
//! Modules: [`ip`] (address arithmetic and Go-compatible parsing),
//! [`range`] / [`range_set`] (canonicalisation and validation),
//! [`store`] (the [`Store`] trait, an in-memory fake), [`disk`], [`index`] and
//! [`lock`] (the real store), [`allocator`] (round-robin allocation).

pub mod allocator;
pub mod disk;
pub mod error;
pub mod index;
pub mod ip;
pub mod lock;
pub mod range;
pub mod range_set;
pub mod store;

pub use allocator::{Allocation, Allocator};
pub use disk::{DiskStore, LockedStore, Prepared};
pub use error::{AllocError, ConfigError, StoreError};
pub use range::{Range, RawRange};
pub use range_set::RangeSet;
pub use store::{Entry, MemStore, Owner, Store};
