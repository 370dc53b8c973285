//! Turns Segment-shaped JSON into validated [`Event`]s.
//!
//! This is the only place that interprets client JSON. It refuses an event only for what it
//! cannot safely guess (missing ids, a track call without a name, wrong types), reporting every
//! problem of the event at once, each named by field, so a client can fix and resend without a
//! round trip per mistake. A field that only refines the event (a time, the client address) and
//! cannot be read is done without and reported as [`Ignored`]: losing the event for it would
//! lose more than the field (PostHog does the same with its "ignored invalid timestamp").

use std::net::IpAddr;

use schemas::tenants::{Tenant, TrailingSlash};
use schemas::warning::bounded_value;
use schemas::{Acquisition, Campaign, Client, Event, EventKind, Location, Page, WarningKind};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::address::client_of_chain;
use crate::enrich::Enricher;

/// Segment's documented limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted JSON encoding of one event.
    pub max_event_bytes: usize,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Most events accepted in one batch.
    pub max_batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_request_bytes: 500 * 1024,
            max_batch_events: 2_500,
        }
    }
}

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldIssue {
    /// Position in the batch; absent for single-event calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The JSON field, in Segment's spelling (`event`, `context.ip`, ...).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldIssue {
    /// An issue with `field`, explained by `message`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldIssue {
            index: None,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A field the gateway could not read and did without; the event was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Which rule applied.
    pub kind: WarningKind,
    /// The field, in Segment's spelling.
    pub field: String,
    /// The value as sent (JSON text, bounded).
    pub value: String,
    /// What was wrong with it.
    pub detail: String,
}

impl Ignored {
    /// The ignored `field`, its `value` as sent, and why.
    pub fn new(kind: WarningKind, field: &str, value: &Value, detail: impl Into<String>) -> Self {
        let value = match value {
            Value::String(text) => bounded_value(text),
            other => bounded_value(&other.to_string()),
        };
        Ignored {
            kind,
            field: field.to_owned(),
            value,
            detail: detail.into(),
        }
    }
}

/// An accepted event and the fields it was accepted without.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The event.
    pub event: Event,
    /// Fields that could not be read (their defaults were used).
    pub ignored: Vec<Ignored>,
}

/// What the gateway knows about a request beyond its body.
#[derive(Debug, Clone)]
pub struct RequestMeta<'a> {
    /// The tenant the write key belongs to.
    pub tenant: &'a Tenant,
    /// When the request arrived, Unix milliseconds.
    pub received_at_ms: i64,
    /// The client's address (socket peer, or `X-Forwarded-For` when trusted).
    pub client_ip: Option<IpAddr>,
    /// The `User-Agent` header, used when the event has no `context.userAgent`.
    pub user_agent: Option<&'a str>,
    /// The gateway's enrichment rules and databases.
    pub enricher: &'a Enricher,
}

/// Fields a batch envelope applies to each of its events unless the event sets its own.
#[derive(Debug, Clone, Default)]
pub struct BatchDefaults<'a> {
    /// Envelope-level `sentAt`.
    pub sent_at: Option<&'a Value>,
    /// Envelope-level `context`, merged under each event's own.
    pub context: Option<&'a Map<String, Value>>,
}

