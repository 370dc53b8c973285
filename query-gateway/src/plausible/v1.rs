//! Plausible's legacy Stats API v1 (`GET /api/v1/stats/{aggregate,timeseries,breakdown,
//! realtime/visitors}`), which most published Plausible clients still call: each request is
//! read into a [`Query`] and answered in v1's shapes. Parameters: `site_id`, `period` (`day`,
//! `7d`, `30d`, `month`, `6mo`, `12mo`, `custom`), `date` (`YYYY-MM-DD`, or two joined by a
//! comma for `custom`), `metrics`, `filters` (`event:page==/blog/**;visit:utm_source!=x|y`, or
//! a v2 filter list in JSON), `compare=previous_period`, `interval`, `property`, `limit`,
//! `page`; plus ours, `timezone`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query as QueryString, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use chrono::NaiveDate;
use serde_json::{Map, Value as JsonValue, json};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};

use super::{PlausibleError, authorize, value_json, zone};
use crate::AppState;
use crate::query::model::{
    CompareMode, Comparison, Condition, Dimension, Filter, Granularity, Metric, Operator, Query,
    VisitAttribute, wildcard_regex,
};
use crate::query::range::{DateRange, Period, local_date};
use crate::query::run::{Answer, Row, Value, empty_value, run};

type Result<T> = std::result::Result<T, PlausibleError>;

const METRICS_DOC: &str = "https://plausible.io/docs/stats-api#metrics";
const PERIODS_DOC: &str = "https://plausible.io/docs/stats-api#time-periods";
const PROPERTIES_DOC: &str = "https://plausible.io/docs/stats-api#properties";

/// Which v1 endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/v1/stats/aggregate`.
    Aggregate,
    /// `/api/v1/stats/timeseries`.
    Timeseries,
    /// `/api/v1/stats/breakdown`.
    Breakdown,
    /// `/api/v1/stats/realtime/visitors`.
    Realtime,
}

// The structs below are each endpoint's parameter list and its documentation (through
// utoipa); the values are read by `parse`, whose messages are Plausible's.

/// The site every v1 endpoint takes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteParams {
    /// The tenant's id, or one of its configured `domains`; must be the read key's tenant.
    pub site_id: String,
}

/// The period, zone and filters of every v1 report.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `day`, `7d`, `30d`, `month`, `6mo`, `12mo` or `custom`. Default: `30d`.
    pub period: Option<String>,
    /// `YYYY-MM-DD`, the day the period ends on (default today, in the zone); for
    /// `custom`, two dates joined by a comma.
    pub date: Option<String>,
    /// v1 filters (`event:page==/blog/**;visit:utm_source!=x|y`) or a v2 filter list in JSON.
    pub filters: Option<String>,
    /// IANA zone for dates and buckets. Default: the tenant's (ours; Plausible's sites have
    /// one zone).
    pub timezone: Option<String>,
}

/// The metrics of a v1 report.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricParams {
    /// Comma-separated: `visitors`, `visits`, `pageviews`, `views_per_visit`,
    /// `bounce_rate`, `visit_duration`, `events`, `conversion_rate` (and `percentage` in a
    /// breakdown). Default: `visitors`.
    pub metrics: Option<String>,
    /// Accepted for Plausible's clients; nothing is ever imported here.
    pub with_imported: Option<String>,
}

/// `/api/v1/stats/aggregate`'s own parameter.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareParams {
    /// `previous_period`: each metric also as `change` against the period before.
    pub compare: Option<String>,
}

/// `/api/v1/stats/timeseries`' own parameter.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IntervalParams {
    /// `date` or `month` (`hour` for a `day` period). Default: by the period.
    pub interval: Option<String>,
}

/// `/api/v1/stats/breakdown`'s own parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownParams {
    /// The dimension: `event:page`, `event:name`, `event:goal`, `event:props:<key>`,
    /// `visit:source`, `visit:utm_source`…
    #[param(required = true)]
    pub property: Option<String>,
    /// Rows per page, 1 to 1000. Default: 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Page number, from 1. Default: 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    pub page: Option<String>,
}

