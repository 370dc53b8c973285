//! Row types of the engine's bookkeeping tables, in ClickHouse's RowBinary layout. The
//! output tables' rows live next to their sinks, in [`crate::sink::tables`].

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Milliseconds to a `DateTime` (seconds since 1970, unsigned 32 bits).
pub fn datetime(unix_ms: i64) -> u32 {
    unix_ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

/// One row of `_checkpoints`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CheckpointRow {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub epoch: u64,
    pub low_water: i64,
    pub low_water_epoch: u64,
    pub received_until: i64,
    pub written_at: u32,
    /// [`crate::source::log_check::fingerprint`] of the record at `next_offset - 1`.
    pub log_mark: u64,
}

/// One row of `_log_stalls`: a partition whose log is not the one the checkpoints describe
/// (see [`crate::source::log_check`]). `resolved = 1` rows end a stall.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LogStallRow {
    pub topic: String,
    pub partition: i32,
    /// `partition_missing`, `log_ends_before_checkpoint`, `log_starts_after_replay`,
    /// `other_record_at_offset`.
    pub reason: String,
    /// The offset the checkpoint or plan expects (-1: none).
    pub expected_offset: i64,
    /// The offset the log has there (-1: none).
    pub found_offset: i64,
    /// Unix ms; also the row's version.
    pub detected_at_ms: i64,
    pub resolved: u8,
}

/// One row of `_epochs`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EpochPlanRow {
    pub topic: String,
    pub partition: i32,
    pub epoch: u64,
    pub next_offset: i64,
    pub written_at: u32,
}

/// One row of `_progress`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ProgressRow {
    pub tenant: String,
    pub complete_until_ms: i64,
    pub epoch: u64,
    pub updated_at: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_clamps_to_the_column_range() {
        assert_eq!(datetime(1_700_000_000_999), 1_700_000_000);
        assert_eq!(datetime(-5), 0);
        assert_eq!(datetime(i64::MAX), u32::MAX);
    }
}
