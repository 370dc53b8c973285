//! Row types in ClickHouse's RowBinary layout. Field order is the column order of the INSERT
//! (names come from the fields), so a row type and its DDL can drift only in column *sets*,
//! which the end-to-end tests catch.

use clickhouse::Row;
use operators::{DeadLetter, Decoded};
use serde::{Deserialize, Serialize};

/// Rows are rewritten (never updated in place); a higher version wins in ReplacingMergeTree.
/// Raw events never change once written, so every write carries the same version and a replay
/// after a crash produces byte-identical rows.
pub const EVENT_ROW_VERSION: u64 = 1;

/// One row of `events`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EventRow {
    pub tenant: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub anonymous_id: String,
    pub user_id: String,
    pub previous_id: String,
    pub group_id: String,
    /// `DateTime`: seconds, clamped to its unsigned 32-bit range.
    pub event_time: u32,
    pub event_time_ms: i64,
    pub original_timestamp_ms: Option<i64>,
    pub sent_at_ms: Option<i64>,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub path: String,
    pub url: String,
    pub referrer: String,
    pub title: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub ip: String,
    pub user_agent: String,
    pub is_bot: u8,
    pub locale: String,
    pub library: String,
    #[serde(rename = "properties.key")]
    pub properties_key: Vec<String>,
    #[serde(rename = "properties.value")]
    pub properties_value: Vec<String>,
    #[serde(rename = "traits.key")]
    pub traits_key: Vec<String>,
    #[serde(rename = "traits.value")]
    pub traits_value: Vec<String>,
    #[serde(rename = "context.key")]
    pub context_key: Vec<String>,
    #[serde(rename = "context.value")]
    pub context_value: Vec<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub version: u64,
}

/// Milliseconds to a `DateTime` (seconds since 1970, unsigned 32 bits).
pub fn datetime(unix_ms: i64) -> u32 {
    unix_ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

fn unzip(pairs: Vec<(String, String)>) -> (Vec<String>, Vec<String>) {
    pairs.into_iter().unzip()
}

impl From<Decoded> for EventRow {
    fn from(decoded: Decoded) -> Self {
        let Decoded {
            partition,
            offset,
            event,
        } = decoded;
        let schemas::Event {
            tenant,
            message_id,
            kind,
            name,
            anonymous_id,
            user_id,
            previous_id,
            group_id,
            timestamp_ms,
            original_timestamp_ms,
            sent_at_ms,
            received_at_ms,
            page,
            campaign,
            ip,
            user_agent,
            is_bot,
            locale,
            library,
            properties,
            traits,
            context,
        } = event;
        let (properties_key, properties_value) = unzip(properties);
        let (traits_key, traits_value) = unzip(traits);
        let (context_key, context_value) = unzip(context);
        EventRow {
            tenant,
            message_id,
            kind: kind.as_str().to_owned(),
            name,
            anonymous_id,
            user_id,
            previous_id,
            group_id,
            event_time: datetime(timestamp_ms),
            event_time_ms: timestamp_ms,
            original_timestamp_ms,
            sent_at_ms,
            received_at: datetime(received_at_ms),
            received_at_ms,
            path: page.path,
            url: page.url,
            referrer: page.referrer,
            title: page.title,
            utm_source: campaign.source,
            utm_medium: campaign.medium,
            utm_campaign: campaign.name,
            ip,
            user_agent,
            is_bot: u8::from(is_bot),
            locale,
            library,
            properties_key,
            properties_value,
            traits_key,
            traits_value,
            context_key,
            context_value,
            kafka_partition: partition,
            kafka_offset: offset,
            version: EVENT_ROW_VERSION,
        }
    }
}

/// One row of `_dead_letters`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DeadLetterRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub payload_hex: String,
    pub seen_at: u32,
}

impl DeadLetterRow {
    /// The row for a dead letter of `topic`.
    pub fn new(topic: &str, dead: DeadLetter, now_ms: i64) -> Self {
        DeadLetterRow {
            topic: topic.to_owned(),
            partition: dead.partition,
            offset: dead.offset,
            error: dead.error,
            payload_hex: hex::encode(&dead.payload),
            seen_at: datetime(now_ms),
        }
    }
}

/// One row of `_checkpoints`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CheckpointRow {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub epoch: u64,
    pub written_at: u32,
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