impl Endpoint {
    /// Its query parameters, from the structs that document them.
    pub fn parameters(self) -> Vec<Parameter> {
        let query = || Some(ParameterIn::Query);
        let mut parameters = SiteParams::into_params(query);
        let report = || {
            [
                ReportParams::into_params(query),
                MetricParams::into_params(query),
            ]
            .concat()
        };
        match self {
            Endpoint::Aggregate => {
                parameters.extend(report());
                parameters.extend(CompareParams::into_params(query));
            }
            Endpoint::Timeseries => {
                parameters.extend(report());
                parameters.extend(IntervalParams::into_params(query));
            }
            Endpoint::Breakdown => {
                parameters.extend(report());
                parameters.extend(BreakdownParams::into_params(query));
            }
            Endpoint::Realtime => {}
        }
        parameters
    }
}

/// The endpoints with their paths, as the router mounts them.
pub const ENDPOINTS: [(&str, Endpoint); 4] = [
    ("/api/v1/stats/aggregate", Endpoint::Aggregate),
    ("/api/v1/stats/timeseries", Endpoint::Timeseries),
    ("/api/v1/stats/breakdown", Endpoint::Breakdown),
    ("/api/v1/stats/realtime/visitors", Endpoint::Realtime),
];

/// The `GET` route of one endpoint.
pub fn route(endpoint: Endpoint) -> MethodRouter<Arc<AppState>> {
    get(
        move |State(state): State<Arc<AppState>>,
              headers: HeaderMap,
              QueryString(pairs): QueryString<Vec<(String, String)>>| async move {
            let result = match once_each(pairs) {
                Ok(params) => answer(endpoint, &state, &headers, &params).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(body) => Json(body).into_response(),
                Err(error) => error.into_response(),
            }
        },
    )
}

/// The parameters by name; one given twice is refused (which of the two to use would be a
/// guess).
fn once_each(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>> {
    let mut params = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(PlausibleError::bad(format!(
                "Parameter `{name}` is given more than once."
            )));
        }
        params.insert(name, value);
    }
    Ok(params)
}

