//! Runs a compiled query and turns its raw aggregates into metrics: the one place where a
//! ratio (bounce rate, duration, views per visit, percentage) or a change is computed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Timelike};
use clickhouse::Client;
use serde::Deserialize;

use super::compile::{Aggregate, Compiled, compile, display_empty};
use super::model::{Dimension, Direction, Filter, Granularity, Metric, OrderKey, Query};
use super::range::{Period, RangeError};
use crate::error::ApiError;

/// A metric's value: a count, or a ratio that is undefined (`None`) over nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Visitors, visits, page views, events, persons.
    Count(u64),
    /// Bounce rate (%), visit duration (s), views per visit, percentage (%).
    Ratio(Option<f64>),
}

impl Value {
    /// As a number for ordering and changes; undefined is `None`.
    pub fn number(self) -> Option<f64> {
        match self {
            Value::Count(count) => Some(count as f64),
            Value::Ratio(ratio) => ratio,
        }
    }
}

/// A row of the comparison period matched to a row of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// The comparison row's dimensions (its time bucket is the matching bucket of the other
    /// period).
    pub dimensions: Vec<String>,
    /// Its metrics.
    pub metrics: Vec<Value>,
    /// Per metric, the change from it to the answer's row ([`change`]).
    pub change: Vec<Option<f64>>,
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The dimensions' labels, in the query's order.
    pub dimensions: Vec<String>,
    /// The dimensions' values as stored (time buckets: Unix seconds of an hour or minute,
    /// the local date of a day, week or month), for callers that need more than a label.
    pub keys: Vec<String>,
    /// The metrics, in the query's order.
    pub metrics: Vec<Value>,
    /// The same group in the comparison period.
    pub comparison: Option<Compared>,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The page of rows asked for.
    pub rows: Vec<Row>,
    /// The metrics over every row (from the same statements as the rows).
    pub totals: Vec<Value>,
    /// Rows before pagination.
    pub total_rows: usize,
    /// Every time bucket's label of the period, when a dimension is time.
    pub time_labels: Vec<String>,
    /// "Complete up to", Unix ms, read before the statements ran.
    pub complete_until_ms: Option<i64>,
    /// The comparison's period.
    pub comparison_period: Option<Period>,
}

/// A metric's value as it is reported (Plausible's rounding, in its SQL:
/// `lib/plausible/stats/sql/expression.ex`): bounce rate and visit duration to integers,
/// views per visit and conversion rate to 2 decimals, percentage to 1; a rate over no visits
/// is 0 (Plausible's `ifNotFinite(…, 0)`), a percentage of nothing undefined (`None`).
pub fn reported(metric: Metric, value: Value) -> Option<f64> {
    let round = |number: f64, decimals: i32| {
        let scale = 10f64.powi(decimals);
        (number * scale).round() / scale
    };
    match (metric, value) {
        (_, Value::Count(count)) => Some(count as f64),
        (Metric::Percentage, Value::Ratio(ratio)) => ratio.map(|r| round(r, 1)),
        (Metric::ViewsPerVisit | Metric::ConversionRate, Value::Ratio(ratio)) => {
            Some(round(ratio.unwrap_or(0.0), 2))
        }
        (_, Value::Ratio(ratio)) => Some(ratio.unwrap_or(0.0).round()),
    }
}

/// The change from `before` to `now` as Plausible reports it (`lib/plausible/stats/compare.ex`),
/// computed from the values as reported ([`reported`]), as Plausible computes it from its
/// rounded SQL results: for the bounce rate the difference in points (none from a rate of 0),
/// for the conversion rate the difference in points to one decimal, for everything else the
/// percent change rounded to an integer, 100 from nothing to something, 0 from nothing to
/// nothing; none from an undefined value.
pub fn change(metric: Metric, before: Value, now: Value) -> Option<f64> {
    let (before, now) = (reported(metric, before)?, reported(metric, now)?);
    match metric {
        Metric::BounceRate => (before > 0.0).then_some(now - before),
        Metric::ConversionRate => Some(((now - before) * 10.0).round() / 10.0),
        _ if before == 0.0 => Some(if now > 0.0 { 100.0 } else { 0.0 }),
        _ => Some(((now - before) / before * 100.0).round()),
    }
}

