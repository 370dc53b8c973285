//! The one compiler from a [`Query`] to ClickHouse SQL. Nothing else in the gateway writes SQL
//! over a tenant's events or visits (the Ask guard checks the model's free-form SQL).
//!
//! A query becomes at most two statements, one per table its metrics read (see
//! [`Scope`]): `events` for event metrics, `sessions` for visit metrics. Each groups by the
//! query's dimensions `WITH TOTALS`, so that a breakdown and its total come from one
//! statement and reconcile. Values are bound, never spliced (each piece of text is appended
//! with its own binds, so binds follow the text's order); the tenant comes from the key.
//! Every statement reads final rows (`FINAL`; merged sessions are `deleted = 1`) and filters
//! on the tables' leading sort key `(tenant, time)`. It runs on ClickHouse 18.16 and later:
//! no CTEs, joins as `ANY LEFT JOIN (…) AS alias USING`.

use std::collections::BTreeSet;

use schemas::definitions::{
    activity_sql, human_sql, interactive_sql, page_view_location_sql, page_view_sql,
};

use schemas::tenants::Goal;

use super::model::{
    Condition, Dimension, Filter, Granularity, Metric, Operator, Query, Scope, VisitAttribute,
    wildcard_regex,
};
use super::range::Period;

/// SQL text with its bound values, in the order of their `?`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    /// The text; `?` marks a bound value.
    pub sql: String,
    /// The values.
    pub binds: Vec<String>,
}

impl Statement {
    fn push(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<String>) -> &mut Self {
        self.sql.push('?');
        self.binds.push(value.into());
        self
    }

    fn append(&mut self, other: Statement) -> &mut Self {
        self.sql.push_str(&other.sql);
        self.binds.extend(other.binds);
        self
    }
}

/// The raw aggregates a statement returns, from which [`super::run`] computes every metric.
/// Ratios are never computed in SQL, so that a number is defined in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    /// Distinct visitors (events).
    Visitors,
    /// Distinct persons (events).
    Persons,
    /// Page views (events).
    Pageviews,
    /// Activity events (events).
    Events,
    /// Visits (sessions).
    Visits,
    /// Bounced visits (sessions).
    Bounces,
    /// Sum of visit durations, ms (sessions).
    DurationMs,
    /// Sum of the visits' page views (sessions).
    VisitPageviews,
}

impl Aggregate {
    /// The column alias in the statement's output.
    pub fn alias(self) -> &'static str {
        match self {
            Aggregate::Visitors => "visitors",
            Aggregate::Persons => "persons",
            Aggregate::Pageviews => "pageviews",
            Aggregate::Events => "events",
            Aggregate::Visits => "visits",
            Aggregate::Bounces => "bounces",
            Aggregate::DurationMs => "duration_ms",
            Aggregate::VisitPageviews => "visit_pageviews",
        }
    }

    fn sql(self) -> String {
        match self {
            Aggregate::Visitors => format!("uniqExact({VISITOR_HASH})"),
            Aggregate::Persons => "uniqExact(cityHash64(person_id))".into(),
            Aggregate::Pageviews => format!("countIf({})", page_view_sql()),
            Aggregate::Events | Aggregate::Visits => "count()".into(),
            Aggregate::Bounces => "sum(toUInt64(is_bounce))".into(),
            Aggregate::DurationMs => "sum(duration_ms)".into(),
            Aggregate::VisitPageviews => "sum(toUInt64(page_views))".into(),
        }
    }

    /// Its sum over `agg_minute_metrics` rows (metric names as the engine stores them,
    /// `operators::model::Metric::as_str`); 0 for the distinct counts the rollups do not hold
    /// ([`Metric::in_rollups`] keeps queries that need them away). The rollups' `events` are
    /// by label, identify/alias/group calls among them (`$identify`, …): activity is the rest.
    fn rollup_sql(self) -> String {
        match self {
            Aggregate::Pageviews => "toUInt64(sumIf(value, metric = 'page_views'))".into(),
            Aggregate::Events => "toUInt64(sumIf(value, metric = 'events' AND dimension NOT IN ('$identify', '$alias', '$group')))".into(),
            Aggregate::Visits => "toUInt64(sumIf(value, metric = 'sessions_started'))".into(),
            Aggregate::Bounces => "toUInt64(sumIf(value, metric = 'bounces'))".into(),
            Aggregate::DurationMs => "toUInt64(sumIf(value, metric = 'session_duration_ms'))".into(),
            Aggregate::Visitors | Aggregate::Persons | Aggregate::VisitPageviews => "toUInt64(0)".into(),
        }
    }

    /// The aggregates a metric is computed from.
    pub fn of(metric: Metric) -> &'static [Aggregate] {
        match metric {
            Metric::Visitors | Metric::Percentage | Metric::ConversionRate => {
                &[Aggregate::Visitors]
            }
            Metric::Persons => &[Aggregate::Persons],
            Metric::Pageviews => &[Aggregate::Pageviews],
            Metric::Events => &[Aggregate::Events],
            Metric::Visits | Metric::Sessions => &[Aggregate::Visits],
            Metric::BounceRate => &[Aggregate::Visits, Aggregate::Bounces],
            Metric::VisitDuration => &[Aggregate::Visits, Aggregate::DurationMs],
            Metric::ViewsPerVisit => &[Aggregate::Visits, Aggregate::VisitPageviews],
        }
    }

    /// The table it is read from.
    pub fn scope(self) -> Scope {
        match self {
            Aggregate::Visitors | Aggregate::Persons | Aggregate::Pageviews | Aggregate::Events => {
                Scope::Event
            }
            _ => Scope::Visit,
        }
    }
}

