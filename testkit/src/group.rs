//! A test's own group: a prefix on the etcd shared by the tests of one test binary.
//!
//! Tests that run at the same time share one etcd container ([`etcd::shared`]) and stay
//! out of each other's way by prefix: each test names its group, and sees only its keys.
//! The suites build their own helpers (program flags, master and worker settings) on top.

use std::sync::Arc;

use muster_core::Keyspace;
use muster_etcd_backend::EtcdStore;
use muster_master::View;

use crate::etcd::{self, Etcd};

/// One group under its own prefix on the shared etcd.
pub struct Group {
    /// Kept so that the container lives as long as the group.
    pub etcd: Arc<Etcd>,
    /// `/{suite}/{test}/`: tests sharing etcd never see each other.
    pub prefix: String,
}

impl Group {
    /// The group of the test named `test` in `suite` (e.g. `programs`, `it`).
    pub fn new(suite: &str, test: &str) -> Self {
        Group {
            etcd: etcd::shared(),
            prefix: format!("/{suite}/{test}/"),
        }
    }

    /// etcd's endpoint.
    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// A client of its own (its own connections), as a separate process would have.
    pub async fn store(&self) -> EtcdStore {
        self.etcd.store().await
    }

    /// The key layout of this group.
    pub fn keyspace(&self) -> Keyspace {
        Keyspace::new(self.prefix.as_str()).expect("a valid prefix")
    }

    /// The truth: the view a master starting now would rebuild, from a fresh listing.
    pub async fn truth(&self) -> View {
        muster_master::list(&self.store().await, &self.prefix)
            .await
            .unwrap_or_else(|err| panic!("list {}: {err}", self.prefix))
    }
}