async fn answer(
    endpoint: Endpoint,
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<JsonValue> {
    let tenant = authorize(state, headers, params.get("site_id").map(String::as_str))?;
    let known: Vec<String> = endpoint
        .parameters()
        .into_iter()
        .map(|parameter| parameter.name)
        .collect();
    if let Some(unknown) = params.keys().find(|key| !known.contains(key)) {
        return Err(PlausibleError::bad(format!(
            "Unknown parameter `{unknown}` for this endpoint."
        )));
    }
    let now = state.clock.now_secs();
    let query = parse(endpoint, params, &tenant, now)?;
    let answer = run(&state.clickhouse, &query, now).await?;
    Ok(render(endpoint, params, &query, &answer))
}

/// Reads a v1 request for `tenant` at `now`.
pub fn parse(
    endpoint: Endpoint,
    params: &HashMap<String, String>,
    tenant: &schemas::tenants::Tenant,
    now: i64,
) -> Result<Query> {
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let zone = zone(tenant, get("timezone"))?;
    let period = if endpoint == Endpoint::Realtime {
        Period::instants(zone, now - 300, now + 1)
            .map_err(|error| PlausibleError::bad(error.to_string()))?
    } else {
        let (range, today) = period(
            get("period").unwrap_or("30d"),
            get("date"),
            local_date(zone, now),
        )?;
        Period::resolve_on(&range, zone, today, now, None)
            .map_err(|error| PlausibleError::bad(error.to_string()))?
    };
    let mut metrics = if endpoint == Endpoint::Realtime {
        vec![Metric::Visitors]
    } else {
        metrics(get("metrics").unwrap_or("visitors"))?
    };
    let mut filters = match get("filters") {
        Some(text) => filters(text)?,
        None => Vec::new(),
    };
    let mut dimensions = Vec::new();
    let (mut offset, mut limit) = (0, 1);
    match endpoint {
        Endpoint::Timeseries => {
            let granularity = interval(get("interval"), get("period").unwrap_or("30d"))?;
            dimensions.push(Dimension::Time(granularity));
            limit = usize::MAX;
        }
        Endpoint::Breakdown => {
            let dimension = breakdown_property(get("property"), &metrics)?;
            // v1 leaves out the groups without a value of these dimensions.
            if leaves_out_empty(&dimension) {
                filters.push(Filter::Condition(Condition {
                    operator: Operator::IsNot,
                    dimension: dimension.clone(),
                    clauses: vec![String::new()],
                    case_sensitive: true,
                }));
            }
            dimensions.push(dimension);
            limit = number(
                get("limit"),
                100,
                1..=1000,
                "Please provide limit as a number between 1 and 1000.",
            )?;
            let page = number(
                get("page"),
                1,
                1..=1_000_000,
                "Please provide page as a number of 1 or more.",
            )?;
            offset = (page - 1) * limit;
        }
        Endpoint::Aggregate | Endpoint::Realtime => {}
    }
    if metrics.is_empty() {
        metrics.push(Metric::Visitors);
    }
    let comparison = match get("compare") {
        None => None,
        Some("previous_period") => Some(Comparison {
            mode: CompareMode::PreviousPeriod,
            range: None,
            match_day_of_week: false,
        }),
        Some(other) => {
            return Err(PlausibleError::bad(format!(
                "Invalid value `{other}` for `compare`: previous_period"
            )));
        }
    };
    let query = Query {
        tenant: tenant.id.clone(),
        metrics,
        dimensions,
        filters,
        period,
        comparison,
        order_by: Vec::new(),
        offset,
        limit,
        include_bots: false,
        goals: tenant.goals.clone(),
        raw_from: tenant.raw_from(now),
    };
    check(&query)?;
    Ok(query)
}

/// The breakdown's `property` as a dimension (required; not a time or the hostname), with
/// the metrics a v1 breakdown refuses.
fn breakdown_property(property: Option<&str>, metrics: &[Metric]) -> Result<Dimension> {
    let property = property.ok_or_else(|| {
        PlausibleError::bad("The `property` parameter is required. Please provide at least one property to show a breakdown by.")
    })?;
    let dimension = match Dimension::parse(property, 0) {
        Some(Dimension::Time(_) | Dimension::Hostname) | None => {
            return Err(PlausibleError::bad(format!(
                "Invalid property '{property}'. Please provide a valid property for the breakdown endpoint: {PROPERTIES_DOC}"
            )));
        }
        Some(dimension) => dimension,
    };
    if metrics.contains(&Metric::ViewsPerVisit) {
        return Err(PlausibleError::bad(
            "Metric `views_per_visit` is not supported in breakdown queries.",
        ));
    }
    Ok(dimension)
}

/// The dimensions whose empty value a v1 breakdown leaves out (Plausible's
/// `legacy/breakdown.ex`): UTM values, entry and exit pages, locations.
fn leaves_out_empty(dimension: &Dimension) -> bool {
    matches!(
        dimension,
        Dimension::Visit(
            VisitAttribute::UtmSource
                | VisitAttribute::UtmMedium
                | VisitAttribute::UtmCampaign
                | VisitAttribute::UtmContent
                | VisitAttribute::UtmTerm
                | VisitAttribute::EntryPage
                | VisitAttribute::ExitPage
                | VisitAttribute::Country
                | VisitAttribute::Region
                | VisitAttribute::City
        )
    )
}

/// v1's periods as date ranges, and the day they are relative to (`date`, default today):
/// `7d`/`30d` are the days before it, `month` its month, `6mo`/`12mo` end with its month.
fn period(name: &str, date: Option<&str>, today: NaiveDate) -> Result<(DateRange, NaiveDate)> {
    let parse_date = |text: &str| {
        text.trim().parse::<NaiveDate>().map_err(|_| {
            PlausibleError::bad("Error parsing `date` parameter: invalid_format. Please specify a valid date in ISO-8601 format.")
        })
    };
    if name == "custom" {
        let text = date.ok_or_else(|| {
            PlausibleError::bad(format!(
                "The `date` parameter is required when using a custom period. See {PERIODS_DOC}"
            ))
        })?;
        let Some((first, last)) = text.split_once(',') else {
            return Err(PlausibleError::bad(format!(
                "Invalid format for `date` parameter. When using a custom period, please include two ISO-8601 formatted dates joined by a comma. See {PERIODS_DOC}"
            )));
        };
        return Ok((
            DateRange::Dates(parse_date(first)?, parse_date(last)?),
            today,
        ));
    }
    let date = date.map(parse_date).transpose()?.unwrap_or(today);
    let range = match name {
        "day" => DateRange::Day,
        "7d" => DateRange::Days(7),
        "30d" => DateRange::Days(30),
        "month" => DateRange::Month,
        "6mo" => DateRange::MonthsThrough(6),
        "12mo" => DateRange::MonthsThrough(12),
        other => {
            return Err(PlausibleError::bad(format!(
                "Error parsing `period` parameter: invalid period `{other}`. Please find accepted values in our docs: {PERIODS_DOC}"
            )));
        }
    };
    Ok((range, date))
}

fn metrics(text: &str) -> Result<Vec<Metric>> {
    let mut metrics = Vec::new();
    for name in text.split(',').map(str::trim) {
        let metric = Metric::parse(name).filter(|m| *m != Metric::Percentage).ok_or_else(|| {
            PlausibleError::bad(format!("The metric `{name}` is not recognized. Find valid metrics from the documentation: {METRICS_DOC}"))
        })?;
        if metrics.contains(&metric) {
            return Err(PlausibleError::bad(
                "Metrics cannot be queried multiple times.",
            ));
        }
        metrics.push(metric);
    }
    Ok(metrics)
}

fn interval(text: Option<&str>, period: &str) -> Result<Granularity> {
    match text {
        None if period == "day" => Ok(Granularity::Hour),
        None if period == "6mo" || period == "12mo" => Ok(Granularity::Month),
        None | Some("day" | "date") => Ok(Granularity::Day),
        Some("hour") => Ok(Granularity::Hour),
        Some("week") => Ok(Granularity::Week),
        Some("month") => Ok(Granularity::Month),
        Some(other) => Err(PlausibleError::bad(format!(
            "Error parsing `interval` parameter: invalid interval `{other}`. Valid intervals are `hour`, `day`, `week`, `month`"
        ))),
    }
}

fn number(
    text: Option<&str>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    message: &str,
) -> Result<usize> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| PlausibleError::bad(message)),
    }
}

