//! The dashboard's REST endpoints `overview`, `timeseries` and `top`, each a thin wrapper that
//! builds a [`Query`] from its parameters and shapes the answer as it always has. Their
//! filters mean what the model's mean: `path` is `event:page`, `event` is `event:name`,
//! `utm_source` is the visit's (`visit:utm_source`), so that visitors and bounce rate of one
//! campaign describe the same visits.

use chrono_tz::Tz;
use clickhouse::Client;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::params::{
    Bots, Endpoint, FunnelParams, Interval, LimitParams, Params, Range, ReportParams, SeriesMetric,
    SeriesParams, limit,
};
use crate::queries::Step;
use crate::query::compile::retention_statement;
use crate::query::funnel::{self, Funnel, FunnelGroup};
use crate::query::model::{
    CompareMode, Comparison, Condition, Dimension, Filter, Granularity, Metric, Operator, Query,
    VisitAttribute,
};
use crate::query::range::{Period, start_of_day};
use crate::query::run::{self, Answer, Value as MetricValue};

fn is(dimension: Dimension, value: &str) -> Filter {
    Filter::Condition(Condition {
        operator: Operator::Is,
        dimension,
        clauses: vec![value.to_owned()],
        case_sensitive: true,
    })
}

fn is_not_empty(dimension: Dimension) -> Filter {
    Filter::Condition(Condition {
        operator: Operator::IsNot,
        dimension,
        clauses: vec![String::new()],
        case_sensitive: true,
    })
}

/// The query every report starts from, after refusing the parameters `endpoint` does not
/// take: the tenant, the range in the requested zone, the filters of the parameters.
fn base(
    tenant: &schemas::tenants::Tenant,
    params: &Params,
    endpoint: Endpoint,
    metrics: Vec<Metric>,
) -> Result<Query, ApiError> {
    params.only(endpoint)?;
    let range = params.range()?;
    let report: ReportParams = params.group()?;
    let zone: Tz = report.zone(&tenant.time_zone)?;
    let period =
        Period::instants(zone, range.from, range.to).map_err(|error| ApiError::BadParameter {
            parameter: "from".into(),
            message: error.to_string(),
        })?;
    let mut filters = Vec::new();
    if let Some(path) = ReportParams::filter(&report.path) {
        filters.push(is(Dimension::Page, path));
    }
    if let Some(event) = ReportParams::filter(&report.event) {
        filters.push(is(Dimension::Name, event));
    }
    if let Some(source) = ReportParams::filter(&report.utm_source) {
        filters.push(is(Dimension::Visit(VisitAttribute::UtmSource), source));
    }
    Ok(Query {
        tenant: tenant.id.clone(),
        metrics,
        dimensions: Vec::new(),
        filters,
        period,
        comparison: None,
        order_by: Vec::new(),
        offset: 0,
        limit: usize::MAX,
        include_bots: report.bots == Some(Bots::Include),
        goals: tenant.goals.clone(),
        raw_from: tenant.raw_from(params.now()),
    })
}

fn count(value: MetricValue) -> u64 {
    match value {
        MetricValue::Count(count) => count,
        MetricValue::Ratio(_) => 0,
    }
}

/// One period's totals in `/api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PeriodTotals {
    /// Start, Unix seconds, inclusive.
    pub from: i64,
    /// End, Unix seconds, exclusive.
    pub to: i64,
    /// Distinct visitors with an activity event in the period.
    pub visitors: u64,
    /// Distinct persons (visitors joined by identity) with an activity event.
    pub persons: u64,
    /// Page and screen views.
    pub page_views: u64,
    /// Activity events.
    pub events: u64,
    /// Visits that started in the period.
    pub sessions: u64,
    /// Bounced visits over visits, 0-1; null without visits.
    pub bounce_rate: Option<f64>,
    /// Mean visit duration, seconds; null without visits.
    pub avg_session_duration_secs: Option<f64>,
}

/// The answer of `/api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Overview {
    /// The range's totals.
    pub current: Option<PeriodTotals>,
    /// The totals of the range of the same length just before it.
    pub previous: Option<PeriodTotals>,
    /// Events up to this time (Unix ms) are all counted; null before the engine's first
    /// checkpoint.
    pub complete_until_ms: Option<i64>,
}