/// Validates one event object and normalises it.
///
/// `kind` is the type implied by the URL (`/v1/track`); batch events carry `type` instead.
/// Errors: every field that makes the event unusable, each named.
pub fn normalize(
    kind: Option<EventKind>,
    object: &Map<String, Value>,
    defaults: &BatchDefaults<'_>,
    meta: &RequestMeta<'_>,
) -> Result<Normalized, Vec<FieldIssue>> {
    let mut issues = Vec::new();
    let mut ignored = Vec::new();
    let mut fields = Fields {
        object,
        issues: &mut issues,
        ignored: &mut ignored,
    };

    let kind = match kind {
        Some(kind) => Some(kind),
        None => match object.get("type") {
            Some(Value::String(name)) => EventKind::parse(name).or_else(|| {
                fields.issue(
                    "type",
                    format!("unknown type {name:?}; expected one of track, page, screen, identify, alias, group"),
                );
                None
            }),
            _ => {
                fields.issue("type", "is required in a batch (track, page, screen, identify, alias, group)");
                None
            }
        },
    };

    let message_id = fields.id("messageId");
    let anonymous_id = fields.id("anonymousId");
    let user_id = fields.id("userId");
    let previous_id = fields.id("previousId");
    let group_id = fields.id("groupId");
    let timestamp = fields.time("timestamp");
    let original_timestamp = fields.time("originalTimestamp");
    let sent_at = match object.get("sentAt") {
        Some(_) => fields.time("sentAt"),
        None => defaults
            .sent_at
            .and_then(|value| fields.read_time("sentAt", value)),
    };
    let properties = fields.object("properties");
    let traits = fields.object("traits");
    let own_context = fields.object("context");

    if anonymous_id.is_empty() && user_id.is_empty() {
        fields.issue("anonymousId", "either userId or anonymousId is required");
    }

    let name = match kind {
        Some(EventKind::Track) => {
            let name = fields.string("event");
            if name.is_empty() {
                fields.issue(
                    "event",
                    "is required for track calls and must be a non-empty string",
                );
            }
            name
        }
        Some(EventKind::Page | EventKind::Screen) => fields.string("name"),
        _ => String::new(),
    };
    if kind == Some(EventKind::Alias) {
        if previous_id.is_empty() {
            fields.issue("previousId", "is required for alias calls");
        }
        if user_id.is_empty() {
            fields.issue("userId", "is required for alias calls");
        }
    }
    if kind == Some(EventKind::Group) && group_id.is_empty() {
        fields.issue("groupId", "is required for group calls");
    }

    let context = merge_context(defaults.context, own_context);
    let lifted = lift_context(&context, properties, kind, meta.tenant.trailing_slash);
    ignored.extend(lifted.ignored_ip.clone());

    let client_ip = lifted.ip.or(meta.client_ip);
    let ip = match client_ip {
        Some(ip) if meta.tenant.anonymize_ip => anonymize_ip(ip).to_string(),
        Some(ip) => ip.to_string(),
        None => String::new(),
    };
    let user_agent = lifted
        .user_agent
        .or_else(|| meta.user_agent.map(str::to_owned))
        .unwrap_or_default();

    let (Some(kind), true) = (kind, issues.is_empty()) else {
        return Err(issues);
    };

    let client_time = timestamp.or(original_timestamp);
    let mut timestamp_ms = event_time(client_time, sent_at, meta.received_at_ms);
    // The flag is the gateway's to set: a client's own is dropped.
    let mut context: Vec<(String, String)> = lifted
        .rest
        .into_iter()
        .filter(|(key, _)| key != CLAMPED_FLAG)
        .collect();
    if timestamp_ms > meta.received_at_ms.saturating_add(MAX_FUTURE_MS) {
        // A client clock far ahead that sentAt could not correct (PostHog clamps the same
        // way): the event happened when it arrived, and the original time is kept as a flag.
        context.push((CLAMPED_FLAG.to_owned(), timestamp_ms.to_string()));
        timestamp_ms = meta.received_at_ms;
    }

    let mut event = Event {
        tenant: meta.tenant.id.clone(),
        message_id: if message_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            message_id
        },
        kind,
        name,
        anonymous_id,
        user_id,
        previous_id,
        group_id,
        timestamp_ms,
        original_timestamp_ms: client_time,
        sent_at_ms: sent_at,
        received_at_ms: meta.received_at_ms,
        page: lifted.page,
        campaign: lifted.campaign,
        ip,
        is_bot: false,
        user_agent,
        locale: lifted.locale,
        library: lifted.library,
        properties: properties.map(flatten).unwrap_or_default(),
        traits: traits.map(flatten).unwrap_or_default(),
        context,
        client: Client::default(),
        location: Location::default(),
        acquisition: Acquisition::default(),
        non_interactive: false,
    };
    meta.enricher
        .enrich(&mut event, client_ip, &meta.tenant.domains);
    Ok(Normalized { event, ignored })
}

/// How far after its receipt an event may claim to have happened: a day.
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// The `context` key that flags an event whose time was clamped to its receipt; its value is
/// the time it claimed (Unix ms).
pub const CLAMPED_FLAG: &str = "clickstream_clamped_from_ms";

