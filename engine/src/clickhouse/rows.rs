//! Row types of the engine's bookkeeping tables and of the identity claims it reloads at a
//! start, in ClickHouse's RowBinary layout. The output tables' rows live next to their
//! sinks, in [`crate::sink::tables`].

use clickhouse::Row;
use operators::{IdentityClaim, Position};
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

/// One row of `identity_claims`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ClaimRow {
    pub tenant: String,
    pub kind: String,
    pub time_ms: i64,
    pub message_id: String,
    pub from_id: String,
    pub user_id: String,
    pub partition: i32,
    pub offset: i64,
}

impl ClaimRow {
    /// The row of a claim made by the event at `position`.
    pub fn new(claim: &IdentityClaim, (partition, offset): Position) -> Self {
        let (tenant, kind, time_ms, message_id, from_id, user_id) = match claim.clone() {
            IdentityClaim::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            } => (
                tenant,
                "identify",
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            ),
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => (tenant, "alias", 0, String::new(), previous_id, user_id),
            IdentityClaim::KnownUser { tenant, user_id } => {
                (tenant, "user", 0, String::new(), String::new(), user_id)
            }
        };
        ClaimRow {
            tenant,
            kind: kind.into(),
            time_ms,
            message_id,
            from_id,
            user_id,
            partition,
            offset,
        }
    }

    /// The claim this row stores; `None` for an unknown kind (written by a newer engine).
    pub fn to_claim(&self) -> Option<IdentityClaim> {
        let ClaimRow {
            tenant,
            kind,
            time_ms,
            message_id,
            from_id,
            user_id,
            ..
        } = self.clone();
        match kind.as_str() {
            "identify" => Some(IdentityClaim::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id: from_id,
                user_id,
            }),
            "alias" => Some(IdentityClaim::Alias {
                tenant,
                previous_id: from_id,
                user_id,
            }),
            "user" => Some(IdentityClaim::KnownUser { tenant, user_id }),
            _ => None,
        }
    }
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
