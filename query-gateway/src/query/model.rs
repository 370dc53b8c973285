//! The typed query: what every endpoint, the dashboard and Plausible's Stats APIs ask, before
//! any SQL exists. Each metric and dimension knows its **scope**, which decides how a filter
//! applies to it (Plausible's rule, `lib/plausible/stats/query_optimizer.ex`):
//!
//! - an *event-scoped* metric (visitors, page views, events) counts the events that match every
//!   event filter and whose visit matches every visit filter;
//! - a *visit-scoped* metric (visits, bounce rate, duration) counts the visits that match every
//!   visit filter and contain at least one event (in the range) that matches the event filters.

use std::fmt;

/// Which table a metric is computed from, and so how filters apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Computed over `events` rows: activity events (page, screen, track) in the range.
    Event,
    /// Computed over `sessions` rows: visits that started in the range.
    Visit,
}

/// A metric, by its Stats API v2 name (`serde` and [`Metric::name`] agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Distinct visitors (anonymousId, or userId for events without one) with activity.
    Visitors,
    /// Distinct persons (identity-stitched) with activity. Ours, not Plausible's.
    Persons,
    /// Visits (sessions) that started in the range.
    Visits,
    /// The same number as `visits`, under this project's own name.
    Sessions,
    /// Page views: `page` and `screen` calls.
    Pageviews,
    /// Page views per visit, over the visits of the range.
    ViewsPerVisit,
    /// Share of visits that bounced, percent (0-100).
    BounceRate,
    /// Mean visit duration, seconds.
    VisitDuration,
    /// Activity events: page views and track calls.
    Events,
    /// A group's visitors as a percentage of all visitors of the query (same filters).
    Percentage,
    /// A group's converting visitors as a percentage of the visitors of the same query
    /// without its goal and property filters and without dimensions (Plausible's rule);
    /// needs an `event:goal` filter or dimension.
    ConversionRate,
}

/// Plausible metrics this gateway does not compute (yet): a query that asks for one is a 400
/// that names it, never an answer without it.
pub const UNSERVED_METRICS: [&str; 6] = [
    "time_on_page",
    "scroll_depth",
    "total_revenue",
    "average_revenue",
    "exit_rate",
    "group_conversion_rate",
];

impl Metric {
    /// Every metric, in the order the README lists them.
    pub const ALL: [Metric; 11] = [
        Metric::Visitors,
        Metric::Persons,
        Metric::Visits,
        Metric::Sessions,
        Metric::Pageviews,
        Metric::ViewsPerVisit,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::Events,
        Metric::Percentage,
        Metric::ConversionRate,
    ];

