//! Rows of `events` and `sessions` as tests write them, and their insertion.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

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