/// v1's filter string: `;` between conditions (all must hold), `==` or `!=`, `|` between
/// values (any may match; `\|` is a literal bar), `*` a wildcard (`**` too); or a v2 filter
/// list in JSON.
pub fn filters(text: &str) -> Result<Vec<Filter>> {
    if text.trim_start().starts_with('[') {
        let value: JsonValue = serde_json::from_str(text)
            .map_err(|error| PlausibleError::bad(format!("Invalid filters: {error}")))?;
        let mut request = Map::new();
        request.insert("filters".into(), value);
        return super::v2::filters_of(&request);
    }
    text.split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, negated, values) = if let Some((name, values)) = part.split_once("!=") {
                (name, true, values)
            } else if let Some((name, values)) = part.split_once("==") {
                (name, false, values)
            } else {
                return Err(PlausibleError::bad(format!("Invalid filter '{part}': expected property==value or property!=value")));
            };
            let name = name.trim();
            let dimension = match Dimension::parse(name, 0) {
                Some(Dimension::Time(_)) | None => {
                    return Err(PlausibleError::bad(format!("Invalid filter property '{name}'. Please provide a valid filter property: {PROPERTIES_DOC}")));
                }
                Some(dimension) => dimension,
            };
            let values = split_values(values.trim());
            let wildcard = values.iter().any(|value| value.contains('*'));
            let (operator, clauses) = if wildcard {
                let patterns = values.iter().map(|value| wildcard_regex(value)).collect();
                (if negated { Operator::MatchesNot } else { Operator::Matches }, patterns)
            } else {
                (if negated { Operator::IsNot } else { Operator::Is }, values)
            };
            Ok(Filter::Condition(Condition { operator, dimension, clauses, case_sensitive: true }))
        })
        .collect()
}

fn split_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                current.push('|');
            }
            '|' => values.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    values.push(current);
    values
}

fn check(query: &Query) -> Result<()> {
    super::v2::check_combination(query).map_err(|PlausibleError(status, message)| {
        PlausibleError(
            status,
            message
                .split_once(": ")
                .map_or(message.clone(), |(_, m)| m.to_owned()),
        )
    })
}

