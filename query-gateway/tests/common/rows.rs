//! Rows of `events` and `sessions` as tests write them, and their insertion.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::json;

pub const TENANT: &str = "acme";
pub const OTHER: &str = "globex";
pub const PAGES: [&str; 4] = ["/", "/pricing", "/blog/a", "/Blog/B"];
pub const NAMES: [&str; 3] = ["Signed Up", "Clicked", "Played"];
pub const SOURCES: [&str; 3] = ["", "news", "Google"];
pub const PROPS: [&str; 3] = ["plan", "color", "method"];
/// Zones the query tests read in: DST changes, and :30 and :45 offsets.
pub const ZONES: [&str; 5] = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
];
/// The rows span 2026-03-05 to 2026-04-01 (New York's and Berlin's spring DST days) and
/// 2026-10-20 to 2026-11-16 (their autumn ones, a repeated local hour).
pub const WINDOWS_MS: [i64; 2] = [1_772_668_800_000, 1_792_454_400_000];
pub const SPAN_DAYS: i64 = 27;

/// Random events and visits, mostly of [`TENANT`], some of [`OTHER`], over the two
/// [`WINDOWS_MS`].
pub fn generate(rng: &mut StdRng) -> (Vec<Event>, Vec<Visit>) {
    let mut events = Vec::new();
    let mut visits = Vec::new();
    for v in 0..120 {
        let tenant = if v % 10 == 9 { OTHER } else { TENANT };
        let visitor = format!("v{}", rng.random_range(0..40));
        let start_ms = WINDOWS_MS[v % 2] + rng.random_range(0..SPAN_DAYS * 86_400_000);
        let id = format!("s{v}");
        let count = rng.random_range(1..6);
        let mut page_views = 0;
        let mut last_ms = start_ms;
        let mut paths = Vec::new();
        for e in 0..count {
            // Mostly close together; now and then hours later, across a day's end.
            let gap = if rng.random_bool(0.1) {
                rng.random_range(0..20 * 3_600_000)
            } else {
                rng.random_range(0..1_800_000)
            };
            let time_ms = if e == 0 { start_ms } else { last_ms + gap };
            last_ms = time_ms;
            let kind = *["page", "page", "screen", "track", "identify"]
                .choose(rng)
                .unwrap();
            let path = PAGES.choose(rng).unwrap().to_string();
            if kind == "page" || kind == "screen" {
                page_views += 1;
                paths.push(path.clone());
            }
            let mut props = Vec::new();
            for key in PROPS {
                if rng.random_bool(0.4) {
                    props.push((
                        key.to_owned(),
                        ["pro", "free", ""].choose(rng).unwrap().to_string(),
                    ));
                }
            }
            events.push(Event {
                tenant,
                id: format!("{id}-e{e}"),
                kind,
                name: if kind == "track" {
                    NAMES.choose(rng).unwrap().to_string()
                } else if kind == "screen" {
                    path.clone()
                } else {
                    String::new()
                },
                anonymous_id: if rng.random_bool(0.9) {
                    visitor.clone()
                } else {
                    String::new()
                },
                user_id: if rng.random_bool(0.3) {
                    format!("u{}", rng.random_range(0..10))
                } else {
                    String::new()
                },
                time_ms,
                path: if kind == "screen" {
                    String::new()
                } else {
                    path
                },
                props,
                session_id: id.clone(),
                person_id: format!("p{}", rng.random_range(0..30)),
                late: rng.random_bool(0.05),
                bot: rng.random_bool(0.05),
                non_interactive: rng.random_bool(0.05),
            });
        }
        visits.push(Visit {
            tenant,
            id,
            start_ms,
            duration_ms: last_ms - start_ms,
            page_views,
            bounce: page_views == 1 && count == 1,
            entry_path: paths.first().cloned().unwrap_or_default(),
            exit_path: paths.last().cloned().unwrap_or_default(),
            referrer: ["", "https://news.example/x", "https://google.com/"]
                .choose(rng)
                .unwrap()
                .to_string(),
            utm_source: SOURCES.choose(rng).unwrap().to_string(),
            device: ["Desktop", "Mobile", ""].choose(rng).unwrap().to_string(),
            country: ["DE", "US", "JP", ""].choose(rng).unwrap().to_string(),
            deleted: rng.random_bool(0.05),
        });
    }
    (events, visits)
}

#[derive(Debug, Clone)]
pub struct Event {
    pub tenant: &'static str,
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub anonymous_id: String,
    pub user_id: String,
    pub time_ms: i64,
    pub path: String,
    pub props: Vec<(String, String)>,
    pub session_id: String,
    pub person_id: String,
    pub late: bool,
    pub bot: bool,
    /// A page's own ping (Plausible's engagement, `interactive: false`).
    pub non_interactive: bool,
}

