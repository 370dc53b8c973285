//! What "page view", "activity" and "bounce" mean: one definition, used by every operator of
//! the engine and by every query of the query gateway (through the SQL fragments below), so
//! that a dashboard number and the engine's aggregates can never disagree about them.
//!
//! - A **page view** is a Segment `page` (web) or `screen` (mobile: Segment's screen call is
//!   the app's page view, and mobile traffic would otherwise have no page views at all).
//! - **Activity** is what a person does: `page`, `screen` and `track`. `identify`, `alias` and
//!   `group` are statements *about* a person (a login, a CRM sync refreshing traits every
//!   night): they start no visit, extend no session and make nobody an active visitor.
//! - An **interaction** is an event a person did: not a bot's (flagged `is_bot` at ingestion,
//!   its user agent is a known crawler's), and not one a page sends on its own (Plausible's
//!   `interactive: false` events, its `engagement` pings: flagged `non_interactive`). Only
//!   interactions are activity or page views: the others are stored in `events` as they came,
//!   start no session, make no visitor, affect no bounce and add to no rollup. Plausible and
//!   GA4 drop bots too, and Plausible keeps non-interactive events out of bounce rate (it
//!   still counts them as goal conversions; we count them nowhere). The query API's
//!   `bots=include` counts bots' events in event metrics; no visit ever contains one.
//! - A page view's **location** is the page's path, or the screen's name.
//! - A **bounce** is, by default, a session with exactly one page view and no other activity
//!   (Plausible's and GA4's rule: a visitor who viewed one page and then signed up was
//!   engaged). [`BounceRule::OnePageView`] is the older rule some tenants want: one page view,
//!   whatever else happened.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};

/// The kinds that are page views.
pub const PAGE_VIEW_KINDS: [EventKind; 2] = [EventKind::Page, EventKind::Screen];

/// The kinds that are activity (page views and track calls).
pub const ACTIVITY_KINDS: [EventKind; 3] = [EventKind::Page, EventKind::Screen, EventKind::Track];

impl EventKind {
    /// Whether an event of this kind is a page view (`page` or `screen`).
    pub fn is_page_view(self) -> bool {
        PAGE_VIEW_KINDS.contains(&self)
    }

    /// Whether an event of this kind is activity (`page`, `screen` or `track`).
    pub fn is_activity(self) -> bool {
        ACTIVITY_KINDS.contains(&self)
    }
}

/// Whether an event with these flags is an interaction (a person's doing).
pub fn is_interaction(is_bot: bool, non_interactive: bool) -> bool {
    !is_bot && !non_interactive
}

/// Whether an event of `kind` is activity, given whether it is an interaction.
pub fn is_activity(kind: EventKind, interaction: bool) -> bool {
    interaction && kind.is_activity()
}

/// Whether an event of `kind` is a page view, given whether it is an interaction.
pub fn is_page_view(kind: EventKind, interaction: bool) -> bool {
    interaction && kind.is_page_view()
}

impl Event {
    /// Whether the event is an interaction: not a bot's, not flagged non-interactive.
    pub fn is_interaction(&self) -> bool {
        is_interaction(self.is_bot, self.non_interactive)
    }

    /// Whether the event is activity: an interaction of an activity kind.
    pub fn is_activity(&self) -> bool {
        is_activity(self.kind, self.is_interaction())
    }

    /// Whether the event is a page view: an interaction of a page-view kind.
    pub fn is_page_view(&self) -> bool {
        is_page_view(self.kind, self.is_interaction())
    }

    /// Where a page view happened: the page's path, or the screen's name; empty for events
    /// that are not page views.
    pub fn page_view_location(&self) -> &str {
        match self.kind {
            EventKind::Page => &self.page.path,
            EventKind::Screen => &self.name,
            _ => "",
        }
    }
}

/// Which sessions count as bounces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceRule {
    /// Exactly one page view and no other activity event (Plausible, GA4). The default.
    #[default]
    OnePageViewOnly,
    /// Exactly one page view, whatever track events followed it.
    OnePageView,
}

impl BounceRule {
    /// Whether a session with `page_views` page views among `activity_events` activity events
    /// is a bounce.
    pub fn is_bounce(self, page_views: u32, activity_events: u32) -> bool {
        match self {
            BounceRule::OnePageViewOnly => page_views == 1 && activity_events == 1,
            BounceRule::OnePageView => page_views == 1,
        }
    }
}

fn kinds_sql(kinds: &[EventKind]) -> String {
    let names: Vec<String> = kinds
        .iter()
        .map(|kind| format!("'{}'", kind.as_str()))
        .collect();
    format!("type IN ({})", names.join(", "))
}