/// A visitor (anonymousId, or userId without one) as a 64-bit hash: exact distinct counts
/// over hashes need a third of the time of those over strings, and a collision among even a
/// billion visitors has a probability below 3 %.
const VISITOR_HASH: &str = "cityHash64(if(anonymous_id != '', anonymous_id, user_id))";

/// How far before a range's start a visit may have started and still have events in the
/// range: event metrics read their events' visit attributes from visits that started up to
/// this long before (Plausible reads sessions with the same 7-day margin). An event of a
/// longer visit reads its visit attributes as empty.
pub const VISIT_LOOKBACK_SECS: i64 = 7 * 86_400;

/// One statement of a compiled query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The table it reads.
    pub scope: Scope,
    /// What it returns, besides `d0…dn` (the dimensions' values, as strings).
    pub aggregates: Vec<Aggregate>,
    /// The SQL.
    pub statement: Statement,
}

/// Compiles `query` over `period` (the query's own or its comparison's): one statement per
/// table its metrics need.
pub fn compile(query: &Query, period: &Period) -> Vec<Compiled> {
    let mut aggregates: Vec<Aggregate> = query
        .metrics
        .iter()
        .flat_map(|metric| Aggregate::of(*metric).iter().copied())
        .collect();
    aggregates.sort();
    aggregates.dedup();
    if query.reads_rollups(period) {
        return vec![Compiled {
            scope: Scope::Event,
            statement: rollup_statement(query, period, &aggregates),
            aggregates,
        }];
    }
    [Scope::Event, Scope::Visit]
        .into_iter()
        .filter_map(|scope| {
            let own: Vec<Aggregate> = aggregates
                .iter()
                .copied()
                .filter(|aggregate| aggregate.scope() == scope)
                .collect();
            (!own.is_empty()).then(|| Compiled {
                scope,
                statement: statement(query, period, scope, &own),
                aggregates: own,
            })
        })
        .collect()
}

fn statement(query: &Query, period: &Period, scope: Scope, aggregates: &[Aggregate]) -> Statement {
    let table = Table {
        scope,
        period,
        goals: &query.goals,
    };
    let mut sql = Statement::default();
    sql.push("SELECT ");
    for (index, dimension) in query.dimensions.iter().enumerate() {
        sql.append(table.dimension(dimension))
            .push(&format!(" AS d{index}, "));
    }
    let columns: Vec<String> = aggregates
        .iter()
        .map(|aggregate| format!("{} AS {}", aggregate.sql(), aggregate.alias()))
        .collect();
    sql.push(&columns.join(", "));
    sql.append(table.source(query));
    group_with_totals(&mut sql, query.dimensions.len());
    sql
}

/// `GROUP BY d0, …, dn WITH TOTALS`: a breakdown and its total from one statement, so that
/// they reconcile. Nothing without dimensions (the one row is the total).
fn group_with_totals(sql: &mut Statement, dimensions: usize) {
    if dimensions > 0 {
        let groups: Vec<String> = (0..dimensions).map(|index| format!("d{index}")).collect();
        sql.push(&format!(" GROUP BY {} WITH TOTALS", groups.join(", ")));
    }
}

