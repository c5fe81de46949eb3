//! Generation: schedules of valid ops.
//!
//! Raw ops are drawn from a weighted, state-free strategy; [`Reference::filter`] then keeps
//! those whose precondition holds where they stand. Shrinking works on the raw list (drop
//! an op, lower a number) and the filter keeps every shrunk schedule valid, which is what
//! proptest-state-machine's sequential strategy achieves with more machinery.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::reference::Reference;
use crate::transition::{Op, Schedule};

/// At most this many masters.
pub const MAX_MASTERS: usize = 2;
/// Between these many worker names.
pub const WORKERS: std::ops::RangeInclusive<usize> = 3..=5;
/// Between these many hosts (`WorkerGroup` processes).
pub const HOSTS: std::ops::RangeInclusive<usize> = 1..=2;
/// Between these many members per host.
pub const HOST_MEMBERS: std::ops::RangeInclusive<usize> = 2..=4;
/// At most this many ops in a schedule.
pub const MAX_OPS: usize = 30;
/// At most this many raw ops are drawn; about half survive the preconditions.
const RAW_OPS: usize = 2 * MAX_OPS;
/// At most this many calls fail in a row: a blip the worker rides out within a TTL
/// (three retries take well under a second).
pub const MAX_FAILED_CALLS: u64 = 3;
/// The longest single `Advance`: several TTLs, a third of `reap_after`.
pub const MAX_ADVANCE_MS: u64 = 10_000;

/// Whole schedules.
pub fn schedule() -> impl Strategy<Value = Schedule> {
    (1..=MAX_MASTERS, WORKERS, HOSTS, HOST_MEMBERS).prop_flat_map(
        |(masters, workers, hosts, members)| {
            vec(raw_op(masters, workers, hosts, members), 1..=RAW_OPS).prop_map(move |raw| {
                let mut ops = Reference::new(masters, workers, hosts, members).filter(raw);
                ops.truncate(MAX_OPS);
                Schedule {
                    masters,
                    workers,
                    hosts,
                    members,
                    ops,
                }
            })
        },
    )
}

/// One op, before preconditions, weighted so that worker lifecycles dominate and faults and
/// time are frequent enough to matter; hosts get a modest share.
fn raw_op(
    masters: usize,
    workers: usize,
    hosts: usize,
    members: usize,
) -> impl Strategy<Value = Op> {
    let w = 0..workers;
    let m = 0..masters;
    let h = 0..hosts;
    let i = 0..members;
    prop_oneof![
        6 => w.clone().prop_map(|w| Op::Join { w }),
        3 => (w.clone(), 0..4u32).prop_map(|(w, v)| Op::Update { w, v }),
        2 => w.clone().prop_map(|w| Op::Leave { w }),
        2 => w.clone().prop_map(|w| Op::Crash { w }),
        2 => w.clone().prop_map(|w| Op::Restart { w }),
        1 => w.clone().prop_map(|w| Op::Evict { w }),
        1 => w.clone().prop_map(|w| Op::Hang { w }),
        2 => w.clone().prop_map(|w| Op::Unhang { w }),
        2 => w.clone().prop_map(|w| Op::Partition { w }),
        3 => w.clone().prop_map(|w| Op::Heal { w }),
        1 => (w, 1..=MAX_FAILED_CALLS).prop_map(|(w, n)| Op::FailCalls { w, n }),
        1 => m.clone().prop_map(|m| Op::PartitionMaster { m }),
        2 => m.clone().prop_map(|m| Op::HealMaster { m }),
        1 => m.clone().prop_map(|m| Op::HangMaster { m }),
        2 => m.clone().prop_map(|m| Op::UnhangMaster { m }),
        1 => (m.clone(), 1..=MAX_FAILED_CALLS).prop_map(|(m, n)| Op::FailMasterCalls { m, n }),
        1 => m.clone().prop_map(|m| Op::DropWatch { m }),
        1 => Just(Op::Compact),
        1 => m.prop_map(|m| Op::RestartMaster { m }),
        5 => (100..=MAX_ADVANCE_MS).prop_map(|millis| Op::Advance { millis }),
        3 => h.clone().prop_map(|h| Op::HostStart { h }),
        1 => h.clone().prop_map(|h| Op::HostCrash { h }),
        1 => h.clone().prop_map(|h| Op::HostRestart { h }),
        1 => (h.clone(), i.clone()).prop_map(|(h, i)| Op::HostRemove { h, i }),
        1 => (h.clone(), i.clone()).prop_map(|(h, i)| Op::HostEvict { h, i }),
        2 => (h.clone(), i, 0..4u32).prop_map(|(h, i, v)| Op::HostUpdate { h, i, v }),
        1 => h.clone().prop_map(|h| Op::HostLeave { h }),
        1 => h.clone().prop_map(|h| Op::HostHang { h }),
        1 => h.clone().prop_map(|h| Op::HostUnhang { h }),
        1 => h.clone().prop_map(|h| Op::HostPartition { h }),
        1 => h.clone().prop_map(|h| Op::HostHeal { h }),
        1 => (h, 1..=MAX_FAILED_CALLS).prop_map(|(h, n)| Op::HostFailCalls { h, n }),
    ]
}