/// Event time corrected for the client's clock skew, as Segment defines it:
/// `timestamp + (receivedAt - sentAt)`. A client whose clock is an hour fast sends both
/// `timestamp` and `sentAt` an hour ahead; the difference cancels the error. Without a client
/// timestamp the event happened when it arrived.
pub fn event_time(timestamp_ms: Option<i64>, sent_at_ms: Option<i64>, received_at_ms: i64) -> i64 {
    match (timestamp_ms, sent_at_ms) {
        (Some(timestamp), Some(sent_at)) => {
            timestamp.saturating_add(received_at_ms.saturating_sub(sent_at))
        }
        (Some(timestamp), None) => timestamp,
        (None, _) => received_at_ms,
    }
}

/// Zeroes the host part that identifies a person: the last octet of IPv4, the last 80 bits of
/// IPv6 (what Google Analytics and Matomo do), leaving enough for country-level geo lookups.
pub fn anonymize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return anonymize_ip(IpAddr::V4(v4));
            }
            let mut octets = v6.octets();
            octets[6..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// Reads typed fields off one event object, recording an issue per malformed field that
/// makes the event unusable, and an [`Ignored`] per one it can do without.
struct Fields<'a, 'b> {
    object: &'a Map<String, Value>,
    issues: &'b mut Vec<FieldIssue>,
    ignored: &'b mut Vec<Ignored>,
}

impl<'a> Fields<'a, '_> {
    fn issue(&mut self, field: &str, message: impl Into<String>) {
        self.issues.push(FieldIssue::new(field, message));
    }

    /// Ids may be strings or numbers (many server SDKs send numeric user ids); absent or null
    /// is empty.
    fn id(&mut self, field: &str) -> String {
        match self.object.get(field) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(id)) if id.len() <= 256 => id.clone(),
            Some(Value::String(_)) => {
                self.issue(field, "must be at most 256 bytes");
                String::new()
            }
            Some(Value::Number(number)) if number.to_string().len() <= 256 => number.to_string(),
            Some(Value::Number(_)) => {
                self.issue(field, "must be at most 256 bytes");
                String::new()
            }
            Some(_) => {
                self.issue(field, "must be a string");
                String::new()
            }
        }
    }

    fn string(&mut self, field: &str) -> String {
        match self.object.get(field) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(_) => {
                self.issue(field, "must be a string");
                String::new()
            }
        }
    }

    fn time(&mut self, field: &str) -> Option<i64> {
        let value = self.object.get(field)?;
        self.read_time(field, value)
    }

    /// A time field's value; one that is not a time is ignored (the event keeps the time it
    /// has without it) and reported.
    fn read_time(&mut self, field: &str, value: &Value) -> Option<i64> {
        parse_time(value).unwrap_or_else(|message| {
            let ignored = Ignored::new(WarningKind::InvalidTimeIgnored, field, value, message);
            self.ignored.push(ignored);
            None
        })
    }

    /// An object field. An empty array reads as an empty object: PHP encodes an empty
    /// associative array as `[]`, so PHP integrations send `"properties": []`.
    fn object(&mut self, field: &str) -> Option<&'a Map<String, Value>> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Object(object)) => Some(object),
            Some(_) => {
                self.issue(field, "must be an object");
                None
            }
        }
    }
}

/// Parses an ISO 8601 / RFC 3339 time to Unix milliseconds (UTC), with jiff's parser of
/// Temporal's ISO 8601 grammar: offsets `Z`, `+05:30`, `+0530` (the basic form: Segment's
/// Android SDK 3.x, PHP's `DATE_ISO8601`) and `+05`; `T`, `t` or a space between date and
/// time; seconds optional (Java's `OffsetDateTime.toString()` drops zero seconds); fractions
/// to the nanosecond after `.` or `,`; a bracketed zone annotation (RFC 9557; alone, it
/// names the zone of the local time); basic-format dates (`20261202T100000Z`). A time
/// without an offset or zone (Python's naive `isoformat()`, .NET's unspecified kind) is UTC,
/// as Segment reads it. A date without a time is not a time. Precision below the millisecond
/// is dropped.
pub fn parse_time(value: &Value) -> Result<Option<i64>, String> {
    let Value::String(text) = value else {
        return match value {
            Value::Null => Ok(None),
            _ => Err("must be an ISO-8601 time string".to_owned()),
        };
    };
    let text = text.trim();
    let refused =
        || format!("must be an ISO-8601 time like 2024-05-01T12:00:00.000Z, got {text:?}");
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(Some(time.as_millisecond()));
    }
    // A zone annotation without an offset names the zone the local time is in.
    if let Ok(time) = text.parse::<jiff::Zoned>() {
        return Ok(Some(time.timestamp().as_millisecond()));
    }
    // An annotation that could not be read (an unknown zone) must not turn into UTC, and a
    // date alone is not a time.
    if text.contains('[') || !text.contains(['T', 't', ' ']) {
        return Err(refused());
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|local| local.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|time| Some(time.timestamp().as_millisecond()))
        .ok_or_else(refused)
}

