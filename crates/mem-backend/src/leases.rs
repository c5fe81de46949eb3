//! The lease table: ids, TTLs, deadlines and the keys bound to each lease.
//!
//! mini-redis style: a `BTreeSet<(Instant, LeaseId)>` orders deadlines so the next lease to
//! expire is always the first entry, and [`Leases::pop_expired`] takes them out one at a
//! time. The table knows nothing about keys' values or revisions; the
//! [`State`](crate::state::State) turns an expired lease into one delete revision.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_core::LeaseId;
use tokio::time::Instant;

use crate::error::MemError;

/// etcd's maximum lease TTL (`MaxLeaseTTL`, 9,000,000,000 s).
pub(crate) const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The first lease id handed out.
///
/// Far from small integers on purpose: a test that passes a revision where a lease id
/// belongs (or the other way round) fails instead of passing by coincidence.
const FIRST_LEASE_ID: LeaseId = 0x6d75_7374_0000_0001;

/// One live lease.
#[derive(Debug)]
struct Entry {
    /// The granted TTL, returned by every keep-alive.
    ttl: Duration,
    /// When the lease expires unless kept alive: last grant or keep-alive plus `ttl`.
    deadline: Instant,
    /// The keys bound to this lease, sorted: expiry deletes them in key order, like etcd.
    keys: BTreeSet<String>,
}

/// Every live lease.
#[derive(Debug)]
pub(crate) struct Leases {
    /// The leases by id.
    by_id: BTreeMap<LeaseId, Entry>,
    /// `(deadline, id)` of every lease in `by_id`: the first entry expires first.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    /// The id the next grant tries first; a plain counter keeps runs deterministic.
    next_id: LeaseId,
}

impl Leases {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self {
            by_id: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_id: FIRST_LEASE_ID,
        }
    }

    /// Grants a lease of exactly `ttl` (already normalised by the caller) at `now`.
    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> Result<LeaseId, MemError> {
        let deadline = deadline(now, ttl)?;
        let id = self.allocate_id();
        self.by_id.insert(
            id,
            Entry {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        Ok(id)
    }

    /// Restarts a lease's TTL at `now`; returns the TTL, or `None` if the lease is gone.
    pub(crate) fn renew(&mut self, id: LeaseId, now: Instant) -> Result<Duration, MemError> {
        let entry = self.by_id.get_mut(&id).ok_or(MemError::LeaseNotFound(id))?;
        let new_deadline = deadline(now, entry.ttl)?;
        self.deadlines.remove(&(entry.deadline, id));
        entry.deadline = new_deadline;
        self.deadlines.insert((new_deadline, id));
        Ok(entry.ttl)
    }

    /// Removes a lease; returns its keys, or `None` if it was not there.
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<BTreeSet<String>> {
        let entry = self.by_id.remove(&id)?;
        self.deadlines.remove(&(entry.deadline, id));
        Some(entry.keys)
    }

    /// Removes the first lease whose deadline is at or before `now`; returns its id and keys.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(LeaseId, BTreeSet<String>)> {
        let &(deadline, id) = self.deadlines.first()?;
        if deadline > now {
            return None;
        }
        let keys = self.remove(id).unwrap_or_default();
        Some((id, keys))
    }

    /// When the next lease expires, if any lease is live.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Whether the lease is live.
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Records that `key` is bound to lease `id` (no-op for a missing lease).
    pub(crate) fn attach(&mut self, id: LeaseId, key: &str) {
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.keys.insert(key.to_owned());
        }
    }

    /// Records that `key` is no longer bound to lease `id`.
    pub(crate) fn detach(&mut self, id: LeaseId, key: &str) {
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.keys.remove(key);
        }
    }

    /// How many leases are live.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The next free id: counts up from [`FIRST_LEASE_ID`], skipping `0`, negatives and ids
    /// in use (which only matters after the counter wrapped, i.e. never in practice).
    fn allocate_id(&mut self) -> LeaseId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id > 0 && !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }
}

/// `now + ttl`, or an error if that is not representable.
fn deadline(now: Instant, ttl: Duration) -> Result<Instant, MemError> {
    now.checked_add(ttl)
        .ok_or(MemError::TtlTooLarge { ttl, max: MAX_TTL })
}