/// SQL condition on an `events` row: it is of a page-view kind (with [`human_sql`], it is a
/// page view).
pub fn page_view_sql() -> String {
    kinds_sql(&PAGE_VIEW_KINDS)
}

/// SQL condition on an `events` row: it is of an activity kind (with [`human_sql`], it is
/// activity).
pub fn activity_sql() -> String {
    kinds_sql(&ACTIVITY_KINDS)
}

/// SQL condition on an `events` row: it is not a bot's.
pub fn human_sql() -> &'static str {
    "is_bot = 0"
}

/// SQL condition on an `events` row: it is an interaction ([`human_sql`] and
/// [`interactive_sql`]), as [`is_interaction`] decides.
pub fn interaction_sql() -> String {
    format!("{} AND {}", human_sql(), interactive_sql())
}

/// SQL condition on an `events` row: it is not flagged non-interactive (with [`human_sql`],
/// it is an interaction). The flag is set when true, so that a row written without the
/// column (an older writer; ClickHouse 18.16 fills a JSON row's missing field with 0, not
/// with the column's default) reads as an interaction.
pub fn interactive_sql() -> &'static str {
    "non_interactive = 0"
}

/// SQL expression of an `events` row's page-view location (see [`Event::page_view_location`]).
pub fn page_view_location_sql() -> &'static str {
    "if(type = 'screen', name, path)"
}

/// The default list: what JavaScript, Python, Ruby and PHP integrations print for a missing
/// value, common sentinels, and placeholder emails (PostHog refuses to merge on a similar
/// list for the same reason). Compared after trimming, ignoring case.
pub const DEFAULT_PLACEHOLDER_IDS: &[&str] = &[
    "undefined",
    "null",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "[object object]",
    "anonymous",
    "guest",
    "true",
    "false",
    "id",
    "distinct_id",
    "distinctid",
    "not_authenticated",
    "email",
    "email@example.com",
    "user@example.com",
    "test@example.com",
    "example@example.com",
    "noreply@example.com",
];

/// Whether `id` is one of [`DEFAULT_PLACEHOLDER_IDS`] (after trimming, ignoring case).
pub fn is_default_placeholder(id: &str) -> bool {
    let id = id.trim().to_lowercase();
    DEFAULT_PLACEHOLDER_IDS.contains(&id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_is_a_page_view_and_identify_is_not_activity() {
        let views: Vec<&str> = EventKind::ALL
            .into_iter()
            .filter(|k| k.is_page_view())
            .map(EventKind::as_str)
            .collect();
        assert_eq!(views, ["page", "screen"]);
        let active: Vec<&str> = EventKind::ALL
            .into_iter()
            .filter(|k| k.is_activity())
            .map(EventKind::as_str)
            .collect();
        assert_eq!(active, ["track", "page", "screen"]);
        assert_eq!(page_view_sql(), "type IN ('page', 'screen')");
        assert_eq!(activity_sql(), "type IN ('page', 'screen', 'track')");
    }

    #[test]
    fn a_page_view_followed_by_a_track_is_engaged_unless_the_tenant_says_otherwise() {
        assert!(BounceRule::OnePageViewOnly.is_bounce(1, 1));
        assert!(!BounceRule::OnePageViewOnly.is_bounce(1, 2));
        assert!(BounceRule::OnePageView.is_bounce(1, 2));
        assert!(!BounceRule::OnePageView.is_bounce(2, 2));
        assert!(!BounceRule::OnePageViewOnly.is_bounce(0, 1));
    }

    #[test]
    fn a_bot_does_nothing_a_person_does() {
        let mut page = Event::new("t", "m", EventKind::Page, 0);
        assert!(page.is_activity() && page.is_page_view());
        page.is_bot = true;
        assert!(!page.is_activity() && !page.is_page_view());
        page.is_bot = false;
        page.non_interactive = true;
        assert!(!page.is_activity() && !page.is_page_view());
        assert!(!is_activity(EventKind::Track, false));
        assert!(!is_activity(EventKind::Identify, true));
        assert!(is_interaction(false, false) && !is_interaction(true, false));
    }

    #[test]
    fn a_screen_is_located_by_its_name() {
        let mut screen = Event::new("t", "m", EventKind::Screen, 0);
        screen.name = "Home".into();
        assert_eq!(screen.page_view_location(), "Home");
        let mut page = Event::new("t", "m", EventKind::Page, 0);
        page.page.path = "/pricing".into();
        page.name = "Pricing".into();
        assert_eq!(page.page_view_location(), "/pricing");
    }
}
