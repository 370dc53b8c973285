//! Placeholder ids: the values broken integrations send where an id should be ("undefined",
//! "null", "0", "[object Object]", an example email, ...). Taken at face value they would
//! make every visitor that sent `identify(userId: "undefined")` one person. They link
//! nothing: the id is removed from the event before identity and attribution see it (the
//! event is kept and attributed to its other id), and each removal is reported as an
//! [`IdWarning`], which the engine stores in `ingestion_warnings` and counts.
//!
//! An event whose only ids are placeholders cannot be attributed to anyone known, and must not
//! be attributed to everyone who sent the same placeholder: it gets an anonymous id of its own,
//! `unidentified:<messageId>`, so it counts as one visitor and one person and merges with no
//! one.

use std::sync::Arc;

use rustc_hash::FxHashSet;

use schemas::Event;
use serde::{Deserialize, Serialize};

pub use schemas::definitions::DEFAULT_PLACEHOLDER_IDS;

/// The longest ASCII id [`PlaceholderIds::contains`] lowercases without allocating.
const STACK_ID_BYTES: usize = 64;

/// The placeholder ids of a deployment. Empty and all-whitespace ids are always placeholders.
#[derive(Debug, Clone)]
pub struct PlaceholderIds {
    /// Fx-hashed: the set is the deployment's own and fixed, so no input can flood it, and
    /// every id of every event is looked up in it.
    lowercase: Arc<FxHashSet<String>>,
    longest: usize,
}

impl Default for PlaceholderIds {
    fn default() -> Self {
        PlaceholderIds::new(DEFAULT_PLACEHOLDER_IDS.iter().copied())
    }
}

impl PlaceholderIds {
    /// The set of `ids` (matched after trimming, ignoring case).
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> PlaceholderIds {
        let lowercase: FxHashSet<String> =
            ids.into_iter().map(|id| id.trim().to_lowercase()).collect();
        let longest = lowercase.iter().map(String::len).max().unwrap_or(0);
        PlaceholderIds {
            lowercase: Arc::new(lowercase),
            longest,
        }
    }

    /// The listed ids, lowercased (without the always-placeholder empty id).
    pub fn listed(&self) -> impl Iterator<Item = &str> {
        self.lowercase.iter().map(String::as_str)
    }

    /// Whether a non-empty `id` is a placeholder.
    pub fn contains(&self, id: &str) -> bool {
        let trimmed = id.trim();
        // Unicode lowercasing can change a string's length and turn other letters into
        // ASCII ones (the Kelvin sign into `k`): anything but ASCII takes the standard
        // library's. An ASCII id keeps its length, so one longer than every placeholder is
        // none; the list holds the zero UUID, so every UUID is looked up, lowercased on the
        // stack rather than into an allocation, for each id of every event.
        if trimmed.is_empty() {
            return true;
        }
        if !trimmed.is_ascii() {
            return self.lowercase.contains(&trimmed.to_lowercase());
        }
        if trimmed.len() > self.longest {
            return false;
        }
        let mut buffer = [0u8; STACK_ID_BYTES];
        match buffer.get_mut(..trimmed.len()) {
            Some(lower) => {
                lower.copy_from_slice(trimmed.as_bytes());
                lower.make_ascii_lowercase();
                std::str::from_utf8(lower).is_ok_and(|lower| self.lowercase.contains(lower))
            }
            // A deployment's own placeholder longer than the buffer.
            None => self.lowercase.contains(&trimmed.to_ascii_lowercase()),
        }
    }
}

/// Which Segment field held a placeholder id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdField {
    /// `userId`.
    UserId,
    /// `anonymousId`.
    AnonymousId,
    /// `previousId` (alias).
    PreviousId,
}

impl IdField {
    /// Every field that holds an id.
    pub const ALL: [IdField; 3] = [IdField::UserId, IdField::AnonymousId, IdField::PreviousId];

    /// The Segment field name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdField::UserId => "userId",
            IdField::AnonymousId => "anonymousId",
            IdField::PreviousId => "previousId",
        }
    }
}

/// A placeholder id removed from an event: the identity claim it would have made was refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdWarning {
    /// Tenant.
    pub tenant: String,
    /// The event's message id.
    pub message_id: String,
    /// The event's time, Unix ms.
    pub time_ms: i64,
    /// When the gateway received it, Unix ms.
    pub received_at_ms: i64,
    /// Where the id was.
    pub field: IdField,
    /// The id as sent.
    pub id: String,
}

/// The anonymous id given to an event whose only ids were placeholders.
pub const UNIDENTIFIED_PREFIX: &str = "unidentified:";