/// A metric over no rows: 0 for a count, undefined for a ratio.
pub fn empty_value(metric: Metric) -> Value {
    metric_value(metric, &Sums::new(), &Groups::default())
}

/// The raw aggregates of one group.
type Sums = BTreeMap<Aggregate, u64>;

/// A metric from its group's aggregates and, for `percentage` and `conversion_rate`, its
/// period's totals.
fn metric_value(metric: Metric, sums: &Sums, of: &Groups) -> Value {
    let totals = &of.totals;
    let get = |aggregate: Aggregate, of: &Sums| of.get(&aggregate).copied().unwrap_or(0);
    let per_visit = |numerator: f64| {
        let visits = get(Aggregate::Visits, sums);
        Value::Ratio((visits > 0).then(|| numerator / visits as f64))
    };
    match metric {
        Metric::Visitors => Value::Count(get(Aggregate::Visitors, sums)),
        Metric::Persons => Value::Count(get(Aggregate::Persons, sums)),
        Metric::Pageviews => Value::Count(get(Aggregate::Pageviews, sums)),
        Metric::Events => Value::Count(get(Aggregate::Events, sums)),
        Metric::Visits | Metric::Sessions => Value::Count(get(Aggregate::Visits, sums)),
        Metric::BounceRate => per_visit(get(Aggregate::Bounces, sums) as f64 * 100.0),
        Metric::VisitDuration => per_visit(get(Aggregate::DurationMs, sums) as f64 / 1000.0),
        Metric::ViewsPerVisit => per_visit(get(Aggregate::VisitPageviews, sums) as f64),
        Metric::Percentage => {
            let all = of
                .percentage_base
                .unwrap_or_else(|| get(Aggregate::Visitors, totals));
            Value::Ratio(
                (all > 0).then(|| get(Aggregate::Visitors, sums) as f64 * 100.0 / all as f64),
            )
        }
        Metric::ConversionRate => {
            let base = of.conversion_base;
            Value::Ratio(Some(if base > 0 {
                get(Aggregate::Visitors, sums) as f64 * 100.0 / base as f64
            } else {
                0.0
            }))
        }
    }
}

/// The groups of one period: per dimension values (raw), their aggregates; and the totals.
#[derive(Debug, Default)]
struct Groups {
    by_key: HashMap<Vec<String>, Sums>,
    totals: Sums,
    /// Visitors of the query without its goal and property filters and dimensions: what
    /// `conversion_rate` divides by.
    conversion_base: u64,
    /// With a goal dimension, the totals count only converting visitors: `percentage`
    /// divides by the visitors of the query without dimensions instead.
    percentage_base: Option<u64>,
}

/// ClickHouse's `JSONCompact` output, as far as it is read.
#[derive(Debug, Deserialize)]
struct JsonCompact {
    data: Vec<Vec<serde_json::Value>>,
    #[serde(default)]
    totals: Option<Vec<serde_json::Value>>,
}

fn as_u64(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_i64().map(|n| n.max(0) as u64))
            .unwrap_or(0),
        serde_json::Value::String(text) => text.parse().unwrap_or(0),
        _ => 0,
    }
}

fn as_string(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Runs `statement` and reads ClickHouse's `JSONCompact` answer into `T` (64-bit integers as
/// numbers).
pub(crate) async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    statement: &super::compile::Statement,
) -> Result<T, ApiError> {
    let bytes = statement
        .binds
        .iter()
        .fold(client.query(&statement.sql), |query, value| {
            query.bind(value.as_str())
        })
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONCompact")?
        .collect()
        .await?;
    serde_json::from_slice(&bytes).map_err(|error| {
        tracing::error!(%error, "ClickHouse answered a query with unreadable JSON");
        ApiError::Unavailable
    })
}

