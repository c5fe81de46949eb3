//! # muster-master
//!
//! A [`Master`] watches a group's prefix and holds an exact, live view of its members:
//! who is `Alive`, who is `Suspect`, and every transition in between.
//!
//! ```no_run
//! # async fn example(store: impl muster_core::Store) {
//! use muster_master::{Master, MasterConfig};
//!
//! let master = Master::start(store, MasterConfig::new("/muster/web/")).unwrap();
//! let mut events = master.subscribe();
//! for member in events.snapshot.members.values() {
//!     println!("{} is {}", member.name(), member.state);
//! }
//! while let Some(t) = events.next().await {
//!     println!("{} {} at revision {}", t.member.name(), t.kind, t.revision);
//! }
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Master`]: the handle (`members`, `subscribe`, `wait_until`, `health`, `shutdown`).
//! - [`MasterConfig`]: prefix, reaping, timeouts.
//! - [`View`], [`Subscription`], [`Health`]: what the handle hands out.
//! - `task`: the list + watch loop that feeds [`muster_core::Membership`] and performs reaps.
//! - [`Error`]: what can go wrong.
//!
//! # How it stays exact
//!
//! It lists both sub-prefixes at one revision `R`, then watches from `R + 1`, so no event
//! between the list and the watch is lost. A broken watch is resumed from the last revision
//! applied; events already applied are ignored. If that revision was compacted, it lists
//! again and the state machine emits the transitions that explain the difference.

mod config;
mod error;
mod master;
mod ops;
mod shared;
mod task;

pub use config::MasterConfig;
pub use error::Error;
pub use master::Master;
pub use ops::{evict, list, Eviction, OpsError};
pub use shared::{Health, Subscription, View};
