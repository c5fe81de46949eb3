//! The steps a schedule is made of, and the schedule itself.
//!
//! Workers and masters are addressed by index: worker `w` is the member named `w{w}`, on its
//! own store client (its "machine": every process of that worker shares it, so a fault on the
//! client hits whichever process runs there); master `m` likewise has its own client.

use std::fmt;

/// One step of a simulated run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Starts a new process for worker `w` (fresh incarnation, `OnDuplicate::Wait`) and
    /// registers it in a spawned task (registration may wait for the name or the network).
    Join { w: usize },
    /// Replaces the metadata of worker `w` (version `v`, carried in `cpus`).
    Update { w: usize, v: u32 },
    /// Worker `w` leaves gracefully (in a spawned task: a faulted leave retries for a TTL).
    Leave { w: usize },
    /// Worker `w`'s process crashes (`abandon`): its lease runs out, its record stays.
    Crash { w: usize },
    /// Worker `w` crashes and a new process (new incarnation) takes the name over, waiting
    /// for the old liveness to expire.
    Restart { w: usize },
    /// An operator evicts worker `w` (`muster_master::evict`, on a client never faulted) and
    /// the current process of `w` is gone: it stops by itself if the eviction named it (it
    /// must report `Status::Evicted` and never register again); otherwise (the record found
    /// was an older process's, or there was none yet) the operator kills it, as a crash.
    Evict { w: usize },
    /// Worker `w`'s client hangs: calls and watch deliveries are held (keep-alives stop).
    Hang { w: usize },
    /// Releases a hung worker client.
    Unhang { w: usize },
    /// Cuts worker `w`'s client off: every call fails.
    Partition { w: usize },
    /// Reconnects worker `w`'s client.
    Heal { w: usize },
    /// Worker `w`'s next `n` store calls fail (a blip shorter than a TTL).
    FailCalls { w: usize, n: u64 },
    /// Cuts master `m`'s client off: its watch ends, its calls fail.
    PartitionMaster { m: usize },
    /// Reconnects master `m`'s client.
    HealMaster { m: usize },
    /// Master `m`'s client hangs: calls and watch deliveries are held (a silent stall).
    HangMaster { m: usize },
    /// Releases a hung master client.
    UnhangMaster { m: usize },
    /// Master `m`'s next `n` store calls fail.
    FailMasterCalls { m: usize, n: u64 },
    /// Ends master `m`'s open watch streams, as a broken connection would.
    DropWatch { m: usize },
    /// Compacts the store's history up to the current revision.
    Compact,
    /// Shuts master `m` down and starts a new one on the same client.
    RestartMaster { m: usize },
    /// Lets simulated time pass.
    Advance { millis: u64 },
    /// Starts a new process for host `h` (fresh incarnation, `OnDuplicate::Wait`): a
    /// `WorkerGroup` whose lease is granted, then every member of the host added, in a
    /// spawned task.
    HostStart { h: usize },
    /// Host `h`'s process crashes (`abandon`): its one lease runs out and every member on it
    /// goes `Suspect`, in one revision.
    HostCrash { h: usize },
    /// Host `h` crashes and a new process (new incarnation) adds every member again, each
    /// waiting for its old liveness key to expire.
    HostRestart { h: usize },
    /// Member `i` of host `h` leaves (`WorkerGroup::remove`): `Left`, the others stay.
    HostRemove { h: usize, i: usize },
    /// An operator evicts member `i` of host `h` (`muster_master::evict`, on a client never
    /// faulted). If the eviction named the host's current process, the group must stop
    /// announcing that member (`MemberStatus::Evicted`, never writing its keys again) while
    /// its siblings keep the lease; an older process's record is simply gone.
    HostEvict { h: usize, i: usize },
    /// Replaces the metadata of member `i` of host `h` (version `v`; the drain version is
    /// `WorkerGroup::drain`).
    HostUpdate { h: usize, i: usize, v: u32 },
    /// Host `h` leaves gracefully (`WorkerGroup::leave`, in a spawned task): every member
    /// `Left`, then the lease is revoked.
    HostLeave { h: usize },
    /// Host `h`'s client hangs.
    HostHang { h: usize },
    /// Releases a hung host client.
    HostUnhang { h: usize },
    /// Cuts host `h`'s client off.
    HostPartition { h: usize },
    /// Reconnects host `h`'s client.
    HostHeal { h: usize },
    /// Host `h`'s next `n` store calls fail (a blip shorter than a TTL).
    HostFailCalls { h: usize, n: u64 },
}

