//! # muster-core
//!
//! The part of muster that knows nothing about networks, runtimes or clocks.
//!
//! # Layout
//!
//! - `store`: [`Store`], the slice of etcd v3 muster needs (leases, guarded transactions,
//!   list at a revision, watch from a revision), and its types. Backends implement it:
//!   `muster-etcd-backend` over real etcd, `muster-mem-backend` in memory on a simulated
//!   clock.
//! - `keyspace`: [`Keyspace`], the two keys per member under a prefix, the eviction markers
//!   beside them, and how any key under it classifies ([`KeyClass`], [`BadKeyReason`]).
//! - `member`: [`MemberInfo`], [`Record`], [`Liveness`]: the keys' JSON values;
//!   [`validate_name`] (1 to 128 characters), [`validate_addr`] (`HOST:PORT`, or empty for
//!   no address), [`validate_label_key`], all three applied by [`MemberInfo::validate`].
//! - `labels`: [`Labels`], a member's labels, compact (two allocations, however many).
//! - `protocol`: every transaction of the two-key protocol (register, update, leave, evict,
//!   reap) and the one way to read a member's values back, as [`Keyspace`] methods;
//!   [`EvictionMarker`], the value an eviction leaves.
//! - `membership`: [`Membership`], the pure state machine. Observations and `now` in,
//!   [`Transition`]s out.
//! - `backoff`: [`Backoff`], capped exponential backoff with jitter, shared by master and
//!   worker.
//! - `error`: [`Error`], the one error type every backend maps into, and the one
//!   retryability rule ([`Error::is_retryable`]).
//! - `testing` (feature `testing`): the backend conformance suite.

mod backoff;
mod error;
mod keyspace;
mod labels;
mod member;
pub mod membership;
mod protocol;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::Backoff;
pub use error::{Error, Result};
pub use keyspace::{BadKeyReason, KeyClass, KeyKind, Keyspace};
pub use labels::Labels;
pub use member::{
    validate_addr, validate_label_key, validate_name, Incarnation, Liveness, MemberInfo, Record,
    MAX_NAME_LEN,
};
pub use membership::{
    BadKey, Member, MemberState, Membership, Reap, Relisting, Skipped, Step, Transition,
    TransitionKind,
};
pub use protocol::EvictionMarker;
pub use store::{
    Condition, Event, EventKind, KeyValue, Lease, LeaseId, Listing, Op, Revision, Store,
    StoreStatus, Txn, TxnOutcome, WatchBatch, WatchStream,
};