    /// The Stats API v2 name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Persons => "persons",
            Metric::Visits => "visits",
            Metric::Sessions => "sessions",
            Metric::Pageviews => "pageviews",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::Events => "events",
            Metric::Percentage => "percentage",
            Metric::ConversionRate => "conversion_rate",
        }
    }

    /// Whether the per-minute rollups (`agg_minute_metrics`) hold it: sums do, distinct
    /// counts (visitors, persons) and shares of them do not.
    pub fn in_rollups(self) -> bool {
        matches!(
            self,
            Metric::Pageviews
                | Metric::Events
                | Metric::Visits
                | Metric::Sessions
                | Metric::BounceRate
                | Metric::VisitDuration
        )
    }

    /// The metric of a v2 name.
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|metric| metric.name() == name)
    }

    /// Which table it is computed from. `percentage` is a share of visitors.
    pub fn scope(self) -> Scope {
        match self {
            Metric::Visitors
            | Metric::Persons
            | Metric::Pageviews
            | Metric::Events
            | Metric::Percentage
            | Metric::ConversionRate => Scope::Event,
            Metric::Visits
            | Metric::Sessions
            | Metric::ViewsPerVisit
            | Metric::BounceRate
            | Metric::VisitDuration => Scope::Visit,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A visit attribute: a column of `sessions`, read for an event through its visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VisitAttribute {
    /// The first page of the visit.
    EntryPage,
    /// The last page of the visit.
    ExitPage,
    /// The referrer of the first page, as sent.
    Referrer,
    /// The source the gateway classified: a known site's name (`Google`), the referring
    /// host, or `utm_source`; empty for direct visits.
    Source,
    /// GA4's default channel group (`Organic Search`, `Direct`, ...).
    Channel,
    /// `utm_source` of the visit's first event.
    UtmSource,
    /// `utm_medium`.
    UtmMedium,
    /// `utm_campaign`.
    UtmCampaign,
    /// `utm_content`.
    UtmContent,
    /// `utm_term`.
    UtmTerm,
    /// Device type: `Desktop`, `Mobile`, `Tablet` (bots make no visits).
    Device,
    /// Browser family, e.g. `Chrome`.
    Browser,
    /// Browser `major.minor`.
    BrowserVersion,
    /// Operating system family, e.g. `iOS`.
    Os,
    /// Operating system `major.minor`.
    OsVersion,
    /// Country, ISO 3166-1 alpha-2.
    Country,
    /// First-level region, as the GeoIP database names it.
    Region,
    /// City, as the GeoIP database names it.
    City,
}

impl VisitAttribute {
    /// Every attribute with its v2 name (after `visit:`).
    pub const ALL: [(VisitAttribute, &'static str); 18] = [
        (VisitAttribute::EntryPage, "entry_page"),
        (VisitAttribute::ExitPage, "exit_page"),
        (VisitAttribute::Referrer, "referrer"),
        (VisitAttribute::Source, "source"),
        (VisitAttribute::Channel, "channel"),
        (VisitAttribute::UtmSource, "utm_source"),
        (VisitAttribute::UtmMedium, "utm_medium"),
        (VisitAttribute::UtmCampaign, "utm_campaign"),
        (VisitAttribute::UtmContent, "utm_content"),
        (VisitAttribute::UtmTerm, "utm_term"),
        (VisitAttribute::Device, "device"),
        (VisitAttribute::Browser, "browser"),
        (VisitAttribute::BrowserVersion, "browser_version"),
        (VisitAttribute::Os, "os"),
        (VisitAttribute::OsVersion, "os_version"),
        (VisitAttribute::Country, "country"),
        (VisitAttribute::Region, "region"),
        (VisitAttribute::City, "city"),
    ];

    /// The v2 name, after `visit:`.
    pub fn name(self) -> &'static str {
        VisitAttribute::ALL
            .iter()
            .find(|(attribute, _)| *attribute == self)
            .map_or("", |(_, name)| name)
    }

    /// The `sessions` column that holds it (the same column of `events` holds the event's
    /// own value, from which the session took its first event's).
    pub fn column(self) -> &'static str {
        match self {
            VisitAttribute::EntryPage => "entry_path",
            VisitAttribute::ExitPage => "exit_path",
            VisitAttribute::Referrer => "entry_referrer",
            VisitAttribute::Source => "source",
            VisitAttribute::Channel => "channel",
            VisitAttribute::UtmSource => "utm_source",
            VisitAttribute::UtmMedium => "utm_medium",
            VisitAttribute::UtmCampaign => "utm_campaign",
            VisitAttribute::UtmContent => "utm_content",
            VisitAttribute::UtmTerm => "utm_term",
            VisitAttribute::Device => "device",
            VisitAttribute::Browser => "browser",
            VisitAttribute::BrowserVersion => "browser_version",
            VisitAttribute::Os => "os",
            VisitAttribute::OsVersion => "os_version",
            VisitAttribute::Country => "country",
            VisitAttribute::Region => "region",
            VisitAttribute::City => "city",
        }
    }
}

/// Width of a time bucket. Days, weeks (from Monday) and months are local to the query's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One minute (internal: the live chart).
    Minute,
    /// One local hour (in a :30 or :45 zone, it starts at :30 or :45 UTC).
    Hour,
    /// One local day (23 or 25 hours on DST days).
    Day,
    /// Monday to Sunday; the first bucket starts at the range's first day.
    Week,
    /// A calendar month.
    Month,
}

