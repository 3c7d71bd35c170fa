//! High availability, Remus-style: a primary VM (`kiln run --standby
//! HOST:PORT`) streams checkpoints of itself — vCPUs, devices, and the
//! pages of guest memory written since the last one — to a standby
//! process (`kiln standby --listen PORT`) at a fixed interval. The
//! primary's network output is held until the standby acknowledged the
//! checkpoint that produced it ([`gate`]), so a client never sees a state
//! the standby lacks. When the primary dies (the connection ends without
//! its "done"), the standby resumes the VM from the last whole checkpoint
//! ([`standby`]), as `kiln run --from-snapshot` resumes a snapshot.
//!
//! Checkpoints use the snapshot machinery (`crate::snapshot`): the guest
//! parks every vCPU on the snapshot interrupt, vCPU 0 copies the dirty
//! pages — KVM's dirty log for the guest's writes, vm-memory's bitmap for
//! the VMM's own (virtio buffers and rings) — and the devices' state, and
//! the vCPUs run on while a thread sends it ([`primary`]).

pub mod gate;
pub mod primary;
pub mod standby;
pub mod wire;

use std::time::Duration;

pub use primary::{Replicator, Summary};
pub use standby::{serve, StandbyConfig, StandbyOutcome};

/// The checkpoint interval when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// Why replication failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The connection failed.
    #[error("{what}: {cause}")]
    Link {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// The peer broke the protocol.
    #[error("checkpoint stream: {0}")]
    Protocol(String),
    /// The standby refused the primary.
    #[error("the standby refused: {0}")]
    Refused(String),
    /// This VM cannot be replicated (yet).
    #[error("cannot replicate this VM: {0}")]
    Unsupported(String),
    /// The standby's copy could not be written: it holds neither the last
    /// checkpoint nor the one before, so it must not resume.
    #[error("the standby's copy of the VM is damaged, not resuming: {0}")]
    Damaged(String),
    /// The primary went away before the standby had a whole checkpoint.
    #[error("the primary went away before its first checkpoint arrived ({0}); nothing to resume")]
    NoCheckpoint(String),
}

/// Where and how often a primary sends checkpoints (`--standby`).
#[derive(Clone, Debug)]
pub struct StandbyTarget {
    /// `HOST:PORT` of `kiln standby --listen`.
    pub address: String,
    /// Time between checkpoints (the longest a reply is held back, plus
    /// the time to send and acknowledge a checkpoint).
    pub interval: Duration,
}