/// Removes the placeholder ids of `event` and returns one warning for each; an event left with
/// no id gets `unidentified:<messageId>` as its anonymous id. Cheap for the common case: real
/// ids are not lowercased.
pub fn remove_placeholder_ids(event: &mut Event, placeholders: &PlaceholderIds) -> Vec<IdWarning> {
    let mut removed = Vec::new();
    for (field, id) in [
        (IdField::UserId, &mut event.user_id),
        (IdField::AnonymousId, &mut event.anonymous_id),
        (IdField::PreviousId, &mut event.previous_id),
    ] {
        if !id.is_empty() && placeholders.contains(id) {
            removed.push((field, std::mem::take(id)));
        }
    }
    if removed.is_empty() {
        return Vec::new();
    }
    if event.user_id.is_empty() && event.anonymous_id.is_empty() {
        event.anonymous_id = format!("{UNIDENTIFIED_PREFIX}{}", event.message_id);
    }
    removed
        .into_iter()
        .map(|(field, id)| IdWarning {
            tenant: event.tenant.clone(),
            message_id: event.message_id.clone(),
            time_ms: event.timestamp_ms,
            received_at_ms: event.received_at_ms,
            field,
            id,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::EventKind;

    fn event(kind: EventKind, anonymous: &str, user: &str, previous: &str) -> Event {
        let mut e = Event::new("t", "m", kind, 0);
        e.anonymous_id = anonymous.into();
        e.user_id = user.into();
        e.previous_id = previous.into();
        e
    }

    fn ids(e: &Event) -> (&str, &str, &str) {
        (&e.anonymous_id, &e.user_id, &e.previous_id)
    }

    #[test]
    fn placeholders_match_trimmed_and_ignoring_case() {
        let p = PlaceholderIds::default();
        for id in [
            "undefined",
            "NULL",
            " None ",
            "[object Object]",
            "0",
            "-1",
            "NaN",
            "   ",
            "\t",
            "Email@Example.com",
            "guest",
        ] {
            assert!(p.contains(id), "{id:?}");
        }
        for id in ["alice", "00", "user-0", "1", "undefined-1", "a@example.com"] {
            assert!(!p.contains(id), "{id:?}");
        }
        let custom = PlaceholderIds::new(["unknown"]);
        assert!(custom.contains("Unknown") && !custom.contains("undefined"));
        // Unicode lowercasing: the Kelvin sign is a `k`.
        assert!(PlaceholderIds::new(["k"]).contains("\u{212A}"));
    }

    proptest::proptest! {
        /// The same answer as lowercasing every trimmed id, for ids of any case, length and
        /// alphabet around the listed ones.
        #[test]
        fn matches_lowercasing_every_id(
            id in r"[ \t]?(?i:(null|undefined|none|guest|0{8}-0{4}-0{4}-0{4}-0{12}|k|\x{212A}|[a-z0-9-]{0,70}|\PC{0,8}))[ ]?",
        ) {
            let listed = ["null", "undefined", "none", "guest", "00000000-0000-0000-0000-000000000000", "k"];
            let placeholders = PlaceholderIds::new(listed);
            let trimmed = id.trim();
            let expected = trimmed.is_empty() || listed.contains(&trimmed.to_lowercase().as_str());
            proptest::prop_assert_eq!(placeholders.contains(&id), expected);
        }
    }

    #[test]
    fn a_placeholder_user_id_is_removed_and_the_event_keeps_its_anonymous_id() {
        let mut e = event(EventKind::Identify, "a1", "undefined", "");
        let warnings = remove_placeholder_ids(&mut e, &PlaceholderIds::default());
        assert_eq!(ids(&e), ("a1", "", ""));
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            (warnings[0].field, warnings[0].id.as_str()),
            (IdField::UserId, "undefined")
        );
    }

    #[test]
    fn an_event_with_only_placeholder_ids_gets_an_id_of_its_own() {
        let mut server_side = event(EventKind::Track, "", "0", "");
        let warnings = remove_placeholder_ids(&mut server_side, &PlaceholderIds::default());
        assert_eq!(ids(&server_side), ("unidentified:m", "", ""));
        assert_eq!(warnings.len(), 1);
        let mut both = event(EventKind::Track, "null", "undefined", "");
        let warnings = remove_placeholder_ids(&mut both, &PlaceholderIds::default());
        assert_eq!(ids(&both), ("unidentified:m", "", ""));
        assert_eq!(warnings.len(), 2);
        let mut real = event(EventKind::Track, "a1", "u1", "");
        assert!(remove_placeholder_ids(&mut real, &PlaceholderIds::default()).is_empty());
        assert_eq!(ids(&real), ("a1", "u1", ""));
    }

    #[test]
    fn a_placeholder_anonymous_id_beside_a_real_user_id_is_removed() {
        let mut e = event(EventKind::Page, "[object Object]", "bob", "");
        let warnings = remove_placeholder_ids(&mut e, &PlaceholderIds::default());
        assert_eq!(ids(&e), ("", "bob", ""));
        assert_eq!(warnings[0].field, IdField::AnonymousId);
    }

    #[test]
    fn an_alias_from_or_to_a_placeholder_links_nothing() {
        let mut from = event(EventKind::Alias, "", "carol", "null");
        let warnings = remove_placeholder_ids(&mut from, &PlaceholderIds::default());
        assert_eq!(ids(&from), ("", "carol", ""));
        assert_eq!(warnings[0].field, IdField::PreviousId);
        let mut to = event(EventKind::Alias, "", "guest", "old-user");
        let warnings = remove_placeholder_ids(&mut to, &PlaceholderIds::default());
        assert_eq!(ids(&to), ("unidentified:m", "", "old-user"));
        assert_eq!(warnings[0].field, IdField::UserId);
    }
}
