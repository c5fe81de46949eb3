//! Injected faults, per client: what the "network" between one client and the cluster does.
//!
//! Faults are per [`ClientId`] so a test can cut off one worker while the master and the
//! other workers carry on, which is exactly the situation muster must get right (a member
//! cut off from the quorum keeps running while its lease expires).

use std::collections::BTreeMap;
use std::fmt;

/// Identifies one client handle ([`MemStore`](crate::MemStore)) of a
/// [`MemCluster`](crate::MemCluster), so faults can target it.
///
/// Ids are handed out in order (`1`, `2`, ...) by [`MemCluster::client`](crate::MemCluster::client);
/// clones of a store share its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub(crate) u64);

impl ClientId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// What to do with a call from one client, right now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Let it through.
    Pass,
    /// Fail it as unavailable, with this message.
    Fail(String),
    /// Hold it until the faults change.
    Wait,
}

/// The faults injected for one client.
#[derive(Debug, Default, Clone)]
struct ClientFaults {
    /// Every call fails and watch streams end, until healed.
    partitioned: bool,
    /// Calls (and watch deliveries) are held until unhung.
    hung: bool,
    /// How many of the next calls fail.
    fail_next: u64,
}

/// The faults of every client that has any.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Per client; a client without an entry has no faults.
    clients: BTreeMap<ClientId, ClientFaults>,
}

impl Faults {
    /// Decides what happens to one call from `client`; consumes one `fail_next` if it fails
    /// because of it.
    pub(crate) fn gate_call(&mut self, client: ClientId) -> Gate {
        let Some(faults) = self.clients.get_mut(&client) else {
            return Gate::Pass;
        };
        if faults.partitioned {
            return Gate::Fail(partitioned_message(client));
        }
        if faults.hung {
            return Gate::Wait;
        }
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            let left = faults.fail_next;
            return Gate::Fail(format!(
                "injected failure for {client} (fail_next; {left} more to fail)"
            ));
        }
        Gate::Pass
    }

    /// Decides whether a watch stream of `client` may deliver its next item now.
    /// `fail_next` only counts calls, so it does not apply here.
    pub(crate) fn gate_delivery(&self, client: ClientId) -> Gate {
        match self.clients.get(&client) {
            Some(f) if f.partitioned => Gate::Fail(partitioned_message(client)),
            Some(f) if f.hung => Gate::Wait,
            _ => Gate::Pass,
        }
    }

    /// Cuts `client` off.
    pub(crate) fn partition(&mut self, client: ClientId) {
        self.entry(client).partitioned = true;
    }

    /// Reconnects `client`.
    pub(crate) fn heal(&mut self, client: ClientId) {
        self.entry(client).partitioned = false;
        self.tidy(client);
    }

    /// Makes the next `n` calls of `client` fail.
    pub(crate) fn fail_next(&mut self, client: ClientId, n: u64) {
        self.entry(client).fail_next = n;
        self.tidy(client);
    }

    /// Holds or releases the calls of `client`.
    pub(crate) fn set_hung(&mut self, client: ClientId, hung: bool) {
        self.entry(client).hung = hung;
        self.tidy(client);
    }

    /// Whether `client` is partitioned.
    pub(crate) fn is_partitioned(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_some_and(|f| f.partitioned)
    }

    /// The entry of `client`, created empty.
    fn entry(&mut self, client: ClientId) -> &mut ClientFaults {
        self.clients.entry(client).or_default()
    }

    /// Drops the entry of `client` if it holds no fault any more.
    fn tidy(&mut self, client: ClientId) {
        if let Some(f) = self.clients.get(&client) {
            if !f.partitioned && !f.hung && f.fail_next == 0 {
                self.clients.remove(&client);
            }
        }
    }
}

/// The message of every failure caused by a partition.
pub(crate) fn partitioned_message(client: ClientId) -> String {
    format!("{client} is partitioned from the cluster (injected fault)")
}