/// `/api/overview`: the range's totals and those of the range of the same length before it.
pub async fn overview(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Overview, ApiError> {
    const METRICS: [Metric; 7] = [
        Metric::Visitors,
        Metric::Persons,
        Metric::Pageviews,
        Metric::Events,
        Metric::Sessions,
        Metric::BounceRate,
        Metric::VisitDuration,
    ];
    let mut query = base(tenant, params, Endpoint::Overview, METRICS.to_vec())?;
    let now = params.now();
    let comparison = Comparison {
        mode: CompareMode::SameLengthBefore,
        range: None,
        match_day_of_week: false,
    };
    // The range before may reach past the tenant's raw rows, where visitors are not kept:
    // then the overview has no `previous` rather than failing.
    let with_raw_start = run::with_raw_start(client, &query).await?;
    let compared_is_raw = query
        .period
        .compared(&comparison, now)
        .is_ok_and(|period| !with_raw_start.reads_rollups(&period));
    if compared_is_raw || with_raw_start.reads_rollups(&query.period) {
        query.comparison = Some(comparison);
    }
    let answer = run::run(client, &query, now).await?;
    let totals = |period: &Period, values: &[MetricValue]| PeriodTotals {
        from: period.from,
        to: period.to,
        visitors: count(values[0]),
        persons: count(values[1]),
        page_views: count(values[2]),
        events: count(values[3]),
        sessions: count(values[4]),
        bounce_rate: values[5].number().map(|percent| percent / 100.0),
        avg_session_duration_secs: values[6].number(),
    };
    let row = answer.rows.first();
    Ok(Overview {
        current: row.map(|row| totals(&query.period, &row.metrics)),
        previous: row
            .and_then(|row| row.comparison.as_ref())
            .zip(answer.comparison_period.as_ref())
            .map(|(compared, period)| totals(period, &compared.metrics)),
        complete_until_ms: answer.complete_until_ms,
    })
}

/// A bucket of `/api/timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// The bucket's start, Unix seconds (a day's: its local midnight).
    pub time: i64,
    /// The metric in the bucket.
    pub value: u64,
}

/// The answer of `/api/timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Timeseries {
    /// The metric counted.
    pub metric: SeriesMetric,
    /// The buckets that have any, oldest first.
    pub points: Vec<Point>,
    /// As in the overview.
    pub complete_until_ms: Option<i64>,
}

/// `/api/timeseries`: one metric per bucket that has any, buckets as Unix seconds of their
/// (local) start.
pub async fn timeseries(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Timeseries, ApiError> {
    let mut query = base(tenant, params, Endpoint::Timeseries, Vec::new())?;
    let series: SeriesParams = params.group()?;
    let metric = series.metric.unwrap_or_default();
    query.metrics = vec![match metric {
        SeriesMetric::PageViews => Metric::Pageviews,
        SeriesMetric::Events => Metric::Events,
        SeriesMetric::Visitors => Metric::Visitors,
        SeriesMetric::Sessions => Metric::Sessions,
    }];
    query.dimensions = vec![Dimension::Time(match series.interval.unwrap_or_default() {
        Interval::Minute => Granularity::Minute,
        Interval::Hour => Granularity::Hour,
        Interval::Day => Granularity::Day,
    })];
    let answer = run::run(client, &query, params.now()).await?;
    let points = answer
        .rows
        .iter()
        .filter(|row| count(row.metrics[0]) > 0)
        .map(|row| Point {
            time: bucket_start(&query, &row.keys[0]),
            value: count(row.metrics[0]),
        })
        .collect();
    Ok(Timeseries {
        metric,
        points,
        complete_until_ms: answer.complete_until_ms,
    })
}

/// A bucket's raw key as Unix seconds: hours and minutes are already; a day starts at its
/// local midnight.
fn bucket_start(query: &Query, key: &str) -> i64 {
    key.parse::<i64>().unwrap_or_else(|_| {
        key.parse()
            .map_or(0, |date| start_of_day(query.period.zone, date))
    })
}

/// What `/api/top/{kind}` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopKind {
    /// Page views by page.
    Pages,
    /// Track calls by name.
    Events,
    /// Visits by the referrer of their first page.
    Referrers,
    /// Visits by campaign source.
    UtmSources,
}

impl TopKind {
    /// Every kind.
    pub const ALL: [TopKind; 4] = [
        TopKind::Pages,
        TopKind::Events,
        TopKind::Referrers,
        TopKind::UtmSources,
    ];

    /// Its name in the path.
    pub fn name(self) -> &'static str {
        match self {
            TopKind::Pages => "pages",
            TopKind::Events => "events",
            TopKind::Referrers => "referrers",
            TopKind::UtmSources => "utm_sources",
        }
    }
}

/// An entry of a top list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Entry {
    /// The page, event name, referrer or source.
    pub key: String,
    /// Page views (pages), events (events) or visits (referrers, sources).
    pub value: u64,
}

