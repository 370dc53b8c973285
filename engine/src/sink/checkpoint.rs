//! The checkpoint operator: commits a worker's source positions once every sink on every
//! worker has written the epochs that read them, and reports what it committed to the
//! progress operator.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{Stream, StreamVec};

use crate::clickhouse::ClickHouseWriter;
use crate::clickhouse::io::IoRuntime;
use crate::clickhouse::rows::{CheckpointRow, ProgressRow, datetime};
use crate::recovery::LowWater;
use crate::source::positions::{EpochPositions, PositionsByEpoch};

/// Tenants whose events a worker has read and not yet reported (filled by the dataflow, drained
/// by the checkpoint operator of the same worker).
pub type NewTenants = Rc<RefCell<BTreeSet<String>>>;

/// What one worker's checkpoint tells the progress operator.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProgressReport {
    /// Per partition the worker owns, the receive time read through, as of the commit.
    pub received_until: BTreeMap<i32, i64>,
    /// Tenants first seen since the last report.
    pub tenants: Vec<String>,
}

/// How checkpoints are taken.
#[derive(Debug)]
pub struct CheckpointSettings {
    /// Epochs up to here were checkpointed by an earlier run and are only being replayed.
    pub replayed_through: u64,
    /// Tracks each partition's low water.
    pub low_water: LowWater,
}

/// Attaches the checkpoint operator to the union of every sink's completion stream. Its output
/// carries one report per committed batch of epochs, at the oldest epoch not yet committed.
pub fn checkpoint<'s>(
    done: Stream<'s, u64, Vec<()>>,
    positions: PositionsByEpoch,
    new_tenants: NewTenants,
    settings: CheckpointSettings,
    writer: ClickHouseWriter,
    sink: IoRuntime,
    sinks_frontier: Arc<AtomicU64>,
) -> StreamVec<'s, u64, ProgressReport> {
    let mut ledger = Ledger {
        topic: writer.topic().to_owned(),
        settings,
        committed: BTreeMap::new(),
        received_until: BTreeMap::new(),
    };
    done.unary_frontier(Pipeline, "Checkpoint", move |capability, _info| {
        let mut capability = Some(capability);
        move |(input, frontier), output| {
            input.for_each(|_, _| {});
            let (mut rows, newest) = ledger.rows_of_written(&mut positions.borrow_mut(), |epoch| {
                !frontier.less_equal(epoch)
            });
            // Several epochs may commit at once; a partition's newest row is the one kept.
            rows.reverse();
            let mut seen = BTreeSet::new();
            rows.retain(|row| seen.insert(row.partition));
            if !rows.is_empty() {
                sink.write_with_retry("checkpoint", || writer.checkpoint(&rows));
                sink.metrics.checkpoint_committed();
                tracing::debug!(epoch = ?newest, partitions = rows.len(), "checkpoint committed");
            }
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if newest.is_some() {
                let tenants: Vec<String> = std::mem::take(&mut *new_tenants.borrow_mut())
                    .into_iter()
                    .collect();
                output.session(&cap).give(ProgressReport {
                    received_until: ledger.received_until.clone(),
                    tenants,
                });
            }
            // Every sink has written every epoch before the frontier, on every worker.
            let written = frontier.frontier().first().copied().unwrap_or(u64::MAX);
            sinks_frontier.fetch_max(written, Ordering::AcqRel);
            match frontier.frontier().first() {
                Some(&time) if time > *cap.time() => cap.downgrade(&time),
                Some(_) => {}
                None => capability = None,
            }
        }
    })
}

/// What one worker has committed: per partition, the next offset and the receive time read
/// through.
struct Ledger {
    topic: String,
    settings: CheckpointSettings,
    committed: BTreeMap<i32, i64>,
    received_until: BTreeMap<i32, i64>,
}

impl Ledger {
    /// Takes from `positions` the epochs every sink has written (`written(epoch)`), oldest
    /// first, and returns the checkpoint rows of the partitions they moved on (several per
    /// partition when several epochs are taken at once) and the newest epoch taken. Epochs an
    /// earlier run committed (replayed to rebuild state) are taken without rows.
    fn rows_of_written(
        &mut self,
        positions: &mut BTreeMap<u64, EpochPositions>,
        written: impl Fn(&u64) -> bool,
    ) -> (Vec<CheckpointRow>, Option<u64>) {
        let mut rows = Vec::new();
        let mut newest = None;
        while let Some(entry) = positions.first_entry() {
            if !written(entry.key()) {
                break;
            }
            let epoch = *entry.key();
            let read = entry.remove();
            if epoch <= self.settings.replayed_through {
                continue;
            }
            newest = Some(epoch);
            self.received_until.extend(read.received_until);
            for (partition, next) in read.next_offsets {
                if self
                    .committed
                    .get(&partition)
                    .is_some_and(|done| *done >= next)
                {
                    continue;
                }
                self.committed.insert(partition, next);
                let (low, low_epoch) = self.settings.low_water.advance(partition, epoch, next);
                rows.push(CheckpointRow {
                    topic: self.topic.clone(),
                    partition,
                    next_offset: next,
                    epoch,
                    low_water: low,
                    low_water_epoch: low_epoch,
                    received_until: self.received_until.get(&partition).copied().unwrap_or(0),
                    written_at: datetime(crate::now_ms() as i64),
                    log_mark: read.marks.get(&partition).copied().unwrap_or(0),
                });
            }
        }
        (rows, newest)
    }
}

/// Writes `_progress` on worker 0 from every worker's reports: per tenant, complete up to the
/// least receive time read through over all partitions, once every checkpoint of the epoch is
/// committed.
pub fn progress(
    reports: StreamVec<'_, u64, ProgressReport>,
    replayed_through: u64,
    writer: ClickHouseWriter,
    sink: IoRuntime,
    removed: crate::sink::erasure::RemovedTenants,
) {
    let mut pending: BTreeMap<u64, Vec<ProgressReport>> = BTreeMap::new();
    let mut received_until: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tenants: BTreeSet<String> = BTreeSet::new();
    let mut written: Option<i64> = None;
    reports.sink(
        Exchange::new(|_: &ProgressReport| 0),
        "Progress",
        move |(input, frontier)| {
            input.for_each(|capability, data| {
                if let Some(&time) = capability.least() {
                    pending.entry(time).or_default().append(data);
                }
            });
            let mut newest = None;
            let mut new_tenant = false;
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                newest = Some(*entry.key());
                for report in entry.remove() {
                    received_until.extend(report.received_until);
                    for tenant in report.tenants {
                        new_tenant |= tenants.insert(tenant);
                    }
                }
            }
            let (Some(epoch), Some(&until)) = (newest, received_until.values().min()) else {
                return;
            };
            if epoch <= replayed_through || (written >= Some(until) && !new_tenant) {
                return;
            }
            tenants.retain(|tenant| !removed.contains(tenant));
            let updated_at = datetime(crate::now_ms() as i64);
            let rows: Vec<ProgressRow> = tenants
                .iter()
                .map(|tenant| ProgressRow {
                    tenant: tenant.clone(),
                    complete_until_ms: until,
                    epoch,
                    updated_at,
                })
                .collect();
            sink.write_with_retry("progress", || writer.progress(&rows));
            sink.metrics.progress_written(until);
            written = Some(until);
        },
    );
}
