//! What a (re)starting engine reads before it builds its dataflow, and the rules it follows.
//!
//! A restart must leave every table exactly as an uninterrupted run would. Three facts make
//! that work:
//!
//! 1. **Epoch plans.** Before any sink writes epoch `e`, the sources have durably recorded, per
//!    partition, where the records of `e` end (`_epochs`; the control topic's records, which
//!    change results too, included). A restart replays the logs in exactly
//!    those epochs, and the operators are deterministic functions of what they have read, so
//!    every result it writes for an epoch equals what the crashed run wrote for it. Rows that
//!    a later epoch of the crashed run superseded (a session merged away, say) are superseded
//!    again by the same rows: nothing an unfinished epoch wrote is left behind.
//! 2. **Low water.** Operator state (dedup ids, sessions, open windows) depends on records
//!    older than the checkpoint. Each checkpoint records, per partition, the offset at which
//!    the state horizon begins; a restart replays from there through the checkpoint with its
//!    writes suppressed (ClickHouse already holds those results), which rebuilds the state.
//! 3. **Claims below low water.** The identity map also depends on identify/alias claims older
//!    than any replay; those (and only those) are reloaded from `identity_claims`, so replayed
//!    epochs see the map as it was when they first ran.
//!
//! Because everything is keyed by partition, not by worker, a restart may use any `-w`/`-n`.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Where one partition's replay starts and in which epochs its records are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionRecovery {
    /// First offset to read (0: the log's beginning).
    pub replay_from: i64,
    /// The epoch that ended at `replay_from` (0 for the beginning).
    pub replay_from_epoch: u64,
    /// `(epoch, next_offset)` of every planned epoch after `replay_from`, oldest first.
    pub plan: VecDeque<(u64, i64)>,
    /// The furthest an earlier run read: the checkpoint's or the newest plan's next offset
    /// (0: nothing). A log that ends before it is not the log the earlier run read.
    pub expected_end: i64,
    /// `(offset, fingerprint)` of the last record the checkpoint covers, when it was stored
    /// (see [`crate::source::log_check`]).
    pub mark: Option<(i64, u64)>,
}

/// What the last run left behind.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Every epoch up to this one is written and checkpointed (0: none). Replayed epochs up to
    /// here rebuild state only; their results are not written again.
    pub checkpointed_epoch: u64,
    /// The newest epoch any source planned. Live epochs start after it, so a replayed epoch
    /// never receives records the crashed run did not give it.
    pub last_planned_epoch: u64,
    /// Per partition.
    pub partitions: HashMap<i32, PartitionRecovery>,
    /// `(epoch, next_offset)` of every epoch in which an earlier run read control records
    /// (the control topic's one partition), oldest first: a restart applies each record at
    /// the same epoch again (see [`Recovery::with_control_plan`]).
    pub control_plan: VecDeque<(u64, i64)>,
}

/// One `_checkpoints` row as recovery needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointState {
    /// Partition.
    pub partition: i32,
    /// Epoch of the checkpoint.
    pub epoch: u64,
    /// Replay start.
    pub low_water: i64,
    /// Epoch that ended at `low_water`.
    pub low_water_epoch: u64,
    /// Where the checkpointed records end.
    pub next_offset: i64,
    /// Fingerprint of the record at `next_offset - 1` (0: not stored).
    pub log_mark: u64,
}

impl Recovery {
    /// Assembles the recovery from the newest checkpoint row of each partition and the plan
    /// rows from the oldest low-water epoch on. Partitions without a checkpoint replay from the
    /// beginning of the log.
    pub fn assemble(checkpoints: &[CheckpointState], plans: &[(i32, u64, i64)]) -> Recovery {
        let mut partitions: HashMap<i32, PartitionRecovery> = checkpoints
            .iter()
            .map(|c| {
                let recovery = PartitionRecovery {
                    replay_from: c.low_water,
                    replay_from_epoch: c.low_water_epoch,
                    plan: VecDeque::new(),
                    expected_end: c.next_offset,
                    mark: (c.log_mark != 0 && c.next_offset > 0)
                        .then_some((c.next_offset - 1, c.log_mark)),
                };
                (c.partition, recovery)
            })
            .collect();
        // The same row may be stored twice (ReplacingMergeTree merges lazily): collapse.
        let mut by_partition: BTreeMap<i32, BTreeMap<u64, i64>> = BTreeMap::new();
        for &(partition, epoch, next_offset) in plans {
            by_partition
                .entry(partition)
                .or_default()
                .insert(epoch, next_offset);
        }
        let mut last_planned_epoch = 0;
        for (partition, epochs) in by_partition {
            let recovery = partitions.entry(partition).or_default();
            for (epoch, next_offset) in epochs {
                last_planned_epoch = last_planned_epoch.max(epoch);
                recovery.expected_end = recovery.expected_end.max(next_offset);
                if next_offset > recovery.replay_from && epoch > recovery.replay_from_epoch {
                    recovery.plan.push_back((epoch, next_offset));
                }
            }
        }
        Recovery {
            checkpointed_epoch: checkpoints.iter().map(|c| c.epoch).max().unwrap_or(0),
            last_planned_epoch,
            partitions,
            control_plan: VecDeque::new(),
        }
    }

