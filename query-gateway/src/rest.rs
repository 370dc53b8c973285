//! The dashboard's REST endpoints `overview`, `timeseries` and `top`, each a thin wrapper that
//! builds a [`Query`] from its parameters and shapes the answer as it always has. Their
//! filters mean what the model's mean: `path` is `event:page`, `event` is `event:name`,
//! `utm_source` is the visit's (`visit:utm_source`), so that visitors and bounce rate of one
//! campaign describe the same visits.

use chrono_tz::Tz;
use clickhouse::Client;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::params::{Endpoint, Interval, Params, Range};
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

/// The query every endpoint starts from: the tenant, the range in the requested zone, the
/// filters of the parameters.
fn base(
    tenant: &schemas::tenants::Tenant,
    params: &Params,
    metrics: Vec<Metric>,
) -> Result<Query, ApiError> {
    let range = params.range()?;
    let zone: Tz = params.zone(&tenant.time_zone)?;
    let period =
        Period::instants(zone, range.from, range.to).map_err(|error| ApiError::BadParameter {
            parameter: "from".into(),
            message: error.to_string(),
        })?;
    let filters = params.filters();
    let mut model_filters = Vec::new();
    if let Some(path) = &filters.path {
        model_filters.push(is(Dimension::Page, path));
    }
    if let Some(event) = &filters.event {
        model_filters.push(is(Dimension::Name, event));
    }
    if let Some(source) = &filters.utm_source {
        model_filters.push(is(Dimension::Visit(VisitAttribute::UtmSource), source));
    }
    Ok(Query {
        tenant: tenant.id.clone(),
        metrics,
        dimensions: Vec::new(),
        filters: model_filters,
        period,
        comparison: None,
        order_by: Vec::new(),
        offset: 0,
        limit: usize::MAX,
        include_bots: params.include_bots()?,
        goals: tenant.goals.clone(),
    })
}

fn count(value: MetricValue) -> u64 {
    match value {
        MetricValue::Count(count) => count,
        MetricValue::Ratio(_) => 0,
    }
}