/// The envelope's context first, then the event's own keys over it.
fn merge_context(
    envelope: Option<&Map<String, Value>>,
    own: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut merged = envelope.cloned().unwrap_or_default();
    if let Some(own) = own {
        merged.extend(own.iter().map(|(key, value)| (key.clone(), value.clone())));
    }
    merged
}

/// Context fields with typed columns downstream; everything else stays in `rest`.
#[derive(Default)]
struct LiftedContext {
    ip: Option<IpAddr>,
    /// `context.ip` when it held no address.
    ignored_ip: Option<Ignored>,
    user_agent: Option<String>,
    page: Page,
    campaign: Campaign,
    locale: String,
    library: String,
    rest: Vec<(String, String)>,
}

const LIFTED_KEYS: [&str; 6] = ["ip", "userAgent", "page", "campaign", "locale", "library"];

fn lift_context(
    context: &Map<String, Value>,
    properties: Option<&Map<String, Value>>,
    kind: Option<EventKind>,
    trailing_slash: TrailingSlash,
) -> LiftedContext {
    let text = |object: Option<&Map<String, Value>>, key: &str| -> String {
        match object.and_then(|object| object.get(key)) {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        }
    };
    let mut lifted = LiftedContext::default();

    match context.get("ip") {
        None | Some(Value::Null) => {}
        Some(Value::String(ip)) if ip.trim().is_empty() => {}
        Some(value @ Value::String(ip)) => match client_of_chain(ip) {
            Some(ip) => lifted.ip = Some(ip),
            None => {
                let detail = "holds no IP address; the request's address was used";
                let ignored =
                    Ignored::new(WarningKind::InvalidIpIgnored, "context.ip", value, detail);
                lifted.ignored_ip = Some(ignored);
            }
        },
        Some(value) => {
            let detail = "must be a string; the request's address was used";
            let ignored = Ignored::new(WarningKind::InvalidIpIgnored, "context.ip", value, detail);
            lifted.ignored_ip = Some(ignored);
        }
    }
    if let Some(Value::String(agent)) = context.get("userAgent") {
        lifted.user_agent = Some(agent.clone());
    }

    // A page call describes its page in `properties`; other calls inherit `context.page`.
    let context_page = context.get("page").and_then(Value::as_object);
    let page_properties = if kind == Some(EventKind::Page) {
        properties
    } else {
        None
    };
    let pick = |key: &str| {
        let own = text(page_properties, key);
        if own.is_empty() {
            text(context_page, key)
        } else {
            own
        }
    };
    let sent_path = pick("path");
    lifted.page = Page {
        path: String::new(),
        url: pick("url"),
        referrer: pick("referrer"),
        title: pick("title"),
    };
    let parsed_url = url::Url::parse(&lifted.page.url).ok();
    let path = match &parsed_url {
        Some(url) if sent_path.trim().is_empty() => url.path(),
        _ => &sent_path,
    };
    lifted.page.path = normalize_path(path, trailing_slash);

    let campaign = context.get("campaign").and_then(Value::as_object);
    lifted.campaign = Campaign {
        source: text(campaign, "source").into(),
        medium: text(campaign, "medium").into(),
        name: text(campaign, "name").into(),
        content: text(campaign, "content").into(),
        term: text(campaign, "term").into(),
    };
    if lifted.campaign == Campaign::default() {
        // The URL's query, else the one a client left on the path.
        let query = match &parsed_url {
            Some(url) => url.query().unwrap_or_default(),
            None => "",
        };
        let query = if query.is_empty() {
            path_query(&sent_path)
        } else {
            query
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "utm_source" => lifted.campaign.source = value.as_ref().into(),
                "utm_medium" => lifted.campaign.medium = value.as_ref().into(),
                "utm_campaign" => lifted.campaign.name = value.as_ref().into(),
                "utm_content" => lifted.campaign.content = value.as_ref().into(),
                "utm_term" => lifted.campaign.term = value.as_ref().into(),
                _ => {}
            }
        }
    }

    lifted.locale = text(Some(context), "locale");
    let library = context.get("library").and_then(Value::as_object);
    lifted.library = match (text(library, "name"), text(library, "version")) {
        (name, version) if version.is_empty() => name,
        (name, version) => format!("{name}/{version}"),
    };
    lifted.rest = context
        .iter()
        .filter(|(key, _)| !LIFTED_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value_text(value)))
        .collect();
    lifted
}

