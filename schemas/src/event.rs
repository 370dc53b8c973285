//! The event model. Field names follow Segment's HTTP Tracking API so that Segment and
//! RudderStack clients work unchanged; the gateway normalises their free-form JSON into this
//! fixed shape once, so nothing downstream has to parse JSON again.

use arcstr::ArcStr;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Segment's message types. The discriminants are part of the wire format: append only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A named user action (`event` is set).
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// Ties an anonymous id to a known user id and records traits.
    Identify,
    /// Links `previous_id` to `user_id` (e.g. two devices of one user).
    Alias,
    /// Associates the user with a group (account, company).
    Group,
}

impl EventKind {
    /// Every kind, in wire order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Track,
        EventKind::Page,
        EventKind::Screen,
        EventKind::Identify,
        EventKind::Alias,
        EventKind::Group,
    ];

    /// The Segment name of the kind, as used in URLs (`/v1/track`) and in `type` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Identify => "identify",
            EventKind::Alias => "alias",
            EventKind::Group => "group",
        }
    }

    /// Parses a Segment type name; `None` for anything else.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// Where a page view happened; taken from `properties` (page calls) or `context.page`.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Serialize, Deserialize,
)]
pub struct Page {
    /// URL path, e.g. `/pricing`.
    pub path: String,
    /// Full URL.
    pub url: String,
    /// Referring URL.
    pub referrer: String,
    /// Document title.
    pub title: String,
}

/// Marketing attribution (`context.campaign`, or `utm_*` parameters of the page URL).
///
/// A dimension: few distinct values over many events, so its strings are shared [`ArcStr`]s
/// (the decoder hands out one copy per thread, see `wire::strings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Campaign {
    /// `utm_source`.
    pub source: ArcStr,
    /// `utm_medium`.
    pub medium: ArcStr,
    /// `utm_campaign` (Segment calls it `name`).
    pub name: ArcStr,
    /// `utm_content`.
    pub content: ArcStr,
    /// `utm_term`.
    pub term: ArcStr,
}

/// What the gateway read from the user agent (uap-core's rules, see the ingest gateway's
/// `enrich::agent`). Empty strings when the agent is missing or unrecognised.
///
/// A dimension: few distinct values over many events, so its strings are shared [`ArcStr`]s
/// (the decoder hands out one copy per thread, see `wire::strings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Client {
    /// `Desktop`, `Mobile`, `Tablet` or `Bot`.
    pub device: ArcStr,
    /// Browser family, e.g. `Chrome`, `Mobile Safari`.
    pub browser: ArcStr,
    /// Browser major.minor version, e.g. `120.0`.
    pub browser_version: ArcStr,
    /// Operating system family, e.g. `Windows`, `iOS`.
    pub os: ArcStr,
    /// Operating system major.minor version, e.g. `17.2`.
    pub os_version: ArcStr,
}

/// Where the client address is, looked up before the address is anonymised. Empty strings
/// when the address is missing, private or not in the database.
///
/// A dimension: few distinct values over many events, so its strings are shared [`ArcStr`]s
/// (the decoder hands out one copy per thread, see `wire::strings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, e.g. `DE`.
    pub country: ArcStr,
    /// First-level subdivision as the database names it, e.g. `Bavaria`.
    pub region: ArcStr,
    /// City name, e.g. `Munich`.
    pub city: ArcStr,
}

/// Where the visitor came from, classified once at ingestion.
///
/// A dimension: few distinct values over many events, so its strings are shared [`ArcStr`]s
/// (the decoder hands out one copy per thread, see `wire::strings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acquisition {
    /// The source: a known site's name (`Google`, `Facebook`) when `utm_source` or the
    /// referrer's host is one, else `utm_source`, else the referrer's host without `www.`;
    /// empty for direct traffic.
    pub source: ArcStr,
    /// The default channel group (GA4's names: `Direct`, `Organic Search`, `Paid Search`,
    /// `Organic Social`, `Paid Social`, `Email`, `Referral`, ...).
    pub channel: ArcStr,
}

/// One validated, normalised event as it travels through Kafka and the engine.
///
/// Optional Segment ids are empty strings when absent: ClickHouse columns are non-nullable
/// strings (cheaper, and what every query wants), and the distinction carries no meaning.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Serialize, Deserialize)]
pub struct Event {
    /// Tenant that owns the event, resolved from the write key by the gateway.
    pub tenant: String,
    /// Segment `messageId` (or a gateway-assigned UUIDv7): the dedup key end to end.
    pub message_id: String,
    /// Segment `type`.
    pub kind: EventKind,
    /// Segment `event` (track) or `name` (page, screen).
    pub name: String,
    /// Segment `anonymousId`.
    pub anonymous_id: String,
    /// Segment `userId`.
    pub user_id: String,
    /// Segment `previousId` (alias only).
    pub previous_id: String,
    /// Segment `groupId` (group only).
    pub group_id: String,
    /// Event time in Unix milliseconds, corrected for client clock skew:
    /// `timestamp + (received_at - sent_at)`.
    pub timestamp_ms: i64,
    /// The client's own `timestamp`, uncorrected, when it sent one.
    pub original_timestamp_ms: Option<i64>,
    /// The client's `sentAt`, when it sent one.
    pub sent_at_ms: Option<i64>,
    /// When the gateway received the request (Unix milliseconds).
    pub received_at_ms: i64,
    /// Page context.
    pub page: Page,
    /// Campaign attribution.
    pub campaign: Campaign,
    /// Client IP, already anonymised unless the tenant opted out.
    pub ip: String,
    /// Client user agent.
    pub user_agent: String,
    /// True when the user agent matches a known bot; bots are flagged, never dropped.
    pub is_bot: bool,
    /// `context.locale`.
    pub locale: String,
    /// `context.library.name`/`version`, e.g. `analytics.js/4.1.0`.
    pub library: String,
    /// Top-level `properties`: string values verbatim, anything else as JSON text.
    pub properties: Vec<(String, String)>,
    /// Top-level `traits` (identify, group), encoded like `properties`.
    pub traits: Vec<(String, String)>,
    /// Remaining `context` fields not lifted into typed fields above, encoded like `properties`.
    pub context: Vec<(String, String)>,
    /// Browser, OS and device read from `user_agent` (wire version 3).
    pub client: Client,
    /// Country, region and city of the client address (wire version 3).
    pub location: Location,
    /// Source and channel (wire version 3).
    pub acquisition: Acquisition,
    /// True for what a page does on its own rather than what its visitor does: Plausible's
    /// `interactive: false` events and its `engagement` pings (wire version 3; false before).
    pub non_interactive: bool,
}

