//! The kit's one error: every message says what to do about it.

use std::time::Duration;

/// A boxed error from a library the kit calls (testcontainers, bollard, the OS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the kit could not give a test its etcd (or its Docker engine). The message says what
/// to do; nothing is ever skipped for want of Docker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No Docker engine answers.
    #[error(
        "the Docker engine does not answer ({message}): the etcd tests run etcd in Docker; \
         install Docker (Debian: apt-get install docker.io), start its daemon (or point \
         DOCKER_HOST at one), or run `cargo xtask test`, which says what is missing"
    )]
    DockerUnavailable {
        /// What the client said.
        message: String,
    },

    /// The engine refuses the API version testcontainers' Docker client (bollard) speaks.
    #[error(
        "the Docker engine {engine} refuses testcontainers' Docker client (bollard {client}): \
         {message}; keep bollard at the version pinned in testkit/Cargo.toml and Cargo.lock \
         (ARCHITECTURE.md, \"The test kit\", says why), or use a Docker engine that speaks \
         the client's API version"
    )]
    EngineRejectsClient {
        /// The engine's version and API version, as far as known.
        engine: String,
        /// The client's API version.
        client: String,
        /// What the engine answered.
        message: String,
    },

    /// The etcd image is not there.
    #[error(
        "etcd image {image} not found: run `cargo xtask test` (or `cargo xtask etcd-image`), \
         which builds muster-etcd:local from Debian's etcd-server where no registry can be \
         reached, or set {var} to an etcd image you have",
        var = crate::docker::IMAGE_VAR
    )]
    ImageMissing {
        /// The image asked for.
        image: String,
    },

    /// etcd exited before it logged that it serves clients.
    #[error(
        "etcd container from {image} exited before it logged {line:?}; its log:\n{log}",
        line = crate::docker::READY_LINE
    )]
    ExitedBeforeReady {
        /// The image.
        image: String,
        /// The end of its log.
        log: String,
    },

    /// etcd did not log that it serves clients in time.
    #[error(
        "etcd container from {image} did not log {line:?} within {within:?}{hint}; its log:\n{log}",
        line = crate::docker::READY_LINE
    )]
    NotReady {
        /// The image.
        image: String,
        /// How long it was given.
        within: Duration,
        /// What may explain it (a cluster member needs a quorum running), or nothing.
        hint: &'static str,
        /// The end of its log, as far as it could be read.
        log: String,
    },

    /// A Docker call failed for another reason.
    #[error("{what} failed: {source}")]
    Docker {
        /// The call, e.g. `docker pause <id>`.
        what: String,
        /// What the client said.
        #[source]
        source: BoxError,
    },

    /// No member of a cluster reports itself leader.
    #[error("no etcd member reports itself leader after {within:?}: {reports}")]
    NoLeader {
        /// How long the election was given.
        within: Duration,
        /// What each member said.
        reports: String,
    },

    /// etcd answered something the kit cannot use (a metrics scrape, `etcdctl`'s output, a
    /// leadership transfer that did not happen).
    #[error("{what}: {message}")]
    Etcd {
        /// What was asked, of whom.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// The kit's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