/// A period before the tenant's raw rows, from the per-minute rollups: the sums they hold,
/// over time buckets of their minute (the caller has refused everything else with
/// [`Query::rollup_refusal`]). The engine's window aggregate counts what the raw statements
/// count: interactions, on time, bots excluded, page views by [`page_view_sql`]'s rule,
/// visits by their start.
fn rollup_statement(query: &Query, period: &Period, aggregates: &[Aggregate]) -> Statement {
    let mut sql = Statement::default();
    sql.push("SELECT ");
    for (index, dimension) in query.dimensions.iter().enumerate() {
        match dimension {
            Dimension::Time(granularity) => sql.append(time_bucket(*granularity, "minute", period)),
            // Refused before; valid SQL all the same.
            _ => sql.push("''"),
        };
        sql.push(&format!(" AS d{index}, "));
    }
    let columns: Vec<String> = aggregates
        .iter()
        .map(|aggregate| format!("{} AS {}", aggregate.rollup_sql(), aggregate.alias()))
        .collect();
    sql.push(&columns.join(", "))
        .push(" FROM agg_minute_metrics FINAL WHERE tenant = ")
        .bind(query.tenant.as_str())
        .push(" AND minute >= toDateTime(")
        .bind(period.from.to_string())
        .push(") AND minute < toDateTime(")
        .bind(period.to.to_string())
        .push(")");
    group_with_totals(&mut sql, query.dimensions.len());
    sql
}

/// The visit attributes the events statement reads (through visit dimensions and filters):
/// the ones its join brings.
fn visit_attributes(query: &Query) -> BTreeSet<VisitAttribute> {
    let conditions = query.filters.iter().flat_map(Filter::conditions);
    query
        .dimensions
        .iter()
        .chain(conditions.map(|condition| &condition.dimension))
        .filter_map(|dimension| match dimension {
            Dimension::Visit(attribute) => Some(*attribute),
            _ => None,
        })
        .collect()
}

/// The events every event metric counts: the tenant's on-time activity in the period, bots
/// excluded unless asked for.
fn event_base(tenant: &str, period: &Period, include_bots: bool) -> Statement {
    let mut sql = Statement::default();
    sql.push("tenant = ")
        .bind(tenant)
        .push(" AND event_time >= toDateTime(")
        .bind(period.from.to_string())
        .push(") AND event_time < toDateTime(")
        .bind(period.to.to_string())
        .push(&format!(
            ") AND late = 0 AND {} AND {}",
            activity_sql(),
            interactive_sql()
        ));
    if !include_bots {
        sql.push(&format!(" AND {}", human_sql()));
    }
    sql
}

/// The visits every visit metric counts: the tenant's visits that started in `[from, to)`
/// and were not merged into another.
fn visit_base(tenant: &str, from: i64, to: i64) -> Statement {
    let mut sql = Statement::default();
    sql.push("tenant = ")
        .bind(tenant)
        .push(" AND deleted = 0 AND start_time >= toDateTime(")
        .bind(from.to_string())
        .push(") AND start_time < toDateTime(")
        .bind(to.to_string())
        .push(")");
    sql
}

/// The visit columns joined to events are named `visit_<attribute>`.
fn visit_alias(attribute: VisitAttribute) -> String {
    format!("visit_{}", attribute.name())
}

/// The SQL of one statement's table.
struct Table<'a> {
    scope: Scope,
    period: &'a Period,
    goals: &'a [Goal],
}