impl Event {
    /// An event with the given identity and time and every other field empty (received when
    /// it happened): the starting point for generators and tests.
    pub fn new(tenant: &str, message_id: &str, kind: EventKind, timestamp_ms: i64) -> Event {
        Event {
            tenant: tenant.to_owned(),
            message_id: message_id.to_owned(),
            kind,
            name: String::new(),
            anonymous_id: String::new(),
            user_id: String::new(),
            previous_id: String::new(),
            group_id: String::new(),
            timestamp_ms,
            original_timestamp_ms: Some(timestamp_ms),
            sent_at_ms: None,
            received_at_ms: timestamp_ms,
            page: Page::default(),
            campaign: Campaign::default(),
            ip: String::new(),
            user_agent: String::new(),
            is_bot: false,
            locale: String::new(),
            library: String::new(),
            properties: vec![],
            traits: vec![],
            context: vec![],
            client: Client::default(),
            location: Location::default(),
            acquisition: Acquisition::default(),
            non_interactive: false,
        }
    }

    /// The id that keys the visitor: `anonymous_id`, or `user_id` for server-side events that
    /// carry no anonymous id. Kafka partitions by it so one visitor's events stay in order.
    pub fn visitor_id(&self) -> &str {
        if self.anonymous_id.is_empty() {
            &self.user_id
        } else {
            &self.anonymous_id
        }
    }

    /// The Kafka record key, `tenant:visitor_id`.
    pub fn partition_key(&self) -> String {
        format!("{}:{}", self.tenant, self.visitor_id())
    }
}

/// A record as read from a Kafka partition, before decoding. It carries its position so that
/// every downstream stage (including the dead-letter path) can account for offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Kafka partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The wire-encoded event (see [`crate::wire`]).
    pub payload: Vec<u8>,
}

/// An operator's instruction to the engine, sent as JSON on the control topic, e.g.
/// `{"type":"unmerge","tenant":"acme","anonymous_id":"a-1","user_id":"u-1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Removes the identity link between an anonymous (or `previousId`) id and a user id:
    /// the person splits again and everything derived is corrected.
    Unmerge {
        /// Tenant.
        tenant: String,
        /// The anonymous id (or an alias's `previousId`).
        anonymous_id: String,
        /// The user id.
        user_id: String,
    },
    /// Undoes an earlier `unmerge` of the same link.
    Remerge {
        /// Tenant.
        tenant: String,
        /// The anonymous id (or an alias's `previousId`).
        anonymous_id: String,
        /// The user id.
        user_id: String,
    },
    /// Erases a person: every event carrying one of the ids received until `requested_at_ms`
    /// goes from the engine's state and every table, and later ones are suppressed (see
    /// [`crate::erasure`]). Written by the query gateway (`DELETE /api/persons/{id}`).
    Erase {
        /// The request's id (UUIDv7), the key of its `_deletions` rows.
        request_id: String,
        /// Tenant.
        tenant: String,
        /// [`crate::erasure::id_hash`] of each of the person's ids: never the ids.
        id_hashes: Vec<String>,
        /// When the request was accepted, Unix ms (UTC).
        requested_at_ms: i64,
        /// [`crate::erasure::salt_check`] of the salt the hashes were made with: an engine
        /// with another salt leaves the request pending (and alerting) rather than completing
        /// it without a match. Empty in records written before it existed.
        #[serde(default)]
        salt_check: String,
    },
    /// Lets events carrying these ids in again, from `lifted_at_ms` on (`DELETE
    /// /api/suppressions/{id}`); what was erased stays erased.
    LiftSuppression {
        /// Tenant.
        tenant: String,
        /// [`crate::erasure::id_hash`] of the ids.
        id_hashes: Vec<String>,
        /// Unix ms (UTC).
        lifted_at_ms: i64,
    },
    /// Removes a whole tenant: every event received until `requested_at_ms` goes from the
    /// engine's state and every table (the operator command `engine remove-tenant`).
    RemoveTenant {
        /// The request's id (UUIDv7).
        request_id: String,
        /// Tenant.
        tenant: String,
        /// Unix ms (UTC).
        requested_at_ms: i64,
    },
    /// The second half of an erasure, written by the engine's executor: the per-minute rollups
    /// of `minutes` were recounted without the person, but the dataflow still held those
    /// minutes' windows (with the person in them) and may write them again; once `due_ms` has
    /// passed it has let them go, and they are recounted from the stored rows for good. On
    /// the topic so that a restart does not forget it. Events pass through untouched.
    RecountRollups {
        /// `{erasure's request id}:rollups`, the key of its `_deletions` row.
        request_id: String,
        /// Tenant.
        tenant: String,
        /// Minute starts, Unix s (UTC).
        minutes: Vec<u32>,
        /// Unix ms (UTC).
        due_ms: i64,
    },
}