/// The pathname of a page's path as clients send it. Segment's spec defines `path` as the
/// URL's pathname, yet clients send `location.pathname + location.search`, a fragment, or a
/// whole URL, and each form would split one page into several rows of top pages, filters and
/// funnels. The query and fragment are cut (campaign parameters are read before), a whole URL
/// gives its path, a missing leading slash is added, and a trailing slash follows the tenant's
/// [`TrailingSlash`] (the root stays `/`). An empty path stays empty (not a page).
pub fn normalize_path(sent: &str, trailing_slash: TrailingSlash) -> String {
    let sent = sent.trim();
    let whole_url = sent
        .contains("://")
        .then(|| url::Url::parse(sent).ok())
        .flatten();
    let path = match &whole_url {
        Some(url) => url.path(),
        None => sent.split(['?', '#']).next().unwrap_or_default(),
    };
    if path.is_empty() {
        return String::new();
    }
    let mut path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if trailing_slash == TrailingSlash::Strip {
        let kept = path.trim_end_matches('/').len().max(1);
        path.truncate(kept);
    }
    path
}

/// The query a client left on a path (`/pricing?utm_source=x` -> `utm_source=x`).
fn path_query(sent: &str) -> &str {
    let without_fragment = sent.split('#').next().unwrap_or_default();
    without_fragment
        .split_once('?')
        .map_or("", |(_, query)| query)
}