impl Table<'_> {
    /// `FROM … WHERE …`: the table's rows the query counts (the base rows of the period, with
    /// each event's visit attributes joined when the query reads them) and its filters.
    fn source(&self, query: &Query) -> Statement {
        let mut sql = Statement::default();
        match self.scope {
            Scope::Event => {
                sql.push(" FROM events FINAL");
                let attributes = visit_attributes(query);
                if !attributes.is_empty() {
                    sql.append(self.visit_columns_join(&query.tenant, &attributes));
                }
                sql.push(" WHERE ").append(event_base(
                    &query.tenant,
                    self.period,
                    query.include_bots,
                ));
            }
            Scope::Visit => {
                sql.push(" FROM sessions FINAL WHERE ").append(visit_base(
                    &query.tenant,
                    self.period.from,
                    self.period.to,
                ));
            }
        }
        for filter in &query.filters {
            sql.push(" AND ").append(self.filter(query, filter));
        }
        sql
    }

    /// The dimension's value as a string (time buckets: local dates, or Unix seconds for
    /// hours and minutes, whose local labels may repeat on a DST day).
    fn dimension(&self, dimension: &Dimension) -> Statement {
        let mut sql = Statement::default();
        match (dimension, self.scope) {
            (Dimension::Time(granularity), scope) => {
                let column = match scope {
                    Scope::Event => "event_time",
                    Scope::Visit => "start_time",
                };
                sql.append(time_bucket(*granularity, column, self.period));
            }
            (Dimension::Page, Scope::Event) => {
                sql.push(page_view_location_sql());
            }
            (Dimension::Page, Scope::Visit) => {
                sql.push("entry_path");
            }
            (Dimension::Name, _) => {
                sql.push(&format!("if({}, 'pageview', name)", page_view_sql()));
            }
            (Dimension::Hostname, _) => {
                sql.push("domain(url)");
            }
            (Dimension::Goal, _) => {
                // Every goal the event completes, one row each; none: no row.
                sql.push("arrayJoin(arrayFilter(goal -> goal != '', [");
                for (index, goal) in self.goals.iter().enumerate() {
                    if index > 0 {
                        sql.push(", ");
                    }
                    sql.push("if(")
                        .append(goal_condition(goal))
                        .push(", ")
                        .bind(goal.label())
                        .push(", '')");
                }
                sql.push("]))");
            }
            (Dimension::Property(key), _) => {
                sql.push("if(has(properties.key, ")
                    .bind(key.clone())
                    .push("), properties.value[indexOf(properties.key, ")
                    .bind(key.clone())
                    .push(")], '(none)')");
            }
            (Dimension::Visit(attribute), Scope::Event) => {
                sql.push(&visit_alias(*attribute));
            }
            (Dimension::Visit(attribute), Scope::Visit) => {
                sql.push(attribute.column());
            }
        }
        sql
    }

    /// `ANY LEFT JOIN` of each event's visit attributes (visits that started up to
    /// [`VISIT_LOOKBACK_SECS`] before the period).
    fn visit_columns_join(&self, tenant: &str, attributes: &BTreeSet<VisitAttribute>) -> Statement {
        let columns: Vec<String> = attributes
            .iter()
            .map(|attribute| format!("{} AS {}", attribute.column(), visit_alias(*attribute)))
            .collect();
        let mut sql = Statement::default();
        sql.push(&format!(
            " ANY LEFT JOIN (SELECT session_id, {} FROM sessions FINAL WHERE ",
            columns.join(", ")
        ))
        .append(visit_base(
            tenant,
            self.period.from - VISIT_LOOKBACK_SECS,
            self.period.to,
        ))
        // The alias: current servers refuse an unnamed joined subquery
        // (`joined_subquery_requires_alias`, found on 26.9); 18.16 accepts either.
        .push(") AS visit USING session_id");
        sql
    }

    /// A filter tree as a condition on this table's rows. On visits, a tree of event
    /// conditions is one test: the visit has an event (in the period) for which it holds.
    fn filter(&self, query: &Query, filter: &Filter) -> Statement {
        if self.scope == Scope::Visit && filter.is_event_only() {
            return has_event(query, self.period, filter, true);
        }
        let mut sql = Statement::default();
        match filter {
            Filter::Condition(condition) => {
                sql.append(self.condition(condition));
            }
            Filter::And(children) | Filter::Or(children) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                sql.push("(");
                for (index, part) in self
                    .children(query, filter, children)
                    .into_iter()
                    .enumerate()
                {
                    if index > 0 {
                        sql.push(joiner);
                    }
                    sql.append(part);
                }
                sql.push(")");
            }
            Filter::Not(child) => {
                sql.push("NOT (")
                    .append(self.filter(query, child))
                    .push(")");
            }
            Filter::HasDone(child, done) => {
                sql.append(has_event(query, self.period, child, *done));
            }
        }
        sql
    }

    /// The children of an `and`/`or` on this table. On visits, the event-only children are
    /// one test together ("the visit has an event for which they hold"), so that conditions
    /// joined by `and` hold for the same event.
    fn children(&self, query: &Query, filter: &Filter, children: &[Filter]) -> Vec<Statement> {
        if self.scope == Scope::Event {
            return children
                .iter()
                .map(|child| self.filter(query, child))
                .collect();
        }
        let (events, visits): (Vec<Filter>, Vec<Filter>) =
            children.iter().cloned().partition(Filter::is_event_only);
        let mut parts: Vec<Statement> = visits
            .iter()
            .map(|child| self.filter(query, child))
            .collect();
        if !events.is_empty() {
            let together = match filter {
                Filter::And(_) => Filter::And(events),
                _ => Filter::Or(events),
            };
            parts.push(has_event(query, self.period, &together, true));
        }
        parts
    }

    fn condition(&self, condition: &Condition) -> Statement {
        let (operator, negated) = condition.operator.positive();
        if condition.dimension == Dimension::Goal {
            return self.goal_filter(condition, operator, negated);
        }
        // Case-insensitive: both sides through ClickHouse's `lowerUTF8`, so that they are
        // folded by the same rules.
        let fold = !condition.case_sensitive && operator != Operator::Matches;
        let wrap = |inner: Statement| {
            let mut sql = Statement::default();
            if fold {
                sql.push("lowerUTF8(").append(inner).push(")");
            } else {
                sql.append(inner);
            }
            sql
        };
        let clause_sql = |clause: &str| {
            let mut bound = Statement::default();
            bound.bind(clause.to_owned());
            wrap(bound)
        };
        let value = wrap(self.dimension(&condition.dimension));
        let mut sql = Statement::default();
        sql.push(if negated { "NOT (" } else { "(" });
        if operator == Operator::Is {
            sql.append(value).push(" IN (");
            for (index, clause) in condition.clauses.iter().enumerate() {
                if index > 0 {
                    sql.push(", ");
                }
                sql.append(clause_sql(&stored_value(&condition.dimension, clause)));
            }
            sql.push(")");
        } else {
            let function = if operator == Operator::Contains {
                "position"
            } else {
                "match"
            };
            for (index, clause) in condition.clauses.iter().enumerate() {
                if index > 0 {
                    sql.push(" OR ");
                }
                sql.push(&format!("{function}("))
                    .append(value.clone())
                    .push(", ")
                    .append(clause_sql(clause))
                    .push(if operator == Operator::Contains {
                        ") > 0"
                    } else {
                        ")"
                    });
            }
        }
        sql.push(")");
        sql
    }
}