async fn fetch(
    client: &Client,
    compiled: &Compiled,
    dimensions: usize,
) -> Result<Groups, ApiError> {
    let output: JsonCompact = fetch_json(client, &compiled.statement).await?;
    let sums = |values: &[serde_json::Value]| -> Sums {
        compiled
            .aggregates
            .iter()
            .zip(values.iter().skip(dimensions))
            .map(|(aggregate, value)| (*aggregate, as_u64(value)))
            .collect()
    };
    let mut groups = Groups::default();
    for row in &output.data {
        let key: Vec<String> = row.iter().take(dimensions).map(as_string).collect();
        groups.by_key.insert(key, sums(row));
    }
    groups.totals = match (&output.totals, dimensions) {
        (Some(totals), _) => sums(totals),
        (None, 0) => groups.by_key.remove(&Vec::new()).unwrap_or_default(),
        (None, _) => Sums::new(),
    };
    if dimensions == 0 {
        groups.by_key.insert(Vec::new(), groups.totals.clone());
    }
    Ok(groups)
}

/// Every statement of `query` over `period`, their groups merged.
async fn groups(client: &Client, query: &Query, period: &Period) -> Result<Groups, ApiError> {
    let statements = compile(query, period);
    let dimensions = query.dimensions.len();
    let fetched =
        futures_util::future::try_join_all(statements.iter().map(|s| fetch(client, s, dimensions)))
            .await?;
    let mut merged = Groups::default();
    if query.metrics.contains(&Metric::ConversionRate) {
        merged.conversion_base = visitors_without_dimensions(client, query, period, true).await?;
    }
    if query.metrics.contains(&Metric::Percentage) && query.dimensions.contains(&Dimension::Goal) {
        merged.percentage_base =
            Some(visitors_without_dimensions(client, query, period, false).await?);
    }
    for groups in fetched {
        merged.totals.extend(groups.totals);
        for (key, sums) in groups.by_key {
            merged.by_key.entry(key).or_default().extend(sums);
        }
    }
    Ok(merged)
}

/// The visitors of the same query over all dimensions; `conversion` leaves out its top-level
/// goal and property filters too (Plausible's denominator of `conversion_rate`).
async fn visitors_without_dimensions(
    client: &Client,
    query: &Query,
    period: &Period,
    conversion: bool,
) -> Result<u64, ApiError> {
    let base = Query {
        metrics: vec![Metric::Visitors],
        dimensions: Vec::new(),
        filters: query
            .filters
            .iter()
            .filter(|filter| {
                !conversion
                    || !matches!(filter, Filter::Condition(condition)
                    if matches!(condition.dimension, Dimension::Goal | Dimension::Property(_)))
            })
            .cloned()
            .collect(),
        comparison: None,
        ..query.clone()
    };
    let Some(statement) = compile(&base, period).into_iter().next() else {
        return Ok(0);
    };
    let groups = fetch(client, &statement, 0).await?;
    Ok(groups
        .totals
        .get(&Aggregate::Visitors)
        .copied()
        .unwrap_or(0))
}

fn range_error(error: RangeError) -> ApiError {
    ApiError::BadParameter {
        parameter: "date_range".into(),
        message: error.to_string(),
    }
}

/// `query` with its tenant's raw rows starting where retention has left them: the later of
/// this process's reading of `retention_days` and the engine's latest mark (a retention
/// raised since deleted rows the new one would keep; one lowered since this process read the
/// tenants file deleted more).
pub async fn with_raw_start(client: &Client, query: &Query) -> Result<Query, ApiError> {
    let mark = crate::queries::retention_mark(client, &query.tenant).await?;
    let mut query = query.clone();
    query.raw_from = query.raw_from.max(mark);
    Ok(query)
}

/// A 400 when a period of the query reaches before its tenant's raw rows and the rollups
/// cannot answer it ([`Query::rollup_refusal`]).
fn check_rollups(query: &Query, comparison_period: Option<&Period>) -> Result<(), ApiError> {
    let reads_rollups = query.reads_rollups(&query.period)
        || comparison_period.is_some_and(|period| query.reads_rollups(period));
    match reads_rollups.then(|| query.rollup_refusal()).flatten() {
        Some(message) => Err(ApiError::BadParameter {
            parameter: "date_range".into(),
            message,
        }),
        None => Ok(()),
    }
}