impl Op {
    /// A short name of the kind of step, for coverage counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Join { .. } => "join",
            Op::Update { .. } => "update",
            Op::Leave { .. } => "leave",
            Op::Crash { .. } => "crash",
            Op::Restart { .. } => "restart",
            Op::Evict { .. } => "evict",
            Op::Hang { .. } => "hang",
            Op::Unhang { .. } => "unhang",
            Op::Partition { .. } => "partition",
            Op::Heal { .. } => "heal",
            Op::FailCalls { .. } => "fail-calls",
            Op::PartitionMaster { .. } => "partition-master",
            Op::HealMaster { .. } => "heal-master",
            Op::HangMaster { .. } => "hang-master",
            Op::UnhangMaster { .. } => "unhang-master",
            Op::FailMasterCalls { .. } => "fail-master-calls",
            Op::DropWatch { .. } => "drop-watch",
            Op::Compact => "compact",
            Op::RestartMaster { .. } => "restart-master",
            Op::Advance { .. } => "advance",
            Op::HostStart { .. } => "host-start",
            Op::HostCrash { .. } => "host-crash",
            Op::HostRestart { .. } => "host-restart",
            Op::HostRemove { .. } => "host-remove",
            Op::HostEvict { .. } => "host-evict",
            Op::HostUpdate { .. } => "host-update",
            Op::HostLeave { .. } => "host-leave",
            Op::HostHang { .. } => "host-hang",
            Op::HostUnhang { .. } => "host-unhang",
            Op::HostPartition { .. } => "host-partition",
            Op::HostHeal { .. } => "host-heal",
            Op::HostFailCalls { .. } => "host-fail-calls",
        }
    }

    /// Every kind, as [`kind`](Self::kind) names them.
    pub const KINDS: [&'static str; 32] = [
        "join",
        "update",
        "leave",
        "crash",
        "restart",
        "evict",
        "hang",
        "unhang",
        "partition",
        "heal",
        "fail-calls",
        "partition-master",
        "heal-master",
        "hang-master",
        "unhang-master",
        "fail-master-calls",
        "drop-watch",
        "compact",
        "restart-master",
        "advance",
        "host-start",
        "host-crash",
        "host-restart",
        "host-remove",
        "host-evict",
        "host-update",
        "host-leave",
        "host-hang",
        "host-unhang",
        "host-partition",
        "host-heal",
        "host-fail-calls",
    ];
}

/// The name of worker `w`.
pub fn worker_name(w: usize) -> String {
    format!("w{w}")
}

/// The name of member `i` of host `h`.
pub fn host_member_name(h: usize, i: usize) -> String {
    format!("host{h}-m{i}")
}

/// A whole run: how many masters, worker names and hosts, and the steps.
///
/// Its `Debug` output is Rust source: paste it into `sut::run(&...)` to replay a case.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How many masters run (each on its own client), 1 or 2.
    pub masters: usize,
    /// How many worker names (`w0`, `w1`, ...).
    pub workers: usize,
    /// How many hosts (`WorkerGroup` processes, each on its own client).
    pub hosts: usize,
    /// How many members each host holds (`host{h}-m0`, `host{h}-m1`, ...).
    pub members: usize,
    /// The steps, each valid in the state the ones before it leave (see `reference.rs`).
    pub ops: Vec<Op>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Schedule {{ masters: {}, workers: {}, hosts: {}, members: {}, ops: vec![",
            self.masters, self.workers, self.hosts, self.members
        )?;
        for op in &self.ops {
            writeln!(f, "    Op::{op:?},")?;
        }
        write!(f, "] }}")
    }
}