/// The answer of `/api/top/{kind}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Top {
    /// What is listed.
    pub kind: TopKind,
    /// Most frequent first; ties by key.
    pub entries: Vec<Entry>,
    /// As in the overview.
    pub complete_until_ms: Option<i64>,
}

/// `/api/top/{kind}`: the most viewed pages, the most frequent track events, or the visits'
/// referrers or campaign sources, most frequent first. An unknown kind is not found.
pub async fn top(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
    kind: &str,
) -> Result<Top, ApiError> {
    let kind = TopKind::ALL
        .into_iter()
        .find(|known| known.name() == kind)
        .ok_or(ApiError::NotFound)?;
    let (metric, dimension, only) = match kind {
        TopKind::Pages => (
            Metric::Pageviews,
            Dimension::Page,
            is(Dimension::Name, "pageview"),
        ),
        TopKind::Events => (
            Metric::Events,
            Dimension::Name,
            Filter::Not(Box::new(is(Dimension::Name, "pageview"))),
        ),
        TopKind::Referrers => {
            let dimension = Dimension::Visit(VisitAttribute::Referrer);
            (Metric::Visits, dimension.clone(), is_not_empty(dimension))
        }
        TopKind::UtmSources => {
            let dimension = Dimension::Visit(VisitAttribute::UtmSource);
            (Metric::Visits, dimension.clone(), is_not_empty(dimension))
        }
    };
    let mut query = base(tenant, params, Endpoint::Top, vec![metric])?;
    query.dimensions = vec![dimension];
    query.filters.push(only);
    query.limit = limit(params.group::<LimitParams>()?.limit.as_deref())? as usize;
    let answer: Answer = run::run(client, &query, params.now()).await?;
    let entries = answer
        .rows
        .iter()
        .map(|row| Entry {
            key: row.keys[0].clone(),
            value: count(row.metrics[0]),
        })
        .collect();
    Ok(Top {
        kind,
        entries,
        complete_until_ms: answer.complete_until_ms,
    })
}

/// A funnel step of the `steps` parameter as an event filter: a page view of a location, or
/// a track call of a name.
fn step_filter(step: &Step) -> Filter {
    match step {
        Step::Page(location) => Filter::And(vec![
            is(Dimension::Name, "pageview"),
            is(Dimension::Page, location),
        ]),
        Step::Event(name) => Filter::And(vec![
            Filter::Not(Box::new(is(Dimension::Name, "pageview"))),
            is(Dimension::Name, name),
        ]),
    }
}

/// What a funnel step matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A page view of a path (or a screen view of a name).
    Page,
    /// A track event of a name.
    Event,
}

/// A step of `/api/funnel`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunnelStep {
    /// Its position, from 1.
    pub step: usize,
    /// What the step matches.
    pub kind: StepKind,
    /// The page's path or the event's name.
    pub value: String,
    /// Persons who reached it in order within the window.
    pub persons: u64,
    /// Of those whose furthest step is this one, the persons whose window is still open at
    /// the "complete up to" mark: not dropped off yet.
    pub in_progress: u64,
    /// `persons` over the previous step's, 0-1; null when nobody reached that one.
    pub conversion_from_previous: Option<f64>,
    /// `persons` over the first step's, 0-1.
    pub conversion_from_first: Option<f64>,
}

/// The funnel of one value of the breakdown dimension.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunnelBreakdown {
    /// The dimension's value on each person's first step.
    pub value: String,
    /// As the funnel's.
    pub steps: Vec<FunnelStep>,
    /// As the funnel's.
    pub excluded: u64,
}

/// The answer of `/api/funnel`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunnelAnswer {
    /// The conversion window, seconds.
    pub window_secs: u32,
    /// Per step.
    pub steps: Vec<FunnelStep>,
    /// Persons left out because an exclusion step voided every attempt.
    pub excluded: u64,
    /// With `breakdown`: the funnel per value; empty without.
    pub breakdown: Vec<FunnelBreakdown>,
    /// As in the overview.
    pub complete_until_ms: Option<i64>,
}

