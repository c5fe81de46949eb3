//! # muster-master
//!
//! A [`Master`] watches a group's prefix and holds an exact, live view of its members:
//! who is `Alive`, who is `Suspect`, and every transition in between.
//!
//! ```no_run
//! # async fn example(store: impl muster_core::Store) -> Result<(), muster_master::Error> {
//! use muster_master::{Event, Master, MasterConfig};
//!
//! let master = Master::start(store, MasterConfig::new("/muster/web/"))?;
//! let mut events = master.subscribe();
//! for member in events.snapshot.members.values() {
//!     println!("{} is {}", member.name(), member.state);
//! }
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Transition { position, transition: t } => {
//!             println!("{position}: {} {}", t.member.name(), t.kind)
//!         }
//!         Event::Synced { revision, members, .. } => println!("{members} members at {revision}"),
//!         Event::Lagged { .. } => events = master.subscribe(), // start again from a snapshot
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `master`: [`Master`], the handle (`view`, `subscribe`, `endpoints`, `discover`,
//!   `wait_until`, `health`, `shutdown`).
//! - `config`: [`MasterConfig`]: prefix, reaping, timeouts, subscriber buffer.
//! - `shared`: what the handle hands out ([`View`], [`Subscription`] of [`Event`]s at a
//!   [`Position`], [`Health`]) and the one lock that keeps them consistent.
//! - `filter`: [`Filter`], which members a caller wants (states, label rules), one rule
//!   for the library and the HTTP API.
//! - `discover`: the view as callers need it: [`Discover`], a stream of tower
//!   [`Change`]s, and [`EndpointSet`], a watch of [`Endpoints`] snapshots.
//! - `task`: the list + watch loop that feeds [`muster_core::Membership`] and performs reaps.
//! - `ops`: the operator one-shots [`list`] and [`evict`], no master needed.
//! - `report`: the bad-input warnings (bad keys, undecodable values), rate-limited.
//! - `error`: [`Error`], what a master call can fail with.
//!
//! # How it stays exact
//!
//! It lists both sub-prefixes at one revision `R`, then watches from `R + 1`, so no event
//! between the list and the watch is lost. A broken watch is resumed from the last revision
//! applied; events already applied are ignored. If that revision was compacted, it lists
//! again and the state machine emits the transitions that explain the difference.

mod config;
mod discover;
mod error;
mod filter;
mod master;
mod ops;
mod report;
mod shared;
mod task;

pub use config::MasterConfig;
pub use discover::{Change, Discover, EndpointSet, Endpoints};
pub use error::Error;
pub use filter::{Filter, FilterError};
pub use master::Master;
pub use ops::{evict, list, Eviction, OpsError, DEFAULT_EVICTION_HOLD};
pub use shared::{Epoch, Event, Health, Position, Subscription, View};