#[derive(Debug, Clone)]
pub struct Visit {
    pub tenant: &'static str,
    pub id: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub page_views: u32,
    pub bounce: bool,
    pub entry_path: String,
    pub exit_path: String,
    pub referrer: String,
    pub utm_source: String,
    pub device: String,
    pub country: String,
    pub deleted: bool,
}

/// Inserts the rows; each visit also gets an older version that says the opposite about
/// `deleted`, which only a reader of the newest version ignores.
pub async fn load(
    http: &reqwest::Client,
    url: &str,
    database: &str,
    events: &[Event],
    visits: &[Visit],
) {
    let event_rows: Vec<String> = events
        .iter()
        .map(|e| {
            json!({
                "tenant": e.tenant, "message_id": e.id, "type": e.kind, "name": e.name,
                "anonymous_id": e.anonymous_id, "user_id": e.user_id,
                "event_time": e.time_ms / 1000, "event_time_ms": e.time_ms,
                "received_at": e.time_ms / 1000, "received_at_ms": e.time_ms,
                "path": e.path, "url": format!("https://acme.example{}", e.path),
                "properties.key": e.props.iter().map(|p| &p.0).collect::<Vec<_>>(),
                "properties.value": e.props.iter().map(|p| &p.1).collect::<Vec<_>>(),
                "session_id": e.session_id, "person_id": e.person_id,
                "late": u8::from(e.late), "is_bot": u8::from(e.bot),
                "non_interactive": u8::from(e.non_interactive), "version": 1,
            })
            .to_string()
        })
        .collect();
    let visit_rows: Vec<String> = visits
        .iter()
        .flat_map(|v| {
            let row = |deleted: bool, version: u64| {
                json!({
                    "tenant": v.tenant, "session_id": v.id, "person_id": "", "visitor_id": "",
                    "start_time": v.start_ms / 1000, "start_ms": v.start_ms,
                    "end_ms": v.start_ms + v.duration_ms, "duration_ms": v.duration_ms,
                    "events": 1, "page_views": v.page_views, "is_bounce": u8::from(v.bounce),
                    "entry_path": v.entry_path, "exit_path": v.exit_path,
                    "entry_referrer": v.referrer, "utm_source": v.utm_source,
                    "device": v.device, "country": v.country,
                    "deleted": u8::from(deleted), "version": version,
                })
                .to_string()
            };
            // An older version that says otherwise: only the newest may count.
            [row(!v.deleted, 1), row(v.deleted, 2)]
        })
        .collect();
    for (table, rows) in [("events", event_rows), ("sessions", visit_rows)] {
        let statement = format!(
            "INSERT INTO {database}.{table} FORMAT JSONEachRow\n{}",
            rows.join("\n")
        );
        super::sql(http, url, &statement).await;
    }
}

impl Event {
    /// An on-time, non-bot event of `visitor` in visit `session`, at `time_ms`.
    pub fn new(
        tenant: &'static str,
        id: &str,
        kind: &'static str,
        time_ms: i64,
        visitor: &str,
        session: &str,
    ) -> Event {
        Event {
            tenant,
            id: id.to_owned(),
            kind,
            name: String::new(),
            anonymous_id: visitor.to_owned(),
            user_id: String::new(),
            time_ms,
            path: String::new(),
            props: Vec::new(),
            session_id: session.to_owned(),
            person_id: format!("person-{visitor}"),
            late: false,
            bot: false,
            non_interactive: false,
        }
    }

    /// With this path.
    pub fn path(mut self, path: &str) -> Event {
        self.path = path.to_owned();
        self
    }

    /// With this name (a track call's event).
    pub fn name(mut self, name: &str) -> Event {
        self.name = name.to_owned();
        self
    }
}

impl Visit {
    /// The visit `events` (of one session, in time order) make, as the engine would write it:
    /// a bounce is one page view and nothing else.
    pub fn of(events: &[Event], utm_source: &str) -> Visit {
        let first = &events[0];
        let pages: Vec<&Event> = events.iter().filter(|e| e.kind == "page").collect();
        let last_ms = events
            .iter()
            .map(|e| e.time_ms)
            .max()
            .unwrap_or(first.time_ms);
        Visit {
            tenant: first.tenant,
            id: first.session_id.clone(),
            start_ms: first.time_ms,
            duration_ms: last_ms - first.time_ms,
            page_views: pages.len() as u32,
            bounce: pages.len() == 1 && events.len() == 1,
            entry_path: pages.first().map(|e| e.path.clone()).unwrap_or_default(),
            exit_path: pages.last().map(|e| e.path.clone()).unwrap_or_default(),
            referrer: String::new(),
            utm_source: utm_source.to_owned(),
            device: String::new(),
            country: String::new(),
            deleted: false,
        }
    }
}