/// `/api/funnel`: per step, the persons who reached it in order within the window (see
/// [`crate::query::funnel`]), those still in progress, and with `breakdown=<dimension>` the
/// same per value of the dimension on each person's first step.
pub async fn funnel(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<FunnelAnswer, ApiError> {
    let mut query = base(tenant, params, Endpoint::Funnel, vec![Metric::Visitors])?;
    let funnel_params: FunnelParams = params.group()?;
    let steps = funnel_params.steps()?;
    let window_secs = funnel_params.window_secs()?;
    if let Some(dimension) = funnel_params.breakdown(query.period.to - query.period.from)? {
        query.dimensions = vec![dimension];
    }
    let model = Funnel {
        steps: steps.iter().map(step_filter).collect(),
        exclusions: funnel_params
            .exclusions()?
            .iter()
            .map(step_filter)
            .collect(),
        window_ms: i64::from(window_secs) * 1000,
    };
    let answer = funnel::run(client, &query, &model).await?;
    let step_list = |group: &FunnelGroup| -> Vec<FunnelStep> {
        steps
            .iter()
            .zip(&group.steps)
            .enumerate()
            .map(|(index, (step, count))| {
                let (kind, value) = match step {
                    Step::Page(path) => (StepKind::Page, path),
                    Step::Event(name) => (StepKind::Event, name),
                };
                let (from_previous, from_first) = group.conversions(index);
                FunnelStep {
                    step: index + 1,
                    kind,
                    value: value.clone(),
                    persons: count.persons,
                    in_progress: count.in_progress,
                    conversion_from_previous: from_previous,
                    conversion_from_first: from_first,
                }
            })
            .collect()
    };
    let mut groups = answer.groups.iter();
    let everyone = groups.next();
    Ok(FunnelAnswer {
        window_secs,
        steps: everyone.map(step_list).unwrap_or_default(),
        excluded: everyone.map_or(0, |group| group.excluded),
        breakdown: groups
            .map(|group| FunnelBreakdown {
                value: group.label.clone(),
                steps: step_list(group),
                excluded: group.excluded,
            })
            .collect(),
        complete_until_ms: answer.complete_until_ms,
    })
}

#[derive(Debug, serde::Deserialize)]
struct RetentionOutput {
    data: Vec<(String, u32, u64)>,
}

/// A later week of a cohort.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Retained {
    /// The cohort's persons active in that week.
    pub persons: u64,
    /// Their share of the cohort, 0-1; null for an empty cohort.
    pub share: Option<f64>,
}

/// The persons first active in one local week (from Monday).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Cohort {
    /// The week's Monday, `YYYY-MM-DD` in the requested zone.
    pub week: String,
    /// Persons first active that week.
    pub persons: u64,
    /// Per week since, from week 0 (the cohort itself).
    pub retained: Vec<Retained>,
}

/// The answer of `/api/retention`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Retention {
    /// Oldest first.
    pub cohorts: Vec<Cohort>,
    /// As in the overview.
    pub complete_until_ms: Option<i64>,
}

/// `/api/retention`: cohorts by the local week (from Monday) of each person's first activity
/// in the range; per later week, the persons active again and their share of the cohort.
pub async fn retention(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Retention, ApiError> {
    let query = base(tenant, params, Endpoint::Retention, vec![Metric::Persons])?;
    let range = Range {
        from: query.period.from,
        to: query.period.to,
    };
    let complete_until_ms = crate::queries::progress(client, &tenant.id).await?;
    let query = run::with_raw_start(client, &query).await?;
    query.require_raw("retention cohorts")?;
    let output: RetentionOutput = run::fetch_json(client, &retention_statement(&query)).await?;
    // Offsets size a vector: one the range cannot contain (a query bug) must not
    // become an allocation of gigabytes.
    let max_offset = ((range.to - range.from) / (7 * 86_400) + 1).max(0) as usize;
    let mut cohorts: Vec<Cohort> = Vec::new();
    let mut current: Option<(String, Vec<u64>)> = None;
    for (cohort, offset, persons) in output.data {
        if current
            .as_ref()
            .is_none_or(|(current, _)| *current != cohort)
        {
            if let Some((done, active)) = current.take() {
                cohorts.push(cohort_of(done, active));
            }
            current = Some((cohort.clone(), Vec::new()));
        }
        if let Some((_, active)) = current.as_mut() {
            let offset = offset as usize;
            if offset > max_offset {
                tracing::error!(%cohort, offset, max_offset, "retention week outside the range; ignored");
                continue;
            }
            if active.len() <= offset {
                active.resize(offset + 1, 0);
            }
            active[offset] = persons;
        }
    }
    if let Some((cohort, active)) = current {
        cohorts.push(cohort_of(cohort, active));
    }
    Ok(Retention {
        cohorts,
        complete_until_ms,
    })
}

/// A cohort: its size (persons active in week 0) and, per week since, persons active and the
/// share of the cohort they are.
fn cohort_of(week: String, active: Vec<u64>) -> Cohort {
    let size = active.first().copied().unwrap_or(0);
    let retained = active
        .iter()
        .map(|persons| Retained {
            persons: *persons,
            share: (size > 0).then(|| *persons as f64 / size as f64),
        })
        .collect();
    Cohort {
        week,
        persons: size,
        retained,
    }
}