/// Runs `query` at `now` (Unix seconds): its statements, and its comparison's, side by side.
pub async fn run(client: &Client, query: &Query, now: i64) -> Result<Answer, ApiError> {
    let query = &with_raw_start(client, query).await?;
    let complete_until_ms = crate::queries::progress(client, &query.tenant).await?;
    let comparison_period = match &query.comparison {
        Some(comparison) => Some(
            query
                .period
                .compared(comparison, now)
                .map_err(range_error)?,
        ),
        None => None,
    };
    check_rollups(query, comparison_period.as_ref())?;
    let (main, compared) = tokio::try_join!(groups(client, query, &query.period), async {
        match &comparison_period {
            Some(period) => groups(client, query, period).await.map(Some),
            None => Ok(None),
        }
    })?;
    let time = query
        .dimensions
        .iter()
        .enumerate()
        .find_map(|(index, d)| match d {
            Dimension::Time(granularity) => Some((index, *granularity)),
            _ => None,
        });
    let time_keys = time.map_or_else(Vec::new, |(_, g)| bucket_keys(g, &query.period));
    // Bucket i of the period is compared with bucket i of the comparison's.
    let to_compared: HashMap<String, String> = match (time, &comparison_period) {
        (Some((_, granularity)), Some(period)) => time_keys
            .iter()
            .cloned()
            .zip(bucket_keys(granularity, period))
            .collect(),
        _ => HashMap::new(),
    };
    let mut keys: Vec<Vec<String>> = main.by_key.keys().cloned().collect();
    // Compared over time, every bucket has a row, so that each has its comparison.
    if compared.is_some() && time.is_some() && query.dimensions.len() == 1 {
        for key in &time_keys {
            if !main.by_key.contains_key(std::slice::from_ref(key)) {
                keys.push(vec![key.clone()]);
            }
        }
    }
    let mut rows: Vec<(Vec<String>, Vec<Value>)> = keys
        .into_iter()
        .map(|key| {
            let values = metric_values(query, &key, &main);
            (key, values)
        })
        .collect();
    sort(query, &mut rows);
    let total_rows = rows.len();
    let compared_period = comparison_period.as_ref().unwrap_or(&query.period);
    let rows = rows
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .map(|(key, metrics)| {
            let comparison = compared.as_ref().map(|other| {
                let mut other_key = key.clone();
                if let Some((index, _)) = time {
                    other_key[index] = to_compared.get(&key[index]).cloned().unwrap_or_default();
                }
                compare(query, compared_period, &other_key, other, &metrics)
            });
            Row {
                dimensions: labels(query, &query.period, &key),
                keys: key,
                metrics,
                comparison,
            }
        })
        .collect();
    let totals = query
        .metrics
        .iter()
        .map(|metric| metric_value(*metric, &main.totals, &main))
        .collect();
    let time_labels = match time {
        Some((index, _)) => time_keys
            .iter()
            .map(|key| label(&query.dimensions[index], &query.period, key))
            .collect(),
        None => Vec::new(),
    };
    Ok(Answer {
        rows,
        totals,
        total_rows,
        time_labels,
        complete_until_ms,
        comparison_period,
    })
}

/// The query's metrics for the group `key` of `groups`.
fn metric_values(query: &Query, key: &[String], groups: &Groups) -> Vec<Value> {
    let empty = Sums::new();
    let sums = groups.by_key.get(key).unwrap_or(&empty);
    query
        .metrics
        .iter()
        .map(|metric| metric_value(*metric, sums, groups))
        .collect()
}

/// The comparison period's group `key`, and the change from it to `now`.
fn compare(
    query: &Query,
    period: &Period,
    key: &[String],
    groups: &Groups,
    now: &[Value],
) -> Compared {
    let before = metric_values(query, key, groups);
    let change = query
        .metrics
        .iter()
        .zip(before.iter().zip(now))
        .map(|(metric, (before, now))| change(*metric, *before, *now))
        .collect();
    Compared {
        dimensions: labels(query, period, key),
        metrics: before,
        change,
    }
}