    /// Adds the control topic's plan (rows `(epoch, next_offset)`, in any order, repeats
    /// allowed), keeping only the epochs whose records the topic still holds (`offsets`: its
    /// first and end offsets now).
    ///
    /// A control record (an erasure, an unmerge) changes results like an event does, so it
    /// too must be replayed in the epoch it was first applied in. Applied at the restart's
    /// first live epoch instead, its effect shares that epoch with whatever else arrives
    /// there: where the two cancel out (a person withdrawn from a minute as a newcomer
    /// arrives in it) nothing is written, and the value the crashed run wrote after applying
    /// it, without the newcomer, stays. Live epochs start after the newest control plan too,
    /// so no epoch a crashed run applied a record in receives new events on a restart.
    pub fn with_control_plan(mut self, rows: &[(u64, i64)], (start, end): (i64, i64)) -> Recovery {
        let plan: BTreeMap<u64, i64> = rows.iter().copied().collect();
        for (&epoch, &next_offset) in &plan {
            self.last_planned_epoch = self.last_planned_epoch.max(epoch);
            if next_offset <= start || next_offset > end {
                // Every planned record was read once: the topic lost records it must keep
                // (expired, or cut short). Waiting for them would hold every epoch.
                tracing::error!(
                    epoch,
                    next_offset,
                    start,
                    end,
                    "the control topic no longer holds records an earlier run applied in this epoch; they are applied when read, if ever"
                );
            } else {
                self.control_plan.push_back((epoch, next_offset));
            }
        }
        self
    }

    /// The oldest epoch whose plan rows are needed.
    pub fn oldest_needed_epoch(checkpoints: &[CheckpointState]) -> u64 {
        checkpoints
            .iter()
            .map(|c| c.low_water_epoch)
            .min()
            .unwrap_or(0)
    }

    /// Whether a stored claim made at `(partition, offset)` will not be replayed, and so must
    /// be reloaded. Offset -1 marks claims of a log that was replaced (`engine
    /// --accept-new-log`): they precede everything.
    pub fn claim_precedes_replay(&self, partition: i32, offset: i64) -> bool {
        offset < 0
            || self
                .partitions
                .get(&partition)
                .is_some_and(|p| offset < p.replay_from)
    }
}

/// The epoch an earlier run gave the record at `offset`, from `plan` (`(epoch, next_offset)`
/// oldest first, as [`PartitionRecovery::plan`]); `None` for a record read for the first
/// time. Records must be asked for in offset order: the epochs they pass are dropped.
pub fn planned_epoch(plan: &mut VecDeque<(u64, i64)>, offset: i64) -> Option<u64> {
    while plan.front().is_some_and(|&(_, next)| next <= offset) {
        plan.pop_front();
    }
    let epoch = plan.front().map(|&(epoch, _)| epoch);
    if plan.front().is_some_and(|&(_, next)| next <= offset + 1) {
        plan.pop_front();
    }
    epoch
}

/// Per partition, the epochs checkpointed within the state horizon: the low water of the next
/// checkpoint is where the newest epoch at least a horizon old ended.
#[derive(Debug, Default)]
pub struct LowWater {
    history: BTreeMap<i32, VecDeque<(u64, i64)>>,
    horizon_epochs: u64,
}

impl LowWater {
    /// Starts from what a recovery replays (its replay start and planned epochs).
    pub fn new(recovery: &Recovery, horizon_epochs: u64) -> LowWater {
        let history = recovery
            .partitions
            .iter()
            .map(|(&partition, p)| {
                let mut epochs = VecDeque::new();
                if p.replay_from > 0 {
                    epochs.push_back((p.replay_from_epoch, p.replay_from));
                }
                epochs.extend(p.plan.iter().copied());
                (partition, epochs)
            })
            .collect();
        LowWater {
            history,
            horizon_epochs,
        }
    }

