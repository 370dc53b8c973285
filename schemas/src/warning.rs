//! What the gateway met in an event and could not use as sent: a refused event, or a field it
//! ignored. The gateway has no ClickHouse connection, so it writes these to Kafka beside the
//! events, and the engine stores them in `ingestion_warnings`, where a tenant sees what to fix
//! (PostHog's "ingestion warnings" serve the same purpose).

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Longest offending value kept, in bytes (cut at a character boundary).
pub const MAX_VALUE_BYTES: usize = 256;

/// Why a warning was recorded. The discriminants are part of the wire format: append only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// The event was not stored: `field` could not be read and the event means nothing
    /// without it (a track call without `event`, an event without any id, ...).
    RefusedEvent,
    /// A time field (`timestamp`, `originalTimestamp`, `sentAt`) was not a time; the event was
    /// stored with the time it would have had without the field.
    InvalidTimeIgnored,
    /// `context.ip` held no address; the event was stored with the request's address.
    InvalidIpIgnored,
    /// The batch's `context` was not an object; its events were stored without it.
    InvalidContextIgnored,
}

impl WarningKind {
    /// The `type` column of `ingestion_warnings`.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::RefusedEvent => "refused_event",
            WarningKind::InvalidTimeIgnored => "invalid_time_ignored",
            WarningKind::InvalidIpIgnored => "invalid_ip_ignored",
            WarningKind::InvalidContextIgnored => "invalid_context_ignored",
        }
    }
}

/// One problem with one field of one event, as the gateway met it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
pub struct IngestWarning {
    /// The tenant of the write key.
    pub tenant: String,
    /// What happened to the event.
    pub kind: WarningKind,
    /// The event's `messageId`; for a refused event that had none, one the gateway made up
    /// (a UUIDv7), so that refusals of one batch stay apart.
    pub message_id: String,
    /// The field, in Segment's spelling (`event`, `context.ip`, `timestamp`); empty when the
    /// event as a whole was unreadable (not an object, too large).
    pub field: String,
    /// The offending value as sent (JSON text), at most [`MAX_VALUE_BYTES`] bytes.
    pub value: String,
    /// What was wrong, for humans.
    pub detail: String,
    /// When the gateway received the request, Unix ms (UTC).
    pub received_at_ms: i64,
}

/// `text` cut to at most [`MAX_VALUE_BYTES`] bytes at a character boundary.
pub fn bounded_value(text: &str) -> String {
    if text.len() <= MAX_VALUE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_value("short"), "short");
        let long = "é".repeat(200);
        let cut = bounded_value(&long);
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.len() >= MAX_VALUE_BYTES - 1);
        assert!(long.starts_with(&cut));
    }
}