/// Free-form maps become `key -> text`: strings verbatim, anything else as compact JSON, so
/// ClickHouse can store them in a `Nested(key String, value String)` column on any version.
fn flatten(object: &Map<String, Value>) -> Vec<(String, String)> {
    object
        .iter()
        .map(|(key, value)| (key.clone(), value_text(value)))
        .collect()
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant() -> Tenant {
        Tenant {
            id: "acme".into(),
            write_keys: vec!["wk".into()],
            read_keys: vec![],
            share_keys: vec![],
            admin_keys: vec![],
            anonymize_ip: true,
            time_zone: "UTC".into(),
            rate_limit: None,
            trailing_slash: TrailingSlash::Keep,
            domains: vec![],
            goals: vec![],
            retention_days: None,
        }
    }

    fn meta(tenant: &Tenant) -> RequestMeta<'_> {
        RequestMeta {
            tenant,
            received_at_ms: 1_700_000_000_000,
            client_ip: Some("203.0.113.77".parse().unwrap()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
            enricher: enricher(),
        }
    }

    fn enricher() -> &'static Enricher {
        static ENRICHER: std::sync::LazyLock<Enricher> = std::sync::LazyLock::new(|| {
            Enricher::load(&crate::enrich::EnrichConfig::default()).unwrap()
        });
        &ENRICHER
    }

    fn run(kind: Option<EventKind>, body: Value) -> Result<Event, Vec<FieldIssue>> {
        normalized(kind, body).map(|normalized| normalized.event)
    }

    fn normalized(kind: Option<EventKind>, body: Value) -> Result<Normalized, Vec<FieldIssue>> {
        let tenant = tenant();
        normalize(
            kind,
            body.as_object().unwrap(),
            &BatchDefaults::default(),
            &meta(&tenant),
        )
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|issue| issue.field.as_str()).collect()
    }

    #[test]
    fn track_with_segment_fields() {
        let event = run(
            Some(EventKind::Track),
            json!({
                "messageId": "m-1", "anonymousId": "a-1", "userId": 42, "event": "Signed Up",
                "properties": {"plan": "pro", "seats": 3},
                "context": {"ip": "198.51.100.23", "locale": "en-GB",
                            "library": {"name": "analytics.js", "version": "4.1.0"},
                            "page": {"url": "https://x.io/pricing?utm_source=news&utm_medium=mail"},
                            "timezone": "Europe/London"},
                "integrations": {"All": false}
            }),
        )
        .unwrap();
        assert_eq!(event.tenant, "acme");
        assert_eq!(event.message_id, "m-1");
        assert_eq!(event.kind, EventKind::Track);
        assert_eq!(event.name, "Signed Up");
        assert_eq!(event.user_id, "42");
        assert_eq!(event.ip, "198.51.100.0");
        assert_eq!(event.locale, "en-GB");
        assert_eq!(event.library, "analytics.js/4.1.0");
        assert_eq!(event.page.path, "/pricing");
        assert_eq!(event.campaign.source, "news");
        assert_eq!(event.campaign.medium, "mail");
        assert_eq!(
            event.properties,
            vec![("plan".into(), "pro".into()), ("seats".into(), "3".into())]
        );
        assert_eq!(
            event.context,
            vec![("timezone".into(), "Europe/London".into())]
        );
        assert_eq!(
            event.timestamp_ms, 1_700_000_000_000,
            "no client time: received time"
        );
        assert!(!event.is_bot);
    }

    #[test]
    fn missing_message_id_gets_a_uuid_v7() {
        let event = run(Some(EventKind::Page), json!({"anonymousId": "a"})).unwrap();
        let id = uuid::Uuid::parse_str(&event.message_id).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn clock_skew_is_corrected() {
        // The client's clock runs 1 h fast: timestamp and sentAt are both an hour ahead.
        let event = run(
            Some(EventKind::Page),
            json!({"anonymousId": "a", "timestamp": "2023-11-14T23:13:10Z",
                   "sentAt": "2023-11-14T23:13:20Z"}),
        )
        .unwrap();
        // received 2023-11-14T22:13:20Z: the event happened 10 s before that.
        assert_eq!(event.timestamp_ms, 1_700_000_000_000 - 10_000);
        assert_eq!(event.original_timestamp_ms, Some(1_700_003_590_000));
        assert_eq!(event_time(Some(5), None, 100), 5);
        assert_eq!(event_time(None, Some(5), 100), 100);
        assert_eq!(
            event_time(Some(i64::MAX), Some(i64::MIN), 0),
            i64::MAX,
            "saturates"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let issues = run(
            Some(EventKind::Track),
            json!({"userId": ["x"], "timestamp": "yesterday", "properties": 3,
                   "context": {"ip": "not-an-ip"}}),
        )
        .unwrap_err();
        assert_eq!(
            fields(&issues),
            ["userId", "properties", "anonymousId", "event"],
            "a bad time or address alone does not refuse an event"
        );
    }

    /// Issue 20: a time or an address that cannot be read costs the field, not the event.
    #[test]
    fn unreadable_times_and_addresses_are_done_without() {
        let kept = normalized(
            Some(EventKind::Track),
            json!({"userId": "u", "event": "e", "timestamp": "yesterday", "sentAt": 17,
                   "context": {"ip": "not-an-ip"}}),
        )
        .unwrap();
        assert_eq!(kept.event.timestamp_ms, 1_700_000_000_000, "received time");
        for not_a_time in [
            "2023-11-14",
            "2023-11-14T22:13:20[Mars/Olympus]",
            "22:13:20",
        ] {
            let event = normalized(
                Some(EventKind::Track),
                json!({"userId": "u", "event": "e", "timestamp": not_a_time}),
            )
            .unwrap();
            assert_eq!(event.event.timestamp_ms, 1_700_000_000_000, "{not_a_time}");
            assert_eq!(event.ignored.len(), 1, "{not_a_time}");
        }
        assert_eq!(kept.event.ip, "203.0.113.0", "the request's address");
        let ignored: Vec<(WarningKind, &str, &str)> = kept
            .ignored
            .iter()
            .map(|i| (i.kind, i.field.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            ignored,
            [
                (WarningKind::InvalidTimeIgnored, "timestamp", "yesterday"),
                (WarningKind::InvalidTimeIgnored, "sentAt", "17"),
                (WarningKind::InvalidIpIgnored, "context.ip", "not-an-ip"),
            ]
        );
    }

    /// Issue 20: `context.ip` as proxies and integrations write it.
    #[test]
    fn client_addresses_in_every_proxy_form() {
        for (sent, stored) in [
            ("203.0.113.7:51234", "203.0.113.0"),
            ("203.0.113.7, 10.0.0.1", "203.0.113.0"),
            ("10.0.0.1, 198.51.100.9", "198.51.100.0"),
            ("[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1::"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
        ] {
            let event = run(
                Some(EventKind::Page),
                json!({"anonymousId": "a", "context": {"ip": sent}}),
            )
            .unwrap();
            assert_eq!(event.ip, stored, "{sent}");
        }
    }

    /// Issue 20: `path` is the URL's pathname (Segment's spec), whatever the client sent.
    #[test]
    fn paths_are_pathnames() {
        for (sent, keep, strip) in [
            ("/pricing?ref=nav", "/pricing", "/pricing"),
            ("/pricing#plans", "/pricing", "/pricing"),
            ("/pricing/?ref=nav#x", "/pricing/", "/pricing"),
            ("pricing", "/pricing", "/pricing"),
            ("https://x.io/docs/a/?q=1", "/docs/a/", "/docs/a"),
            ("/", "/", "/"),
            ("//", "//", "/"),
            ("", "", ""),
        ] {
            assert_eq!(normalize_path(sent, TrailingSlash::Keep), keep, "{sent}");
            assert_eq!(normalize_path(sent, TrailingSlash::Strip), strip, "{sent}");
        }
        let event = run(
            Some(EventKind::Page),
            json!({"anonymousId": "a",
                   "properties": {"path": "/pricing?utm_source=news&ref=nav", "url": "https://x.io/pricing"},
                   "context": {"page": {"path": "/ignored"}}}),
        )
        .unwrap();
        assert_eq!(event.page.path, "/pricing");
        assert_eq!(
            event.campaign.source, "news",
            "UTM left on the path is read"
        );
        let track = run(
            Some(EventKind::Track),
            json!({"anonymousId": "a", "event": "e",
                   "context": {"page": {"path": "/a?b=c#d", "url": "https://x.io/a?b=c"}}}),
        )
        .unwrap();
        assert_eq!(track.page.path, "/a", "context.page too");
        let mut tenant = tenant();
        tenant.trailing_slash = TrailingSlash::Strip;
        let body = json!({"anonymousId": "a", "properties": {"url": "https://x.io/docs/"}});
        let stripped = normalize(
            Some(EventKind::Page),
            body.as_object().unwrap(),
            &BatchDefaults::default(),
            &meta(&tenant),
        )
        .unwrap()
        .event;
        assert_eq!(stripped.page.path, "/docs", "a path read off the URL too");
    }

    #[test]
    fn per_type_requirements() {
        let alias = run(Some(EventKind::Alias), json!({"anonymousId": "a"})).unwrap_err();
        assert_eq!(fields(&alias), ["previousId", "userId"]);
        let group = run(Some(EventKind::Group), json!({"userId": "u"})).unwrap_err();
        assert_eq!(fields(&group), ["groupId"]);
        let batch_item = run(None, json!({"type": "pageview", "anonymousId": "a"})).unwrap_err();
        assert_eq!(fields(&batch_item), ["type"]);
        assert!(run(None, json!({"type": "identify", "userId": "u"})).is_ok());
    }

    #[test]
    fn page_properties_win_over_context_page() {
        let event = run(
            Some(EventKind::Page),
            json!({"anonymousId": "a", "name": "Home",
                   "properties": {"path": "/home", "referrer": "https://google.com/"},
                   "context": {"page": {"path": "/ignored", "title": "Welcome"}}}),
        )
        .unwrap();
        assert_eq!(event.name, "Home");
        assert_eq!(event.page.path, "/home");
        assert_eq!(event.page.referrer, "https://google.com/");
        assert_eq!(event.page.title, "Welcome");
    }

    #[test]
    fn envelope_defaults_apply_unless_overridden() {
        let tenant = tenant();
        let envelope = json!({"sentAt": "2023-11-14T22:13:21Z", "context": {"locale": "fr", "ip": "192.0.2.9"}});
        let defaults = BatchDefaults {
            sent_at: envelope.get("sentAt"),
            context: envelope.get("context").and_then(Value::as_object),
        };
        let body = json!({"type": "track", "event": "x", "anonymousId": "a",
                          "timestamp": "2023-11-14T22:13:20Z", "context": {"locale": "de"}});
        let event = normalize(None, body.as_object().unwrap(), &defaults, &meta(&tenant))
            .unwrap()
            .event;
        assert_eq!(event.locale, "de");
        assert_eq!(event.ip, "192.0.2.0");
        assert_eq!(event.timestamp_ms, 1_700_000_000_000 - 1_000);
    }

    #[test]
    fn ip_anonymization() {
        let v6: IpAddr = "2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap();
        assert_eq!(anonymize_ip(v6).to_string(), "2001:db8:85a3::");
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(anonymize_ip(mapped).to_string(), "198.51.100.0");
        let mut opted_out = tenant();
        opted_out.anonymize_ip = false;
        let body = json!({"anonymousId": "a"});
        let event = normalize(
            None.or(Some(EventKind::Page)),
            body.as_object().unwrap(),
            &BatchDefaults::default(),
            &meta(&opted_out),
        )
        .unwrap()
        .event;
        assert_eq!(event.ip, "203.0.113.77");
    }

    #[test]
    fn bots_are_flagged_not_dropped() {
        let event = run(
            Some(EventKind::Page),
            json!({"anonymousId": "a", "context": {"userAgent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}}),
        )
        .unwrap();
        assert!(event.is_bot);
    }

    /// Issue 9: lenient where clients are sloppy.
    #[test]
    fn php_empty_arrays_read_as_empty_objects() {
        let event = run(
            Some(EventKind::Identify),
            json!({"userId": "u", "properties": [], "traits": [], "context": []}),
        )
        .unwrap();
        assert!(event.properties.is_empty() && event.traits.is_empty());
        let issues = run(
            Some(EventKind::Track),
            json!({"userId": "u", "event": "e", "properties": ["a"]}),
        )
        .unwrap_err();
        assert_eq!(
            fields(&issues),
            ["properties"],
            "a non-empty array is still wrong"
        );
    }

    #[test]
    fn a_time_without_offset_is_utc() {
        for text in [
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.000",
            "2023-11-14 22:13:20",
        ] {
            let event = run(
                Some(EventKind::Track),
                json!({"userId": "u", "event": "e", "timestamp": text}),
            )
            .unwrap();
            assert_eq!(event.timestamp_ms, 1_700_000_000_000, "{text}");
        }
    }

    #[test]
    fn a_time_more_than_a_day_ahead_is_clamped_and_flagged() {
        let received = 1_700_000_000_000i64;
        let ahead = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(received + ms)
                .unwrap()
                .to_rfc3339()
        };
        let clamped = run(
            Some(EventKind::Track),
            json!({"userId": "u", "event": "e", "timestamp": ahead(25 * 3_600_000)}),
        )
        .unwrap();
        assert_eq!(clamped.timestamp_ms, received);
        assert_eq!(
            clamped.context,
            vec![(
                CLAMPED_FLAG.to_owned(),
                (received + 25 * 3_600_000).to_string()
            )]
        );
        assert_eq!(
            clamped.original_timestamp_ms,
            Some(received + 25 * 3_600_000)
        );
        let kept = run(
            Some(EventKind::Track),
            json!({"userId": "u", "event": "e", "timestamp": ahead(23 * 3_600_000)}),
        )
        .unwrap();
        assert_eq!(kept.timestamp_ms, received + 23 * 3_600_000);
        assert!(kept.context.is_empty());
    }

    #[test]
    fn numeric_ids_keep_their_exact_decimal_text() {
        let body = r#"{"userId": 12345678901234567890123456, "anonymousId": 42, "event": "e"}"#;
        let object: Map<String, Value> = serde_json::from_str(body).unwrap();
        let tenant = tenant();
        let event = normalize(
            Some(EventKind::Track),
            &object,
            &BatchDefaults::default(),
            &meta(&tenant),
        )
        .unwrap()
        .event;
        assert_eq!(
            event.user_id, "12345678901234567890123456",
            "not rounded through a float"
        );
        let as_string = run(
            Some(EventKind::Track),
            json!({"userId": "12345678901234567890123456", "anonymousId": "42", "event": "e"}),
        )
        .unwrap();
        assert_eq!(
            (event.user_id, event.anonymous_id),
            (as_string.user_id, as_string.anonymous_id),
            "the number and the string are the same id"
        );
    }
}