impl Granularity {
    /// The v2 name, after `time:`.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    /// Plausible's choice for a bare `time` dimension, by the range's length: up to 48 hours
    /// by hour, up to 40 days by day, up to 52 weeks by week, else by month.
    pub fn for_range_secs(secs: i64) -> Granularity {
        const HOUR: i64 = 3600;
        match secs {
            s if s <= 48 * HOUR => Granularity::Hour,
            s if s <= 40 * 24 * HOUR => Granularity::Day,
            s if s <= 52 * 7 * 24 * HOUR => Granularity::Week,
            _ => Granularity::Month,
        }
    }
}

/// What a result row is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// `event:page`: a page view's path, or a screen's name; for a track call the path it
    /// was sent from.
    Page,
    /// `event:name`: `pageview` for page and screen calls, else the track call's event name.
    Name,
    /// `event:hostname`: the host of the event's URL.
    Hostname,
    /// `event:goal`: the tenant's goal an event completes (an event completing two goals
    /// counts for each; one completing none is not in a goal breakdown).
    Goal,
    /// `event:props:<key>`: a property's value; `(none)` when the event has no such key.
    Property(String),
    /// `visit:<attribute>`.
    Visit(VisitAttribute),
    /// `time:<granularity>` (a bare `time` is resolved by the range's length).
    Time(Granularity),
}

impl Dimension {
    /// Which table holds it natively. An event metric reads a visit dimension through the
    /// event's visit; a visit metric reads `event:page` as the visit's entry page and no
    /// other event dimension. `time` belongs to both.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Dimension::Page
            | Dimension::Name
            | Dimension::Hostname
            | Dimension::Goal
            | Dimension::Property(_) => Some(Scope::Event),
            Dimension::Visit(_) => Some(Scope::Visit),
            Dimension::Time(_) => None,
        }
    }

    /// The v2 name.
    pub fn name(&self) -> String {
        match self {
            Dimension::Page => "event:page".into(),
            Dimension::Name => "event:name".into(),
            Dimension::Hostname => "event:hostname".into(),
            Dimension::Goal => "event:goal".into(),
            Dimension::Property(key) => format!("event:props:{key}"),
            Dimension::Visit(attribute) => format!("visit:{}", attribute.name()),
            Dimension::Time(granularity) => format!("time:{}", granularity.name()),
        }
    }

    /// The dimension of a v2 name; a bare `time` needs the range's length.
    pub fn parse(name: &str, range_secs: i64) -> Option<Dimension> {
        match name {
            "event:page" => return Some(Dimension::Page),
            "event:name" => return Some(Dimension::Name),
            "event:hostname" => return Some(Dimension::Hostname),
            "event:goal" => return Some(Dimension::Goal),
            "time" => return Some(Dimension::Time(Granularity::for_range_secs(range_secs))),
            _ => {}
        }
        if let Some(key) = name.strip_prefix("event:props:") {
            return (!key.is_empty()).then(|| Dimension::Property(key.to_owned()));
        }
        if let Some(attribute) = name.strip_prefix("visit:") {
            return VisitAttribute::ALL
                .iter()
                .find(|(_, known)| *known == attribute)
                .map(|(attribute, _)| Dimension::Visit(*attribute));
        }
        let granularity = match name.strip_prefix("time:")? {
            "minute" => Granularity::Minute,
            "hour" => Granularity::Hour,
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            _ => return None,
        };
        Some(Dimension::Time(granularity))
    }
}

/// How a filter compares a dimension's value with its clauses; a filter matches when any
/// clause does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Equal to a clause.
    Is,
    /// Equal to none.
    IsNot,
    /// Contains a clause.
    Contains,
    /// Contains none.
    ContainsNot,
    /// Matches a clause, an RE2 pattern, unanchored.
    Matches,
    /// Matches none.
    MatchesNot,
}

impl Operator {
    /// Every operator with its v2 name.
    pub const ALL: [(Operator, &'static str); 6] = [
        (Operator::Is, "is"),
        (Operator::IsNot, "is_not"),
        (Operator::Contains, "contains"),
        (Operator::ContainsNot, "contains_not"),
        (Operator::Matches, "matches"),
        (Operator::MatchesNot, "matches_not"),
    ];

    /// The v2 name.
    pub fn name(self) -> &'static str {
        Operator::ALL
            .iter()
            .find(|(operator, _)| *operator == self)
            .map_or("", |(_, name)| name)
    }