/// Per person, every event (in the period, or after it within the funnel's window) that
/// matches a step or an exclusion: `(person_id, [(time ms, receipt ms, messageId, step mask,
/// in the period, label of the query's first dimension)])`, for [`super::funnel`].
pub fn funnel_statement(query: &Query, funnel: &super::funnel::Funnel) -> Statement {
    let period = &query.period;
    let reach = Period {
        to: period.to + (funnel.window_ms + 999) / 1000,
        ..period.clone()
    };
    let table = Table {
        scope: Scope::Event,
        period: &reach,
        goals: &query.goals,
    };
    let mut mask = Statement::default();
    mask.push("(0");
    for (index, step) in funnel.steps.iter().enumerate() {
        mask.push(" + if(")
            .append(table.filter(query, step))
            .push(&format!(", {}, 0)", 1u64 << index));
    }
    if !funnel.exclusions.is_empty() {
        mask.push(" + if(")
            .append(table.filter(query, &Filter::Or(funnel.exclusions.clone())))
            .push(&format!(", {}, 0)", super::funnel::EXCLUSION_BIT));
    }
    mask.push(")");
    let mut sql = Statement::default();
    // Sorted, so that the answer does not depend on the order parts were read in (the
    // funnel's own reading sorts again; this makes the statement's answer deterministic).
    sql.push("SELECT person_id, arraySort(groupArray((event_time_ms, received_at_ms, message_id, toUInt64")
        .append(mask.clone())
        .push(", toUInt8(event_time < toDateTime(")
        .bind(period.to.to_string())
        .push(")), ");
    match query.dimensions.first() {
        Some(dimension) => sql.append(table.dimension(dimension)),
        None => sql.push("''"),
    };
    sql.push("))) AS events").append(table.source(query));
    sql.push(" AND ")
        .append(mask)
        .push(" != 0 GROUP BY person_id");
    sql
}

impl Table<'_> {
    /// A goal filter: the events that complete one of the goals whose names match (`is`:
    /// equal, `contains`: a part; validated to be the only operators).
    fn goal_filter(&self, condition: &Condition, operator: Operator, negated: bool) -> Statement {
        let fold = |text: &str| {
            if condition.case_sensitive {
                text.to_owned()
            } else {
                text.to_lowercase()
            }
        };
        let matching: Vec<&Goal> = self
            .goals
            .iter()
            .filter(|goal| {
                let label = fold(&goal.label());
                condition.clauses.iter().any(|clause| match operator {
                    Operator::Contains => label.contains(&fold(clause)),
                    _ => label == fold(clause),
                })
            })
            .collect();
        let mut sql = Statement::default();
        sql.push(if negated { "NOT (0" } else { "(0" });
        for goal in matching {
            sql.push(" OR ").append(goal_condition(goal));
        }
        sql.push(")");
        sql
    }
}

