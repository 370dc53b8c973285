//! The checkpoint operator: commits a worker's source positions once every sink on every
//! worker has written the epochs that read them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use crate::sink::clickhouse::ClickHouseWriter;
use crate::sink::epoch::SinkRuntime;

/// What the source emitted at one epoch.
#[derive(Debug, Default)]
pub struct EpochPositions {
    /// Per partition, the offset after the last record emitted at the epoch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Records emitted at the epoch (for backpressure).
    pub records: usize,
}

/// Source positions by epoch, shared by the source and the checkpoint operator of one worker
/// (same thread). An epoch leaves the map when it is checkpointed.
pub type PositionsByEpoch = Rc<RefCell<BTreeMap<u64, EpochPositions>>>;

/// Attaches the checkpoint operator to the union of every sink's completion stream.
pub fn checkpoint(
    done: Stream<'_, u64, Vec<()>>,
    positions: PositionsByEpoch,
    writer: ClickHouseWriter,
    sink: SinkRuntime,
) {
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    done.sink(Pipeline, "Checkpoint", move |(input, frontier)| {
        input.for_each(|_, _| {});
        let mut advanced: BTreeMap<i32, i64> = BTreeMap::new();
        let mut newest = None;
        {
            let mut positions = positions.borrow_mut();
            while let Some(entry) = positions.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                newest = Some(*entry.key());
                for (partition, next) in entry.remove().next_offsets {
                    if committed.get(&partition).is_none_or(|done| *done < next) {
                        committed.insert(partition, next);
                        advanced.insert(partition, next);
                    }
                }
            }
        }
        if let (Some(epoch), false) = (newest, advanced.is_empty()) {
            sink.write_with_retry("checkpoint", || writer.checkpoint(&advanced, epoch));
            sink.metrics.checkpoints.inc();
            tracing::debug!(epoch, partitions = advanced.len(), "checkpoint committed");
        }
    });
}
