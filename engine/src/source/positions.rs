//! What the source read at each epoch: the positions the checkpoint commits once every sink
//! has written the epoch.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the source read at one epoch.
#[derive(Debug, Default)]
pub struct EpochPositions {
    /// Per partition, the offset after the last record emitted at the epoch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Per partition, the fingerprint of that last record
    /// ([`crate::source::log_check::fingerprint`]).
    pub marks: BTreeMap<i32, u64>,
    /// Records emitted at the epoch (for backpressure).
    pub records: usize,
    /// Their payloads' bytes as read from the log (for backpressure).
    pub bytes: usize,
    /// Per owned partition, the receive time everything before which had been read when the
    /// epoch closed (set on the last live epoch of each close).
    pub received_until: BTreeMap<i32, i64>,
}

/// Source positions by epoch, shared by the source and the checkpoint operator of one worker
/// (same thread). An epoch leaves the map when it is checkpointed.
pub type PositionsByEpoch = Rc<RefCell<BTreeMap<u64, EpochPositions>>>;
