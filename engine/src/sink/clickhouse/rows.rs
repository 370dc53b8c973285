//! Row types in ClickHouse's RowBinary layout. Field order is the column order of the INSERT
//! (names come from the fields), so a row type and its DDL can drift only in column *sets*,
//! which the end-to-end tests catch.

use clickhouse::Row;
use operators::{
    AggRow, DeadLetter, IdKind, IdWarning, IdentityClaim, Node, Position, Session, VisitorHour,
};
use serde::{Deserialize, Serialize};

// Rows are rewritten, never updated in place: ReplacingMergeTree keeps the highest `version`,
// and the engine writes the epoch as the version, so a later correction always wins.

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
    pub session_id: String,
    pub person_id: String,
    pub late: u8,
    pub version: u64,
}

/// Milliseconds to a `DateTime` (seconds since 1970, unsigned 32 bits).
pub fn datetime(unix_ms: i64) -> u32 {
    unix_ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

fn unzip(pairs: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    pairs.iter().cloned().unzip()
}

impl EventRow {
    /// The row of `event` as enriched at `version`.
    pub fn new(
        event: &schemas::Event,
        session_id: &str,
        person_id: &str,
        late: bool,
        version: u64,
    ) -> Self {
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
            tenant: tenant.clone(),
            message_id: message_id.clone(),
            kind: kind.as_str().to_owned(),
            name: name.clone(),
            anonymous_id: anonymous_id.clone(),
            user_id: user_id.clone(),
            previous_id: previous_id.clone(),
            group_id: group_id.clone(),
            event_time: datetime(*timestamp_ms),
            event_time_ms: *timestamp_ms,
            original_timestamp_ms: *original_timestamp_ms,
            sent_at_ms: *sent_at_ms,
            received_at: datetime(*received_at_ms),
            received_at_ms: *received_at_ms,
            path: page.path.clone(),
            url: page.url.clone(),
            referrer: page.referrer.clone(),
            title: page.title.clone(),
            utm_source: campaign.source.clone(),
            utm_medium: campaign.medium.clone(),
            utm_campaign: campaign.name.clone(),
            ip: ip.clone(),
            user_agent: user_agent.clone(),
            is_bot: u8::from(*is_bot),
            locale: locale.clone(),
            library: library.clone(),
            properties_key,
            properties_value,
            traits_key,
            traits_value,
            context_key,
            context_value,
            session_id: session_id.to_owned(),
            person_id: person_id.to_owned(),
            late: u8::from(late),
            version,
        }
    }
}

/// One row of `sessions`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub tenant: String,
    pub session_id: String,
    pub person_id: String,
    pub visitor_id: String,
    pub start_time: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_ms: i64,
    pub events: u32,
    pub page_views: u32,
    pub is_bounce: u8,
    pub entry_path: String,
    pub exit_path: String,
    pub entry_referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub deleted: u8,
    pub version: u64,
}

impl SessionRow {
    /// The row of `session` (a tombstone when `deleted`) at `version`.
    pub fn new(session: &Session, deleted: bool, version: u64) -> Self {
        SessionRow {
            tenant: session.tenant.clone(),
            session_id: session.session_id.clone(),
            person_id: session.person_id.clone(),
            visitor_id: session.visitor_id.clone(),
            start_time: datetime(session.start_ms),
            start_ms: session.start_ms,
            end_ms: session.end_ms,
            duration_ms: session.duration_ms(),
            events: session.events,
            page_views: session.page_views,
            is_bounce: u8::from(session.bounce),
            entry_path: session.entry_path.clone(),
            exit_path: session.exit_path.clone(),
            entry_referrer: session.entry_referrer.clone(),
            utm_source: session.utm_source.clone(),
            utm_medium: session.utm_medium.clone(),
            utm_campaign: session.utm_campaign.clone(),
            deleted: u8::from(deleted),
            version,
        }
    }
}

/// One row of `identities`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct IdentityRow {
    pub tenant: String,
    pub id_kind: String,
    pub id: String,
    pub person_id: String,
    pub deleted: u8,
    pub version: u64,
}