    /// The operator a negated one negates, and whether it is negated.
    pub fn positive(self) -> (Operator, bool) {
        match self {
            Operator::IsNot => (Operator::Is, true),
            Operator::ContainsNot => (Operator::Contains, true),
            Operator::MatchesNot => (Operator::Matches, true),
            other => (other, false),
        }
    }
}

/// One comparison of a dimension with values.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// How.
    pub operator: Operator,
    /// What (never a time dimension).
    pub dimension: Dimension,
    /// Against what; the condition holds when any clause does.
    pub clauses: Vec<String>,
    /// `false` compares case-insensitively (`is`, `contains` and their negations only).
    pub case_sensitive: bool,
}

/// A filter tree. A query's filter list is an implicit `And`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A leaf.
    Condition(Condition),
    /// Every child holds.
    And(Vec<Filter>),
    /// Some child holds.
    Or(Vec<Filter>),
    /// The child does not hold.
    Not(Box<Filter>),
    /// The visit contains an event (in the range) for which the event filter holds; `false`:
    /// contains none.
    HasDone(Box<Filter>, bool),
}

impl Filter {
    /// Whether the tree reads only event dimensions (so that, applied to visits, it is one
    /// "the visit has such an event" test: conditions joined by `and` must hold for the same
    /// event, as in Plausible).
    pub fn is_event_only(&self) -> bool {
        match self {
            Filter::Condition(condition) => condition.dimension.scope() == Some(Scope::Event),
            Filter::And(children) | Filter::Or(children) => {
                children.iter().all(Filter::is_event_only)
            }
            Filter::Not(child) => child.is_event_only(),
            Filter::HasDone(..) => false,
        }
    }

    /// Every condition of the tree, depth first.
    pub fn conditions(&self) -> Vec<&Condition> {
        match self {
            Filter::Condition(condition) => vec![condition],
            Filter::And(children) | Filter::Or(children) => {
                children.iter().flat_map(Filter::conditions).collect()
            }
            Filter::Not(child) | Filter::HasDone(child, _) => child.conditions(),
        }
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// What a result is ordered by: a queried metric or dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderKey {
    /// The metric at this position of the query's metrics.
    Metric(usize),
    /// The dimension at this position of the query's dimensions.
    Dimension(usize),
}

/// How the comparison period is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// The same length immediately before (a range ending in the future is first cut at
    /// now).
    PreviousPeriod,
    /// The same dates one year earlier.
    YearOverYear,
    /// A range of the caller's: [`Comparison::range`].
    Custom,
    /// Exactly the same length immediately before, never cut (the dashboard's "previous
    /// range").
    SameLengthBefore,
}

/// A comparison with another period.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Which period.
    pub mode: CompareMode,
    /// For [`CompareMode::Custom`]: first and last local date, inclusive.
    pub range: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
    /// Move the comparison's start to the nearest day of the source's weekday.
    pub match_day_of_week: bool,
}

/// A whole query, validated: it can be compiled without further checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The tenant; always from the caller's key, never from the request.
    pub tenant: String,
    /// What to compute, in the answer's order.
    pub metrics: Vec<Metric>,
    /// What to group by, in the answer's order.
    pub dimensions: Vec<Dimension>,
    /// Which events and visits count (an implicit `and` of the list).
    pub filters: Vec<Filter>,
    /// The period, resolved in `time_zone`.
    pub period: super::range::Period,
    /// Compare with another period.
    pub comparison: Option<Comparison>,
    /// Row order; a missing order puts time ascending first, then the first metric
    /// descending; rows equal on every key are ordered by their dimensions ascending.
    pub order_by: Vec<(OrderKey, Direction)>,
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return at most.
    pub limit: usize,
    /// Count events flagged `is_bot` (excluded by default).
    pub include_bots: bool,
    /// The tenant's goals (for `event:goal` and `conversion_rate`).
    pub goals: Vec<schemas::tenants::Goal>,
    /// Where the tenant's raw rows start (Unix seconds; `None`: kept for good). A period that
    /// starts earlier is answered from the per-minute rollups, which are kept for good but
    /// hold fewer metrics and no dimensions ([`Query::rollup_refusal`]).
    pub raw_from: Option<i64>,
}

