//! The live counters the engine publishes to Redis once per epoch and the query gateway relays
//! to browsers: the contract between the two, so both sides use these names.

use serde::{Deserialize, Serialize};

/// The Redis pub/sub channel prefix; a tenant's channel is [`channel`].
pub const CHANNEL_PREFIX: &str = "clickstream:live:";

/// The channel of `tenant`'s live updates.
pub fn channel(tenant: &str) -> String {
    format!("{CHANNEL_PREFIX}{tenant}")
}

/// One message on a tenant's channel. Each field is present only when the message carries it:
/// the active-visitors count comes from one place in the engine, event counts from every
/// worker that wrote events of the tenant in the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveUpdate {
    /// The engine epoch the numbers belong to (increasing; SSE event ids are built from it).
    pub epoch: u64,
    /// Wall-clock time of the epoch, Unix milliseconds.
    pub at_ms: i64,
    /// Visitors with an event in the last five minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_visitors: Option<i64>,
    /// Events one worker wrote for the tenant in the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_stay_absent() {
        let update = LiveUpdate {
            epoch: 7,
            at_ms: 1_000,
            active_visitors: Some(3),
            events: None,
        };
        let text = serde_json::to_string(&update).unwrap_or_default();
        assert_eq!(text, r#"{"epoch":7,"at_ms":1000,"active_visitors":3}"#);
        assert_eq!(serde_json::from_str::<LiveUpdate>(&text).ok(), Some(update));
        assert_eq!(channel("acme"), "clickstream:live:acme");
    }
}