impl IdentityRow {
    /// The row mapping `node` to `person` (a tombstone when `deleted`) at `version`.
    pub fn new(node: &Node, person: &Node, deleted: bool, version: u64) -> Self {
        IdentityRow {
            tenant: node.tenant.clone(),
            id_kind: id_kind(node.kind).to_owned(),
            id: node.id.clone(),
            person_id: person.id.clone(),
            deleted: u8::from(deleted),
            version,
        }
    }
}

fn id_kind(kind: IdKind) -> &'static str {
    match kind {
        IdKind::User => "user",
        IdKind::Anonymous => "anonymous",
    }
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

/// One row of `agg_minute_metrics`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AggMinuteRow {
    pub tenant: String,
    pub minute: u32,
    pub metric: String,
    pub dimension: String,
    pub value: i64,
    pub version: u64,
}

impl AggMinuteRow {
    /// The row of `aggregate` at `version`; a retracted value is written as 0.
    pub fn new(aggregate: &AggRow, deleted: bool, version: u64) -> Self {
        AggMinuteRow {
            tenant: aggregate.tenant.clone(),
            minute: datetime(aggregate.minute_ms),
            metric: aggregate.metric.as_str().to_owned(),
            dimension: aggregate.dimension.clone(),
            value: if deleted { 0 } else { aggregate.value },
            version,
        }
    }
}

/// One row of `agg_hour_visitors`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct VisitorHourRow {
    pub tenant: String,
    pub hour: u32,
    pub visitor_id: String,
    pub person_id: String,
    pub events: u32,
    pub page_views: u32,
    pub version: u64,
}

impl VisitorHourRow {
    /// The row of `activity` at `version`; a retracted row is written with no events.
    pub fn new(activity: &VisitorHour, deleted: bool, version: u64) -> Self {
        let count = |value: i64| {
            if deleted {
                0
            } else {
                u32::try_from(value).unwrap_or(u32::MAX)
            }
        };
        VisitorHourRow {
            tenant: activity.tenant.clone(),
            hour: datetime(activity.hour_ms),
            visitor_id: activity.visitor_id.clone(),
            person_id: activity.person_id.clone(),
            events: count(activity.events),
            page_views: count(activity.page_views),
            version,
        }
    }
}

/// One row of `live_counters`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LiveCounterRow {
    pub tenant: String,
    pub counter: String,
    pub value: i64,
    pub updated_at: u32,
    pub version: u64,
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
    pub low_water: i64,
    pub low_water_epoch: u64,
    pub received_until: i64,
    pub written_at: u32,
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

/// One row of `ingestion_warnings`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct WarningRow {
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub message_id: String,
    pub field: String,
    pub value: String,
    pub event_time: u32,
    pub event_time_ms: i64,
    pub received_at: u32,
}

impl WarningRow {
    /// The row of a placeholder id removed from an event (its claim refused).
    pub fn placeholder_id(warning: &IdWarning) -> Self {
        WarningRow {
            tenant: warning.tenant.clone(),
            kind: "placeholder_id".into(),
            message_id: warning.message_id.clone(),
            field: warning.field.as_str().into(),
            value: warning.id.clone(),
            event_time: datetime(warning.time_ms),
            event_time_ms: warning.time_ms,
            received_at: datetime(warning.received_at_ms),
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

    #[test]
    fn every_kind_of_claim_comes_back_from_its_row() {
        let claims = [
            IdentityClaim::Identify {
                tenant: "t".into(),
                time_ms: 5,
                message_id: "m".into(),
                anonymous_id: "a".into(),
                user_id: "u".into(),
            },
            IdentityClaim::Alias {
                tenant: "t".into(),
                previous_id: "old".into(),
                user_id: "new".into(),
            },
            IdentityClaim::KnownUser {
                tenant: "t".into(),
                user_id: "u".into(),
            },
        ];
        for claim in claims {
            assert_eq!(ClaimRow::new(&claim, (1, 2)).to_claim(), Some(claim));
        }
    }
}