impl Query {
    /// Whether `period` reaches before the raw rows, so that only the rollups cover it.
    pub fn reads_rollups(&self, period: &super::range::Period) -> bool {
        self.raw_from
            .is_some_and(|from| period.from - self.visit_lookback_secs() < from)
    }

    /// How long before a period its raw rows are read: event metrics broken down or filtered
    /// by a visit attribute read visits that started up to
    /// [`super::compile::VISIT_LOOKBACK_SECS`] earlier (deleted visits would leave their
    /// events' attributes empty, a silently wrong count).
    fn visit_lookback_secs(&self) -> i64 {
        let conditions = self.filters.iter().flat_map(Filter::conditions);
        let visit_attributes = self
            .dimensions
            .iter()
            .chain(conditions.map(|condition| &condition.dimension))
            .any(|dimension| matches!(dimension, Dimension::Visit(_)));
        let event_metrics = self
            .metrics
            .iter()
            .any(|metric| metric.scope() == Scope::Event);
        if visit_attributes && event_metrics {
            super::compile::VISIT_LOOKBACK_SECS
        } else {
            0
        }
    }

    /// Why this query cannot be answered from the rollups (`None`: it can): a filter, a
    /// breakdown other than time, bots, or a metric the rollups do not hold.
    pub fn rollup_refusal(&self) -> Option<String> {
        let unanswerable: Vec<&str> = self
            .metrics
            .iter()
            .filter(|metric| !metric.in_rollups())
            .map(|metric| metric.name())
            .collect();
        let breakdown = self
            .dimensions
            .iter()
            .any(|dimension| !matches!(dimension, Dimension::Time(_)));
        let why = if !self.filters.is_empty() {
            "filters need them".to_owned()
        } else if breakdown {
            "breakdowns other than time need them".to_owned()
        } else if self.include_bots {
            "bots are counted only there".to_owned()
        } else if !unanswerable.is_empty() {
            format!("{} need them", unanswerable.join(", "))
        } else {
            return None;
        };
        Some(self.retention_message(&why))
    }

    /// Refuses a report that reads only raw rows (funnels, retention) over a period that
    /// reaches before them.
    pub fn require_raw(&self, report: &str) -> Result<(), crate::ApiError> {
        if !self.reads_rollups(&self.period) {
            return Ok(());
        }
        Err(crate::ApiError::BadParameter {
            parameter: "date_range".into(),
            message: self.retention_message(&format!("{report} need them")),
        })
    }

    /// The 400 message of a query that needs raw rows before [`Query::raw_from`]: `why` says
    /// what needs them.
    pub fn retention_message(&self, why: &str) -> String {
        let at = |secs: i64| {
            chrono::DateTime::from_timestamp(secs, 0).map_or(String::new(), |at| {
                at.format("%Y-%m-%d %H:%M UTC").to_string()
            })
        };
        let from = self.raw_from.unwrap_or_default();
        let lookback = self.visit_lookback_secs();
        format!(
            "the range reaches before {}, where tenant {}'s raw events start (its retention_days in the tenants file): before it only the per-minute rollups remain, with pageviews, events, visits, sessions, bounce_rate and visit_duration over time; {why}. Choose a range that starts at {} or later{}.",
            at(from),
            self.tenant,
            at(from + lookback),
            if lookback > 0 {
                " (events read the visits that started up to 7 days before a range)"
            } else {
                ""
            }
        )
    }
}

/// A wildcard pattern (`*` and `**` match any characters) as an RE2 pattern that must match
/// the whole value: Plausible's page goals and v1 filters.
pub fn wildcard_regex(pattern: &str) -> String {
    let parts: Vec<String> = pattern.split('*').map(regex_syntax::escape).collect();
    let mut regex = parts.join(".*");
    while regex.contains(".*.*") {
        regex = regex.replace(".*.*", ".*");
    }
    format!("^{regex}$")
}
