//! `sessions`: one upsert per session id; a merged-away session becomes a tombstone.

use clickhouse::Row;
use operators::{ArcStr, Session, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

/// One row of `sessions`. The dimension columns share the session's strings (`ArcStr`
/// serializes as the string it holds).
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
    pub utm_source: ArcStr,
    pub utm_medium: ArcStr,
    pub utm_campaign: ArcStr,
    pub deleted: u8,
    pub utm_content: ArcStr,
    pub utm_term: ArcStr,
    pub source: ArcStr,
    pub channel: ArcStr,
    pub device: ArcStr,
    pub browser: ArcStr,
    pub browser_version: ArcStr,
    pub os: ArcStr,
    pub os_version: ArcStr,
    pub country: ArcStr,
    pub region: ArcStr,
    pub city: ArcStr,
    pub version: u64,
}

impl SessionRow {
    /// The row of `session` (a tombstone when `deleted`) at `version`.
    pub fn new(session: &Session, deleted: bool, version: u64) -> Self {
        let landing = &session.landing;
        SessionRow {
            tenant: session.tenant.to_string(),
            session_id: session.session_id.to_string(),
            person_id: session.person_id.to_string(),
            visitor_id: session.visitor_id.to_string(),
            start_time: datetime(session.start_ms),
            start_ms: session.start_ms,
            end_ms: session.end_ms,
            duration_ms: session.duration_ms(),
            events: session.events,
            page_views: session.page_views,
            is_bounce: u8::from(session.bounce),
            entry_path: session.entry_path.to_string(),
            exit_path: session.exit_path.to_string(),
            entry_referrer: landing.referrer.to_string(),
            utm_source: landing.campaign.source.clone(),
            utm_medium: landing.campaign.medium.clone(),
            utm_campaign: landing.campaign.name.clone(),
            deleted: u8::from(deleted),
            utm_content: landing.campaign.content.clone(),
            utm_term: landing.campaign.term.clone(),
            source: landing.acquisition.source.clone(),
            channel: landing.acquisition.channel.clone(),
            device: landing.client.device.clone(),
            browser: landing.client.browser.clone(),
            browser_version: landing.client.browser_version.clone(),
            os: landing.client.os.clone(),
            os_version: landing.client.os_version.clone(),
            country: landing.location.country.clone(),
            region: landing.location.region.clone(),
            city: landing.location.city.clone(),
            version,
        }
    }
}

/// Writes sessions.
#[derive(Debug)]
pub struct SessionsSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for SessionsSink {
    type Record = (Session, u64, isize);
    const NAME: &'static str = "SessionsSink";

    fn route((session, _, _): &Self::Record) -> u64 {
        route(&session.session_id)
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let rows: Vec<SessionRow> = upserts(updates, |s: &Session| {
            (s.tenant.clone(), s.session_id.clone())
        })
        .into_iter()
        .map(|(session, removed)| SessionRow::new(&session, removed, epoch))
        .collect();
        self.table.write("sessions", "sessions", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