    /// Records that `partition` was read up to `next_offset` by `epoch`, and returns the low
    /// water `(offset, epoch)` as of `epoch`: `(0, 0)` while the whole log is within the horizon.
    pub fn advance(&mut self, partition: i32, epoch: u64, next_offset: i64) -> (i64, u64) {
        let epochs = self.history.entry(partition).or_default();
        if epochs.back().is_none_or(|&(e, _)| e < epoch) {
            epochs.push_back((epoch, next_offset));
        }
        let cut = epoch.saturating_sub(self.horizon_epochs);
        while epochs.len() >= 2 && epochs[1].0 <= cut {
            epochs.pop_front();
        }
        match epochs.front() {
            Some(&(e, offset)) if e <= cut => (offset, e),
            _ => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_replay_starts_and_plans_per_partition() {
        let checkpoints = [
            CheckpointState {
                partition: 0,
                epoch: 50,
                low_water: 100,
                low_water_epoch: 10,
                next_offset: 180,
                log_mark: 77,
            },
            CheckpointState {
                partition: 1,
                epoch: 48,
                low_water: 0,
                low_water_epoch: 0,
                next_offset: 7,
                log_mark: 0,
            },
        ];
        let plans = [
            (0, 10, 100),
            (0, 20, 150),
            (0, 50, 180),
            (0, 55, 200),
            (0, 55, 200),
            (1, 5, 7),
            (2, 52, 3),
        ];
        let recovery = Recovery::assemble(&checkpoints, &plans);
        assert_eq!(recovery.checkpointed_epoch, 50);
        assert_eq!(recovery.last_planned_epoch, 55);
        assert_eq!(
            recovery.partitions[&0].plan,
            VecDeque::from([(20, 150), (50, 180), (55, 200)])
        );
        assert_eq!(recovery.partitions[&1].plan, VecDeque::from([(5, 7)]));
        assert_eq!(recovery.partitions[&0].expected_end, 200, "the newest plan");
        assert_eq!(recovery.partitions[&0].mark, Some((179, 77)));
        assert_eq!(recovery.partitions[&1].mark, None, "no fingerprint stored");
        assert_eq!(recovery.partitions[&2].expected_end, 3);
        assert_eq!(
            recovery.partitions[&2].replay_from, 0,
            "no checkpoint: from the start"
        );
        assert!(recovery.claim_precedes_replay(0, 99));
        assert!(!recovery.claim_precedes_replay(0, 100));
        assert!(!recovery.claim_precedes_replay(1, 0));
        assert!(!recovery.claim_precedes_replay(7, 0));
        assert!(
            recovery.claim_precedes_replay(7, -1),
            "a replaced log's claim"
        );
        assert_eq!(Recovery::oldest_needed_epoch(&checkpoints), 0);
    }

    #[test]
    fn records_take_their_planned_epochs_in_offset_order() {
        let mut plan = VecDeque::from([(20, 150), (50, 180)]);
        assert_eq!(planned_epoch(&mut plan, 100), Some(20));
        assert_eq!(
            planned_epoch(&mut plan, 149),
            Some(20),
            "the epoch's last record"
        );
        assert_eq!(plan, VecDeque::from([(50, 180)]), "epoch 20 is done");
        assert_eq!(
            planned_epoch(&mut plan, 170),
            Some(50),
            "a skipped record is no gap"
        );
        assert_eq!(planned_epoch(&mut plan, 179), Some(50));
        assert_eq!(
            planned_epoch(&mut plan, 180),
            None,
            "read for the first time"
        );
        assert!(plan.is_empty());
    }

    #[test]
    fn the_control_plan_moves_live_epochs_past_it() {
        let events = Recovery::assemble(&[], &[(0, 10, 100)]);
        let recovery = events.with_control_plan(&[(12, 3), (7, 1), (12, 3), (30, 9)], (0, 5));
        assert_eq!(
            recovery.control_plan,
            VecDeque::from([(7, 1), (12, 3)]),
            "oldest first, once each, and only what the topic still holds"
        );
        let expired = Recovery::default().with_control_plan(&[(7, 1), (12, 3), (20, 6)], (2, 6));
        assert_eq!(
            expired.control_plan,
            VecDeque::from([(12, 3), (20, 6)]),
            "epoch 7's record (offset 0) expired; epoch 12's from offset 1 is partly there"
        );
        assert_eq!(
            recovery.last_planned_epoch, 30,
            "an epoch a crashed run applied a lost record in is not live either"
        );
    }

    #[test]
    fn low_water_trails_by_the_horizon() {
        let mut low = LowWater::new(&Recovery::default(), 10);
        assert_eq!(low.advance(0, 5, 50), (0, 0));
        assert_eq!(low.advance(0, 12, 70), (0, 0), "epoch 5 is within 10 of 12");
        assert_eq!(low.advance(0, 15, 90), (50, 5));
        assert_eq!(low.advance(0, 30, 95), (90, 15));
        assert_eq!(low.advance(1, 30, 3), (0, 0));
    }

    #[test]
    fn low_water_starts_from_the_recovered_replay_start() {
        let recovery = Recovery::assemble(
            &[CheckpointState {
                partition: 0,
                epoch: 40,
                low_water: 100,
                low_water_epoch: 10,
                next_offset: 130,
                log_mark: 1,
            }],
            &[(0, 10, 100), (0, 30, 120), (0, 40, 130)],
        );
        let mut low = LowWater::new(&recovery, 20);
        assert_eq!(low.advance(0, 45, 140), (100, 10));
        assert_eq!(low.advance(0, 55, 150), (120, 30));
    }
}