/// `/api/overview`: the range's totals and those of the range of the same length before it.
pub async fn overview(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Value, ApiError> {
    params.only(Endpoint::Overview)?;
    const METRICS: [Metric; 7] = [
        Metric::Visitors,
        Metric::Persons,
        Metric::Pageviews,
        Metric::Events,
        Metric::Sessions,
        Metric::BounceRate,
        Metric::VisitDuration,
    ];
    let mut query = base(tenant, params, METRICS.to_vec())?;
    query.comparison = Some(Comparison {
        mode: CompareMode::SameLengthBefore,
        range: None,
        match_day_of_week: false,
    });
    let answer = run::run(client, &query, chrono::Utc::now().timestamp()).await?;
    let period_json = |range: Range, values: &[MetricValue]| {
        json!({
            "from": range.from,
            "to": range.to,
            "visitors": count(values[0]),
            "persons": count(values[1]),
            "page_views": count(values[2]),
            "events": count(values[3]),
            "sessions": count(values[4]),
            "bounce_rate": values[5].number().map(|percent| percent / 100.0),
            "avg_session_duration_secs": values[6].number(),
        })
    };
    let current = answer.rows.first().map(|row| {
        period_json(
            Range {
                from: query.period.from,
                to: query.period.to,
            },
            &row.metrics,
        )
    });
    let previous = match (
        answer.rows.first().and_then(|row| row.comparison.as_ref()),
        &answer.comparison_period,
    ) {
        (Some(compared), Some(period)) => Some(period_json(
            Range {
                from: period.from,
                to: period.to,
            },
            &compared.metrics,
        )),
        _ => None,
    };
    Ok(
        json!({"current": current, "previous": previous, "complete_until_ms": answer.complete_until_ms}),
    )
}

/// `/api/timeseries`: one metric per bucket that has any, buckets as Unix seconds of their
/// (local) start.
pub async fn timeseries(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Value, ApiError> {
    params.only(Endpoint::Timeseries)?;
    let (name, metric) = params.metric(&[
        ("page_views", Metric::Pageviews),
        ("events", Metric::Events),
        ("visitors", Metric::Visitors),
        ("sessions", Metric::Sessions),
    ])?;
    let granularity = match params.interval()? {
        Interval::Minute => Granularity::Minute,
        Interval::Hour => Granularity::Hour,
        Interval::Day => Granularity::Day,
    };
    let mut query = base(tenant, params, vec![metric])?;
    query.dimensions = vec![Dimension::Time(granularity)];
    let answer = run::run(client, &query, chrono::Utc::now().timestamp()).await?;
    let points: Vec<Value> = answer
        .rows
        .iter()
        .filter(|row| count(row.metrics[0]) > 0)
        .map(|row| json!({"time": bucket_start(&query, &row.keys[0]), "value": count(row.metrics[0])}))
        .collect();
    Ok(json!({"metric": name, "points": points, "complete_until_ms": answer.complete_until_ms}))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// `/api/top/{kind}`: the most viewed pages, the most frequent track events, or the visits'
/// referrers or campaign sources, most frequent first.
pub async fn top(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
    kind: &str,
) -> Result<Value, ApiError> {
    params.only(Endpoint::Top)?;
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
    let mut query = base(tenant, params, vec![metric])?;
    query.dimensions = vec![dimension];
    query.filters.push(only);
    query.limit = params.limit()? as usize;
    let answer: Answer = run::run(client, &query, chrono::Utc::now().timestamp()).await?;
    let entries: Vec<Value> = answer
        .rows
        .iter()
        .map(|row| json!({"key": row.keys[0], "value": count(row.metrics[0])}))
        .collect();
    Ok(
        json!({"kind": kind.name(), "entries": entries, "complete_until_ms": answer.complete_until_ms}),
    )
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

/// `/api/funnel`: per step, the persons who reached it in order within the window (see
/// [`crate::query::funnel`]), those still in progress, and with `breakdown=<dimension>` the
/// same per value of the dimension on each person's first step.
pub async fn funnel(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Value, ApiError> {
    params.only(Endpoint::Funnel)?;
    let steps = params.steps()?;
    let exclusions = params.exclusions()?;
    let window_secs = params.window_secs()?;
    let mut query = base(tenant, params, vec![Metric::Visitors])?;
    if let Some(dimension) = params.breakdown(query.period.to - query.period.from)? {
        query.dimensions = vec![dimension];
    }
    let model = Funnel {
        steps: steps.iter().map(step_filter).collect(),
        exclusions: exclusions.iter().map(step_filter).collect(),
        window_ms: i64::from(window_secs) * 1000,
    };
    let answer = funnel::run(client, &query, &model).await?;
    let group_json = |group: &FunnelGroup| {
        let body: Vec<Value> = steps
            .iter()
            .zip(&group.steps)
            .enumerate()
            .map(|(index, (step, count))| {
                let (kind, value) = match step {
                    Step::Page(path) => ("page", path),
                    Step::Event(name) => ("event", name),
                };
                let (from_previous, from_first) = group.conversions(index);
                json!({
                    "step": index + 1,
                    "kind": kind,
                    "value": value,
                    "persons": count.persons,
                    "in_progress": count.in_progress,
                    "conversion_from_previous": from_previous,
                    "conversion_from_first": from_first,
                })
            })
            .collect();
        json!({"steps": body, "excluded": group.excluded})
    };
    let mut groups = answer.groups.iter();
    let all = groups.next().map(group_json).unwrap_or(Value::Null);
    let breakdown: Vec<Value> = groups
        .map(|group| {
            let mut body = group_json(group);
            body["value"] = json!(group.label);
            body
        })
        .collect();
    Ok(json!({
        "window_secs": window_secs,
        "steps": all["steps"],
        "excluded": all["excluded"],
        "breakdown": breakdown,
        "complete_until_ms": answer.complete_until_ms,
    }))
}

#[derive(Debug, serde::Deserialize)]
struct RetentionOutput {
    data: Vec<(String, u32, u64)>,
}

/// `/api/retention`: cohorts by the local week (from Monday) of each person's first activity
/// in the range; per later week, the persons active again and their share of the cohort.
pub async fn retention(
    client: &Client,
    tenant: &schemas::tenants::Tenant,
    params: &Params,
) -> Result<Value, ApiError> {
    params.only(Endpoint::Retention)?;
    let query = base(tenant, params, vec![Metric::Persons])?;
    let range = Range {
        from: query.period.from,
        to: query.period.to,
    };
    let complete_until_ms = crate::queries::progress(client, &tenant.id).await?;
    let output: RetentionOutput = run::fetch_json(client, &retention_statement(&query)).await?;
    // Offsets size a vector: one the range cannot contain (a query bug) must not
    // become an allocation of gigabytes.
    let max_offset = ((range.to - range.from) / (7 * 86_400) + 1).max(0) as usize;
    let mut cohorts: Vec<Value> = Vec::new();
    let mut current: Option<(String, Vec<u64>)> = None;
    for (cohort, offset, persons) in output.data {
        if current
            .as_ref()
            .is_none_or(|(current, _)| *current != cohort)
        {
            if let Some((done, active)) = current.take() {
                cohorts.push(cohort_json(done, active));
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
        cohorts.push(cohort_json(cohort, active));
    }
    Ok(json!({"cohorts": cohorts, "complete_until_ms": complete_until_ms}))
}

/// A cohort: its size (persons active in week 0) and, per week since, persons active and the
/// share of the cohort they are.
fn cohort_json(week: String, active: Vec<u64>) -> Value {
    let size = active.first().copied().unwrap_or(0);
    let retained: Vec<Value> = active
        .iter()
        .map(|persons| {
            let share = (size > 0).then(|| *persons as f64 / size as f64);
            json!({"persons": persons, "share": share})
        })
        .collect();
    json!({"week": week, "persons": size, "retained": retained})
}