fn render(
    endpoint: Endpoint,
    params: &HashMap<String, String>,
    query: &Query,
    answer: &Answer,
) -> JsonValue {
    let metric_map = |values: &[Value]| -> Map<String, JsonValue> {
        query
            .metrics
            .iter()
            .zip(values)
            .map(|(metric, value)| (metric.name().to_owned(), value_json(*metric, *value)))
            .collect()
    };
    match endpoint {
        Endpoint::Realtime => answer
            .rows
            .first()
            .map_or(json!(0), |row| value_json(Metric::Visitors, row.metrics[0])),
        Endpoint::Aggregate => {
            let mut results = Map::new();
            if let Some(row) = answer.rows.first() {
                for (index, metric) in query.metrics.iter().enumerate() {
                    let mut entry = json!({"value": value_json(*metric, row.metrics[index])});
                    if let Some(compared) = &row.comparison {
                        entry["change"] =
                            super::changes_json(&query.metrics, &compared.change)[index].clone();
                        entry["comparison_value"] = value_json(*metric, compared.metrics[index]);
                    }
                    results.insert(metric.name().to_owned(), entry);
                }
            }
            json!({"results": results})
        }
        Endpoint::Timeseries => {
            // Every bucket, with zeros where nothing happened.
            let by_label: HashMap<&str, &Row> = answer
                .rows
                .iter()
                .map(|row| (row.dimensions[0].as_str(), row))
                .collect();
            let empty: Vec<Value> = query
                .metrics
                .iter()
                .map(|metric| empty_value(*metric))
                .collect();
            let results: Vec<JsonValue> = answer
                .time_labels
                .iter()
                .map(|label| {
                    let values = by_label
                        .get(label.as_str())
                        .map_or(&empty, |row| &row.metrics);
                    let mut entry = metric_map(values);
                    entry.insert("date".into(), json!(label));
                    JsonValue::Object(entry)
                })
                .collect();
            json!({"results": results})
        }
        Endpoint::Breakdown => {
            let key = params
                .get("property")
                .map_or("", |p| p.rsplit(':').next().unwrap_or(p))
                .to_owned();
            let results: Vec<JsonValue> = answer
                .rows
                .iter()
                .map(|row| {
                    let mut entry = metric_map(&row.metrics);
                    entry.insert(key.clone(), json!(row.dimensions[0]));
                    JsonValue::Object(entry)
                })
                .collect();
            json!({"results": results})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_filters_read_as_plausible_writes_them() {
        let parsed = filters("event:page==/blog/**;visit:utm_source!=a\\|b|c").unwrap();
        assert_eq!(
            parsed,
            vec![
                Filter::Condition(Condition {
                    operator: Operator::Matches,
                    dimension: Dimension::Page,
                    clauses: vec!["^/blog/.*$".into()],
                    case_sensitive: true,
                }),
                Filter::Condition(Condition {
                    operator: Operator::IsNot,
                    dimension: Dimension::Visit(VisitAttribute::UtmSource),
                    clauses: vec!["a|b".into(), "c".into()],
                    case_sensitive: true,
                }),
            ]
        );
        assert_eq!(wildcard_regex("/a.b/*/c"), "^/a\\.b/.*/c$");
        assert!(filters("event:page=/x").is_err());
        assert!(filters("event:nope==x").is_err());
        let json = filters(r#"[["contains", "event:page", ["blog"]]]"#).unwrap();
        assert!(matches!(&json[0], Filter::Condition(c) if c.operator == Operator::Contains));
    }

    #[test]
    fn v1_periods_are_relative_to_the_date() {
        let day = |text: &str| text.parse::<NaiveDate>().unwrap();
        let today = day("2026-12-03");
        let dates = |name: &str, date: Option<&str>| {
            let (range, on) = period(name, date, today).unwrap();
            let period = Period::resolve_on(&range, chrono_tz::Tz::UTC, on, 0, None).unwrap();
            (period.first, period.last)
        };
        assert_eq!(dates("7d", None), (day("2026-11-26"), day("2026-12-02")));
        assert_eq!(
            dates("month", Some("2026-02-10")),
            (day("2026-02-01"), day("2026-02-28"))
        );
        assert_eq!(dates("6mo", None), (day("2026-07-01"), day("2026-12-31")));
        assert_eq!(
            dates("12mo", Some("2026-03-15")),
            (day("2025-04-01"), day("2026-03-31"))
        );
        assert_eq!(
            dates("custom", Some("2026-01-01,2026-01-31")),
            (day("2026-01-01"), day("2026-01-31"))
        );
        assert!(period("custom", None, today).is_err());
        assert!(period("90d", None, today).is_err());
    }
}