/// The events that complete `goal`: a track call of its event, or a page view whose location
/// matches its page pattern.
fn goal_condition(goal: &Goal) -> Statement {
    let mut sql = Statement::default();
    match (&goal.event, &goal.page) {
        (Some(event), _) => {
            sql.push(&format!("(NOT {} AND name = ", page_view_sql()))
                .bind(event.clone())
                .push(")");
        }
        (None, Some(page)) => {
            sql.push(&format!(
                "({} AND match({}, ",
                page_view_sql(),
                page_view_location_sql()
            ))
            .bind(wildcard_regex(page))
            .push("))");
        }
        (None, None) => {
            sql.push("0");
        }
    }
    sql
}

/// Weekly retention: per cohort (the local Monday of a person's first activity in the
/// period) and weeks since, the persons active again: `(cohort "YYYY-MM-DD", offset, persons)`,
/// ordered by cohort and offset. One pass over the events: each person's set of active
/// weeks, whose least is the cohort.
pub fn retention_statement(query: &Query) -> Statement {
    let table = Table {
        scope: Scope::Event,
        period: &query.period,
        goals: &query.goals,
    };
    let mut sql = Statement::default();
    sql.push(
        "SELECT toString(first_week) AS cohort, \
         toUInt32(intDiv(toRelativeDayNum(week) - toRelativeDayNum(first_week), 7)) AS offset, \
         count() AS persons FROM (SELECT active_weeks, arrayReduce('min', active_weeks) AS first_week \
         FROM (SELECT person_id, groupUniqArray(toMonday(event_time, ",
    )
    .bind(query.period.zone.name())
    .push(")) AS active_weeks")
    .append(table.source(query))
    .push(
        " GROUP BY person_id)) ARRAY JOIN active_weeks AS week \
         GROUP BY first_week, offset ORDER BY first_week, offset",
    );
    sql
}

/// `session_id IN` the visits with an event (in the period) for which `filter` holds.
fn has_event(query: &Query, period: &Period, filter: &Filter, done: bool) -> Statement {
    let events = Table {
        scope: Scope::Event,
        period,
        goals: &query.goals,
    };
    let mut sql = Statement::default();
    sql.push(if done {
        "session_id IN ("
    } else {
        "session_id NOT IN ("
    })
    .push("SELECT session_id FROM events FINAL WHERE ")
    .append(event_base(&query.tenant, period, query.include_bots))
    .push(" AND ")
    .append(events.filter(query, filter))
    .push(")");
    sql
}

/// A label as stored: Plausible's display values for empty ones (`(not set)`, `Direct /
/// None`) name the empty string.
fn stored_value(dimension: &Dimension, clause: &str) -> String {
    if clause == display_empty(dimension) && !clause.is_empty() {
        String::new()
    } else {
        clause.to_owned()
    }
}

/// How an empty value of `dimension` is shown (Plausible's labels).
pub fn display_empty(dimension: &Dimension) -> &'static str {
    match dimension {
        Dimension::Visit(VisitAttribute::Source | VisitAttribute::Referrer) => "Direct / None",
        Dimension::Visit(VisitAttribute::EntryPage | VisitAttribute::ExitPage) => "",
        Dimension::Visit(_) => "(not set)",
        _ => "",
    }
}

/// A time bucket of `column`, local to the period's zone.
fn time_bucket(granularity: Granularity, column: &str, period: &Period) -> Statement {
    let zone = period.zone.name();
    let mut sql = Statement::default();
    let (function, as_date) = match granularity {
        Granularity::Minute => ("toStartOfMinute", false),
        Granularity::Hour => ("toStartOfHour", false),
        Granularity::Day => ("toDate", true),
        Granularity::Week => ("toMonday", true),
        Granularity::Month => ("toStartOfMonth", true),
    };
    if as_date {
        sql.push(&format!("toString({function}({column}, "))
            .bind(zone)
            .push("))");
    } else {
        sql.push(&format!("toString(toUInt32({function}({column}, "))
            .bind(zone)
            .push(")))");
    }
    sql
}