/// Orders rows by the query's keys, then by their dimensions ascending (raw values: time
/// buckets sort by instant even where local labels repeat).
fn sort(query: &Query, rows: &mut [(Vec<String>, Vec<Value>)]) {
    let order = if query.order_by.is_empty() {
        default_order(query)
    } else {
        query.order_by.clone()
    };
    rows.sort_by(|(a_key, a), (b_key, b)| {
        for (key, direction) in &order {
            let ordering = match key {
                OrderKey::Metric(index) => compare_numbers(a[*index].number(), b[*index].number()),
                OrderKey::Dimension(index) => a_key[*index].cmp(&b_key[*index]),
            };
            let ordering = match direction {
                Direction::Asc => ordering,
                Direction::Desc => ordering.reverse(),
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a_key.cmp(b_key)
    });
}

/// Plausible's default: time ascending, then the first metric descending.
pub fn default_order(query: &Query) -> Vec<(OrderKey, Direction)> {
    let mut order = Vec::new();
    if let Some(index) = query
        .dimensions
        .iter()
        .position(|dimension| matches!(dimension, Dimension::Time(_)))
    {
        order.push((OrderKey::Dimension(index), Direction::Asc));
    }
    order.push((OrderKey::Metric(0), Direction::Desc));
    order
}

fn compare_numbers(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

fn labels(query: &Query, period: &Period, key: &[String]) -> Vec<String> {
    query
        .dimensions
        .iter()
        .zip(key)
        .map(|(dimension, raw)| label(dimension, period, raw))
        .collect()
}

/// A dimension's raw value as the answer shows it: hours as local `YYYY-MM-DD HH:MM:SS`, the
/// first week from the period's first day, empty values by Plausible's names.
pub fn label(dimension: &Dimension, period: &Period, raw: &str) -> String {
    match dimension {
        Dimension::Time(Granularity::Minute | Granularity::Hour) => raw
            .parse::<i64>()
            .ok()
            .and_then(|secs| period.zone.timestamp_opt(secs, 0).single())
            .map_or_else(
                || raw.to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            ),
        Dimension::Time(Granularity::Week) => match raw.parse::<NaiveDate>() {
            Ok(monday) if monday < period.first => period.first.to_string(),
            _ => raw.to_owned(),
        },
        _ if raw.is_empty() => display_empty(dimension).to_owned(),
        _ => raw.to_owned(),
    }
}

/// Every bucket of `period`, as the statements' raw values: Unix seconds of each local hour
/// or minute, or the local date that starts each day, week or month.
pub fn bucket_keys(granularity: Granularity, period: &Period) -> Vec<String> {
    let zone = period.zone;
    match granularity {
        Granularity::Minute => (period.from.div_euclid(60)..=(period.to - 1).div_euclid(60))
            .map(|minute| (minute * 60).to_string())
            .collect(),
        Granularity::Hour => {
            // Local hours start at :30 or :45 UTC in some zones: each instant's local hour
            // starts its local minutes and seconds earlier.
            let mut keys: Vec<String> = Vec::new();
            let mut t = period.from;
            while t < period.to {
                if let Some(local) = zone.timestamp_opt(t, 0).single() {
                    let start = t - i64::from(local.minute()) * 60 - i64::from(local.second());
                    let key = start.to_string();
                    if keys.last() != Some(&key) {
                        keys.push(key);
                    }
                }
                t += 900;
            }
            keys
        }
        Granularity::Day => dates(period.first, period.last, |d| Some(d + Duration::days(1))),
        Granularity::Week => {
            let monday = period.first
                - Duration::days(i64::from(period.first.weekday().num_days_from_monday()));
            dates(monday, period.last, |d| Some(d + Duration::days(7)))
        }
        Granularity::Month => {
            let first = period.first.with_day(1).unwrap_or(period.first);
            dates(first, period.last, |d| {
                d.checked_add_months(chrono::Months::new(1))
            })
        }
    }
}

fn dates(
    first: NaiveDate,
    last: NaiveDate,
    next: impl Fn(NaiveDate) -> Option<NaiveDate>,
) -> Vec<String> {
    std::iter::successors(Some(first), |d| next(*d).filter(|n| *n <= last))
        .map(|d| d.to_string())
        .collect()
}
