//! The faults a real deployment meets, against real etcd in Docker: one binary, one module
//! per scenario (issue 4). After every fault heals, every master's view equals etcd's truth,
//! and no healthy worker is ever reported missing.
//!
//! 1. `failover`: a 3-member cluster loses its leader (the member serving the master's
//!    watch), then its quorum; and a client with one member dead.
//! 2. `restart`: a single etcd crashes and restarts with its data.
//! 3. `replaced`: etcd replaced by an empty one, a new cluster on the same port.
//! 4. `compaction`: the master cut off while etcd compacts its history.
//! 5. `partition`: one worker cut off from etcd for longer than its TTL.
//! 6. `hung`: etcd frozen with `docker pause`, then thawed.
//! 7. `soak`: two hundred workers churning against the 3-member cluster, with a leader kill
//!    in the middle.
//!
//! `support`: connecting, waits with deadlines, the transition recorder, etcd's history
//! replayed through a fresh state machine, a master's view compared with a fresh listing.
//!
//! Each scenario starts its own etcd ([`muster_testkit::cluster::Cluster`]), so scenarios run
//! in parallel without sharing state. Real time throughout, never tokio's paused clock; each
//! prints what it measured (`[faults] ...` lines, shown with `--nocapture`). The whole binary
//! takes about a minute on two cores (the soak, ~35 s, is the longest).

mod compaction;
mod failover;
mod hung;
mod partition;
mod replaced;
mod restart;
mod soak;
mod support;
