//! `POST /api/v2/query`: Plausible's Stats API v2 request, read into a [`Query`], and its
//! answer in Plausible's response shape (`results`, `meta`, `query`).
//!
//! Extensions, all optional: `timezone` (an IANA zone; default the tenant's), `include.bots`
//! (count events flagged `is_bot`), the metrics `persons` and `sessions`, the dimension
//! `time:minute`, and `meta.complete_until` (every event received before it is counted).
//! Comparisons are taken in both of Plausible's internal forms (`include.comparisons` and
//! `include.compare`), since its public schema has none.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat};
use serde_json::{Map, Value as JsonValue, json};
use std::sync::Arc;
use utoipa::ToSchema;

use super::{PlausibleError, authorize, value_json, zone};
use crate::AppState;
use crate::query::model::{
    CompareMode, Comparison, Condition, Dimension, Direction, Filter, Granularity, Metric,
    Operator, OrderKey, Query, Scope, UNSERVED_METRICS,
};
use crate::query::range::{DateRange, Period};
use crate::query::run::{Answer, default_order, run};

/// Largest `pagination.limit`, as Plausible's.
const MAX_LIMIT: usize = 10_000;
/// Longest `matches` pattern, bytes: RE2 runs in linear time, so a bounded pattern bounds
/// the work per row.
const MAX_PATTERN_BYTES: usize = 1_000;
/// Most clauses in one condition.
const MAX_CLAUSES: usize = 1_000;
/// Most dimensions in one query.
const MAX_DIMENSIONS: usize = 8;
/// Most conditions in one query's filters.
const MAX_CONDITIONS: usize = 100;

type Result<T> = std::result::Result<T, PlausibleError>;

fn bad<T>(pointer: &str, message: impl std::fmt::Display) -> Result<T> {
    Err(PlausibleError::bad(format!("#/{pointer}: {message}")))
}

/// The handler.
pub async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match answer(&state, &headers, &body).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<JsonValue> {
    let request: JsonValue = serde_json::from_slice(body)
        .map_err(|error| PlausibleError::bad(format!("#: the body is not JSON: {error}")))?;
    let JsonValue::Object(request) = request else {
        return bad("", "Type mismatch. Expected Object");
    };
    let site_id = request.get("site_id").and_then(JsonValue::as_str);
    let tenant = authorize(state, headers, site_id)?;
    execute(&state.clickhouse, &tenant, &request, state.clock.now_secs()).await
}

/// Answers a v2 `request` of `tenant` at `now` (Unix seconds): what `POST /api/v2/query`,
/// Ask and GraphQL all run, so that one question has one number whichever door it came in by.
///
/// # Errors
/// A 400 naming the field for a request the model cannot answer; ClickHouse failures as
/// [`ApiError`]s converted.
pub async fn execute(
    client: &clickhouse::Client,
    tenant: &schemas::tenants::Tenant,
    request: &Map<String, JsonValue>,
    now: i64,
) -> Result<JsonValue> {
    // "all" starts at the first raw event, or, for a tenant with a retention, where its raw
    // rows start (rows past it linger until deleted).
    let first_event = if request.get("date_range").and_then(JsonValue::as_str) == Some("all") {
        crate::queries::first_event(client, &tenant.id)
            .await?
            .map(|first| first.max(tenant.raw_from(now).unwrap_or(first)))
    } else {
        None
    };
    let query = parse(request, tenant, now, first_event)?;
    let answer = run(client, &query, now).await?;
    Ok(render(request, &query, &answer))
}

/// The body of `POST /api/v2/query`, as Plausible's Stats API v2 reference gives it (plus
/// ours: `timezone`, `include.bots`). [`parse`] reads it field by field so that each error
/// names its JSON pointer as Plausible's do; this type is what the OpenAPI document shows, and
/// its fields are the keys a request may have (any other is refused).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct QueryRequest {
    /// The tenant's id, or one of its configured `domains`; must be the read key's tenant.
    site_id: String,
    /// `visitors`, `visits`, `pageviews`, `views_per_visit`, `bounce_rate`,
    /// `visit_duration`, `events`, `percentage`, `conversion_rate`, and ours: `persons`,
    /// `sessions`.
    metrics: Vec<String>,
    /// A shortcut (`day`, `24h`, `7d`, `28d`, `30d`, `91d`, `month`, `6mo`, `12mo`, `year`,
    /// `all`) or two ISO dates or date-times (both inclusive). At most 366 days.
    #[schema(value_type = Value)]
    date_range: JsonValue,
    /// `event:page`, `event:name`, `event:goal`, `event:props:<key>`, `visit:<attribute>`,
    /// `time`, `time:hour|day|week|month`.
    dimensions: Option<Vec<String>>,
    /// `[operator, dimension, clauses, modifiers?]` conditions, combined with
    /// `["and"|"or", [...]]`, `["not", f]`, `["has_done"|"has_not_done", f]`.
    #[schema(value_type = Option<Vec<Value>>)]
    filters: Option<Vec<JsonValue>>,
    /// `[[metric or dimension, "asc"|"desc"], ...]`.
    #[schema(value_type = Option<Vec<Value>>)]
    order_by: Option<Vec<JsonValue>>,
    /// What else to return.
    include: Option<IncludeRequest>,
    /// `{"limit": 1-10000, "offset": n}`. Default: 10,000 rows from 0.
    pagination: Option<PaginationRequest>,
    /// IANA zone (ours; a Plausible site has one). Default: the tenant's.
    timezone: Option<String>,
}

/// `include` of a v2 request.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncludeRequest {
    /// Every bucket's label in `meta.time_labels`, including empty ones.
    time_labels: Option<bool>,
    /// The number of rows before pagination in `meta.total_rows`.
    total_rows: Option<bool>,
    /// Accepted; nothing is imported here, so it changes nothing.
    imports: Option<bool>,
    /// Ours: count events flagged `is_bot` at ingestion.
    bots: Option<bool>,
    /// `{"mode": "previous_period"|"year_over_year"|"custom", "date_range": [..],
    /// "match_day_of_week": bool}`: each row also has `comparison`.
    #[schema(value_type = Option<Object>)]
    comparisons: Option<JsonValue>,
    /// Plausible's dashboard form of `comparisons`: a mode or a date range.
    #[schema(value_type = Option<Value>)]
    compare: Option<JsonValue>,
    /// With `compare`: align the compared range on weekdays.
    compare_match_day_of_week: Option<bool>,
}

/// `pagination` of a v2 request.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PaginationRequest {
    /// Rows, 1 to 10,000.
    limit: Option<u32>,
    /// Rows skipped.
    offset: Option<u32>,
}

/// A row of a v2 answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ResultRow {
    /// The dimensions' labels, in the request's order.
    dimensions: Vec<String>,
    /// The metrics, in the request's order (numbers; null where undefined).
    #[schema(value_type = Vec<Value>)]
    metrics: Vec<JsonValue>,
    /// With a comparison: `{"dimensions", "metrics", "change"}` of the compared range.
    #[schema(value_type = Option<Object>)]
    comparison: Option<JsonValue>,
}

/// The answer of `POST /api/v2/query`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct QueryResponse {
    /// One row per combination of the dimensions' values (one row without dimensions).
    results: Vec<ResultRow>,
    /// `time_labels`, `total_rows`, `imports_included`, `complete_until_ms`, warnings.
    #[schema(value_type = Object)]
    meta: JsonValue,
    /// The request as it was understood (the range resolved to instants).
    #[schema(value_type = Object)]
    query: JsonValue,
}

/// Reads a v2 request for `tenant` at `now`.
pub fn parse(
    request: &Map<String, JsonValue>,
    tenant: &schemas::tenants::Tenant,
    now: i64,
    first_event: Option<i64>,
) -> Result<Query> {
    let known = crate::openapi::property_names::<QueryRequest>();
    if let Some(unknown) = request.keys().find(|key| !known.contains(key)) {
        return bad(unknown, "Unknown property");
    }
    let zone = zone(tenant, request.get("timezone").and_then(JsonValue::as_str))?;
    let range = date_range(request.get("date_range"))?;
    let period = Period::resolve(&range, zone, now, first_event)
        .or_else(|error| bad("date_range", error))?;
    let metrics = metrics(request.get("metrics"))?;
    let dimensions = dimensions(request.get("dimensions"), period.to - period.from)?;
    let filters = filters_of(request)?;
    if filters.iter().map(|f| f.conditions().len()).sum::<usize>() > MAX_CONDITIONS {
        return bad(
            "filters",
            format!("At most {MAX_CONDITIONS} conditions can be used at a time"),
        );
    }
    let include = include(request.get("include"))?;
    let (offset, limit) = pagination(request.get("pagination"))?;
    let mut query = Query {
        tenant: tenant.id.clone(),
        metrics,
        dimensions,
        filters,
        period,
        comparison: include.comparison.clone(),
        order_by: Vec::new(),
        offset,
        limit,
        include_bots: include.bots,
        goals: tenant.goals.clone(),
        raw_from: tenant.raw_from(now),
    };
    query.order_by = order_by(request.get("order_by"), &query)?;
    check(&query, &include)?;
    Ok(query)
}

/// The request's `filters`, an implicit `and` of filter trees.
pub fn filters_of(request: &Map<String, JsonValue>) -> Result<Vec<Filter>> {
    match request.get("filters") {
        None => Ok(Vec::new()),
        Some(JsonValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| filter(item, &format!("filters/{index}"), 0))
            .collect(),
        Some(_) => bad("filters", "Type mismatch. Expected Array"),
    }
}

fn strings<'a>(value: Option<&'a JsonValue>, pointer: &str) -> Result<Vec<&'a str>> {
    match value {
        None => Ok(Vec::new()),
        Some(JsonValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_str().map_or_else(
                    || {
                        bad(
                            &format!("{pointer}/{index}"),
                            "Type mismatch. Expected String",
                        )
                    },
                    Ok,
                )
            })
            .collect(),
        Some(_) => bad(pointer, "Type mismatch. Expected Array"),
    }
}

fn unique<T: PartialEq>(items: &[T], pointer: &str) -> Result<()> {
    for (index, item) in items.iter().enumerate() {
        if items[..index].contains(item) {
            return bad(pointer, "Expected items to be unique but they were not.");
        }
    }
    Ok(())
}

fn metrics(value: Option<&JsonValue>) -> Result<Vec<Metric>> {
    let names = strings(value, "metrics")?;
    if names.is_empty() {
        return bad("metrics", "Expected a minimum of 1 items but got 0.");
    }
    let metrics = names
        .iter()
        .enumerate()
        .map(|(index, name)| match Metric::parse(name) {
            Some(metric) => Ok(metric),
            None if UNSERVED_METRICS.contains(name) => bad(
                &format!("metrics/{index}"),
                format!("Metric \"{name}\" is not served by this gateway"),
            ),
            None => bad(
                &format!("metrics/{index}"),
                format!("Invalid metric \"{name}\""),
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    unique(&metrics, "metrics")?;
    Ok(metrics)
}

fn dimensions(value: Option<&JsonValue>, range_secs: i64) -> Result<Vec<Dimension>> {
    let dimensions = strings(value, "dimensions")?
        .iter()
        .enumerate()
        .map(|(index, name)| match Dimension::parse(name, range_secs) {
            Some(dimension) => Ok(dimension),
            None => bad(
                &format!("dimensions/{index}"),
                format!("Invalid dimension \"{name}\""),
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    unique(&dimensions, "dimensions")?;
    if dimensions.len() > MAX_DIMENSIONS {
        return bad(
            "dimensions",
            format!("At most {MAX_DIMENSIONS} dimensions can be queried at a time"),
        );
    }
    // A minute per row over days would be hundreds of thousands of rows.
    if dimensions.contains(&Dimension::Time(Granularity::Minute)) && range_secs > 48 * 3600 {
        return bad(
            "dimensions",
            "time:minute can be queried over at most 48 hours",
        );
    }
    if dimensions
        .iter()
        .filter(|d| matches!(d, Dimension::Time(_)))
        .count()
        > 1
    {
        return bad(
            "dimensions",
            "Only one time dimension can be queried at a time",
        );
    }
    Ok(dimensions)
}

/// A v2 `date_range` value (a shortcut, two dates, or two date-times).
///
/// # Errors
/// Plausible's message for anything else.
pub fn date_range(value: Option<&JsonValue>) -> Result<DateRange> {
    let invalid = |value: &JsonValue| bad("date_range", format!("Invalid date range {value}"));
    match value {
        None => bad(
            "date_range",
            "Required property date_range was not present.",
        ),
        Some(JsonValue::String(text)) => {
            DateRange::shortcut(text).map_or_else(|| invalid(&json!(text)), Ok)
        }
        Some(whole @ JsonValue::Array(items)) if items.len() == 2 => {
            let (Some(first), Some(last)) = (items[0].as_str(), items[1].as_str()) else {
                return invalid(whole);
            };
            if let (Ok(first), Ok(last)) = (first.parse::<NaiveDate>(), last.parse::<NaiveDate>()) {
                return Ok(DateRange::Dates(first, last));
            }
            match (
                DateTime::parse_from_rfc3339(first),
                DateTime::parse_from_rfc3339(last),
            ) {
                // Plausible's last instant is inclusive (23:59:59): the range ends a second later.
                (Ok(first), Ok(last)) => {
                    Ok(DateRange::Instants(first.timestamp(), last.timestamp() + 1))
                }
                _ => invalid(whole),
            }
        }
        Some(other) => invalid(other),
    }
}

/// Filters nest at most this deep.
const MAX_DEPTH: usize = 8;

fn filter(value: &JsonValue, pointer: &str, depth: usize) -> Result<Filter> {
    let invalid = || bad(pointer, format!("Invalid filter {value}"));
    let JsonValue::Array(items) = value else {
        return invalid();
    };
    if depth > MAX_DEPTH {
        return bad(
            pointer,
            format!("Invalid filters. Filters nest at most {MAX_DEPTH} deep."),
        );
    }
    let Some(op) = items.first().and_then(JsonValue::as_str) else {
        return invalid();
    };
    match (op, items.len()) {
        ("and" | "or", 2) => {
            let Some(JsonValue::Array(children)) = items.get(1) else {
                return invalid();
            };
            if children.is_empty() {
                return invalid();
            }
            let children = children
                .iter()
                .enumerate()
                .map(|(index, child)| filter(child, &format!("{pointer}/1/{index}"), depth + 1))
                .collect::<Result<Vec<_>>>()?;
            Ok(if op == "and" {
                Filter::And(children)
            } else {
                Filter::Or(children)
            })
        }
        ("not", 2) => Ok(Filter::Not(Box::new(filter(
            &items[1],
            &format!("{pointer}/1"),
            depth + 1,
        )?))),
        ("has_done" | "has_not_done", 2) => {
            let inner = filter(&items[1], &format!("{pointer}/1"), depth + 1)?;
            if !inner.is_event_only() {
                return bad(
                    pointer,
                    "Invalid filters. Behavioral filters (has_done, has_not_done) can only be used with event dimension filters.",
                );
            }
            Ok(Filter::HasDone(Box::new(inner), op == "has_done"))
        }
        (_, 3 | 4) => condition(items, pointer).map(Filter::Condition),
        _ => invalid(),
    }
}

fn condition(items: &[JsonValue], pointer: &str) -> Result<Condition> {
    let op = items[0].as_str().unwrap_or_default();
    let Some((operator, _)) = Operator::ALL.iter().find(|(_, name)| *name == op) else {
        return bad(
            pointer,
            format!("Invalid filter {}", JsonValue::Array(items.to_vec())),
        );
    };
    let name = items[1].as_str().unwrap_or_default();
    let dimension = match Dimension::parse(name, 0) {
        Some(Dimension::Time(_)) => {
            return bad(
                pointer,
                "Invalid filters. Time dimensions cannot be filtered on.",
            );
        }
        Some(dimension) => dimension,
        None => {
            return bad(
                &format!("{pointer}/1"),
                format!("Invalid filter dimension \"{name}\""),
            );
        }
    };
    let clauses = clauses(items.get(2), pointer)?;
    let case_sensitive = case_sensitive(items.get(3), pointer)?;
    if operator.positive().0 == Operator::Matches {
        if !case_sensitive {
            return bad(
                pointer,
                "Invalid filters. The case_sensitive modifier is not allowed with pattern operators",
            );
        }
        check_patterns(&clauses, pointer)?;
    }
    Ok(Condition {
        operator: *operator,
        dimension,
        clauses,
        case_sensitive,
    })
}

/// A condition's clauses: 1 to [`MAX_CLAUSES`] strings (numbers are read as their text, for
/// `visit:city` ids).
fn clauses(value: Option<&JsonValue>, pointer: &str) -> Result<Vec<String>> {
    let Some(JsonValue::Array(values)) = value else {
        return bad(&format!("{pointer}/2"), "Type mismatch. Expected Array");
    };
    if values.is_empty() || values.len() > MAX_CLAUSES {
        return bad(
            &format!("{pointer}/2"),
            format!("A filter has 1 to {MAX_CLAUSES} clauses"),
        );
    }
    values
        .iter()
        .enumerate()
        .map(|(index, clause)| match clause {
            JsonValue::String(text) => Ok(text.clone()),
            JsonValue::Number(number) => Ok(number.to_string()),
            _ => bad(
                &format!("{pointer}/2/{index}"),
                "Type mismatch. Expected String",
            ),
        })
        .collect()
}

/// The condition's modifiers: `{"case_sensitive": bool}` (default true).
fn case_sensitive(value: Option<&JsonValue>, pointer: &str) -> Result<bool> {
    let Some(value) = value else {
        return Ok(true);
    };
    let JsonValue::Object(modifiers) = value else {
        return bad(&format!("{pointer}/3"), "Type mismatch. Expected Object");
    };
    if let Some(unknown) = modifiers.keys().find(|key| *key != "case_sensitive") {
        return bad(
            &format!("{pointer}/3"),
            format!("Unknown modifier \"{unknown}\""),
        );
    }
    match modifiers.get("case_sensitive") {
        None => Ok(true),
        Some(JsonValue::Bool(flag)) => Ok(*flag),
        Some(_) => bad(&format!("{pointer}/3"), "case_sensitive must be a boolean"),
    }
}

/// Patterns are bounded and in the RE2 subset every ClickHouse reads.
fn check_patterns(patterns: &[String], pointer: &str) -> Result<()> {
    for (index, pattern) in patterns.iter().enumerate() {
        if pattern.len() > MAX_PATTERN_BYTES {
            return bad(
                &format!("{pointer}/2/{index}"),
                format!("A pattern is at most {MAX_PATTERN_BYTES} bytes"),
            );
        }
        if let Err(error) = re2_subset(pattern) {
            return bad(
                &format!("{pointer}/2/{index}"),
                format!("Invalid RE2 pattern: {error}"),
            );
        }
    }
    Ok(())
}

/// Checks a pattern against the part of RE2's syntax that every ClickHouse version reads the
/// same way, so that a pattern ClickHouse would refuse is a 400 here, never a 503 there:
/// Rust's `regex` syntax (RE2's, with extensions) without its extensions: flags other than
/// `i`, `m`, `s`, `U`; `(?<name>…)` groups; class set operations (`&&`, `--`, `~~`).
pub fn re2_subset(pattern: &str) -> std::result::Result<(), String> {
    for (index, _) in pattern.match_indices("(?") {
        let rest = &pattern[index + 2..];
        if rest.starts_with('<') || rest.starts_with("P=") {
            return Err("named groups are written (?P<name>...)".into());
        }
        if rest.starts_with('P') {
            continue;
        }
        let flags: String = rest
            .chars()
            .take_while(|c| *c != ')' && *c != ':')
            .collect();
        if flags.chars().any(|c| !"imsU-".contains(c)) {
            return Err(format!("flag group (?{flags}) is not RE2's (i, m, s, U)"));
        }
    }
    if pattern.contains('[') && ["&&", "--", "~~"].iter().any(|op| pattern.contains(op)) {
        return Err("class set operations (&&, --, ~~) are not RE2's".into());
    }
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// What `include` asks for.
#[derive(Debug, Default)]
struct Include {
    time_labels: bool,
    total_rows: bool,
    bots: bool,
    comparison: Option<Comparison>,
}

fn include(value: Option<&JsonValue>) -> Result<Include> {
    let mut include = Include::default();
    let Some(value) = value else {
        return Ok(include);
    };
    let JsonValue::Object(fields) = value else {
        return bad("include", "Type mismatch. Expected Object");
    };
    let flag = |name: &str| -> Result<bool> {
        match fields.get(name) {
            None => Ok(false),
            Some(JsonValue::Bool(flag)) => Ok(*flag),
            Some(_) => bad(
                &format!("include/{name}"),
                "Type mismatch. Expected Boolean",
            ),
        }
    };
    let known = crate::openapi::property_names::<IncludeRequest>();
    for key in fields.keys() {
        if !known.contains(key) {
            return bad(&format!("include/{key}"), "Unknown property");
        }
    }
    include.time_labels = flag("time_labels")?;
    include.total_rows = flag("total_rows")?;
    include.bots = flag("bots")?;
    // `imports` asks to add data imported from elsewhere; there is none, so it changes nothing.
    flag("imports")?;
    include.comparison = match (fields.get("comparisons"), fields.get("compare")) {
        (Some(JsonValue::Object(comparison)), None) => {
            let mode = comparison.get("mode").unwrap_or(&JsonValue::Null);
            let range = comparison.get("date_range");
            let match_day = comparison
                .get("match_day_of_week")
                .and_then(JsonValue::as_bool)
                .unwrap_or(false);
            Some(compare(mode, range, match_day, "include/comparisons")?)
        }
        (None, Some(compare_value)) => {
            let match_day = flag("compare_match_day_of_week")?;
            match compare_value {
                JsonValue::Array(_) => Some(compare(
                    &json!("custom"),
                    Some(compare_value),
                    match_day,
                    "include/compare",
                )?),
                mode => Some(compare(mode, None, match_day, "include/compare")?),
            }
        }
        (None, None) => None,
        _ => return bad("include", "Give one of comparisons (an object) or compare"),
    };
    Ok(include)
}

fn compare(
    mode: &JsonValue,
    range: Option<&JsonValue>,
    match_day_of_week: bool,
    pointer: &str,
) -> Result<Comparison> {
    let mode = match mode.as_str() {
        Some("previous_period") => CompareMode::PreviousPeriod,
        Some("year_over_year") => CompareMode::YearOverYear,
        Some("custom") => CompareMode::Custom,
        _ => {
            return bad(
                pointer,
                format!(
                    "Invalid comparison mode {mode}: previous_period, year_over_year or custom"
                ),
            );
        }
    };
    let range = match (mode, range) {
        (CompareMode::Custom, Some(JsonValue::Array(dates))) if dates.len() == 2 => {
            let date = |value: &JsonValue| {
                value
                    .as_str()
                    .and_then(|text| text.parse::<NaiveDate>().ok())
            };
            match (date(&dates[0]), date(&dates[1])) {
                (Some(first), Some(last)) => Some((first, last)),
                _ => return bad(pointer, "A custom comparison is two dates, YYYY-MM-DD"),
            }
        }
        (CompareMode::Custom, _) => {
            return bad(pointer, "A custom comparison needs date_range: two dates");
        }
        _ => None,
    };
    Ok(Comparison {
        mode,
        range,
        match_day_of_week,
    })
}

fn pagination(value: Option<&JsonValue>) -> Result<(usize, usize)> {
    let Some(value) = value else {
        return Ok((0, MAX_LIMIT));
    };
    let JsonValue::Object(fields) = value else {
        return bad("pagination", "Type mismatch. Expected Object");
    };
    let number =
        |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| -> Result<usize> {
            match fields.get(name) {
                None => Ok(default),
                Some(value) => value
                    .as_u64()
                    .map(|n| n as usize)
                    .filter(|n| range.contains(n))
                    .map_or_else(
                        || {
                            bad(
                                &format!("pagination/{name}"),
                                format!(
                                    "must be an integer from {} to {}",
                                    range.start(),
                                    range.end()
                                ),
                            )
                        },
                        Ok,
                    ),
            }
        };
    Ok((
        number("offset", 0, 0..=usize::MAX)?,
        number("limit", MAX_LIMIT, 1..=MAX_LIMIT)?,
    ))
}

fn order_by(value: Option<&JsonValue>, query: &Query) -> Result<Vec<(OrderKey, Direction)>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let JsonValue::Array(entries) = value else {
        return bad("order_by", "Type mismatch. Expected Array");
    };
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let pointer = format!("order_by/{index}");
            let invalid = || bad(&pointer, format!("Invalid value in order_by {entry}"));
            let Some([JsonValue::String(name), JsonValue::String(direction)]) =
                entry.as_array().map(Vec::as_slice)
            else {
                return invalid();
            };
            let direction = match direction.as_str() {
                "asc" => Direction::Asc,
                "desc" => Direction::Desc,
                _ => return invalid(),
            };
            let key = query
                .metrics
                .iter()
                .position(|metric| metric.name() == name)
                .map(OrderKey::Metric)
                .or_else(|| {
                    query
                        .dimensions
                        .iter()
                        .position(|dimension| dimension.name() == *name || (name == "time" && matches!(dimension, Dimension::Time(_))))
                        .map(OrderKey::Dimension)
                });
            match key {
                Some(key) => Ok((key, direction)),
                None => bad(
                    &pointer,
                    format!("Invalid order_by entry {entry}. Entry is not a queried metric or dimension."),
                ),
            }
        })
        .collect()
}

fn check(query: &Query, include: &Include) -> Result<()> {
    let has_time = query
        .dimensions
        .iter()
        .any(|d| matches!(d, Dimension::Time(_)));
    if include.time_labels && !has_time {
        return bad(
            "include/time_labels",
            "Invalid include.time_labels: requires a time dimension.",
        );
    }
    check_combination(query)
}

/// Plausible's rules on which metrics, dimensions and filters go together.
pub fn check_combination(query: &Query) -> Result<()> {
    let event_dimensions: Vec<String> = query
        .dimensions
        .iter()
        .filter(|d| d.scope() == Some(Scope::Event))
        .map(Dimension::name)
        .collect();
    let visit_metrics: Vec<&str> = query
        .metrics
        .iter()
        .filter(|m| m.scope() == Scope::Visit)
        .map(|m| m.name())
        .collect();
    // A visit metric reads `event:page` as the entry page; no other event dimension has a
    // single value per visit.
    if !visit_metrics.is_empty() && event_dimensions.iter().any(|d| d != "event:page") {
        return bad(
            "dimensions",
            format!(
                "Session metric(s) `{}` cannot be queried along with event dimension(s) `{}`",
                visit_metrics.join(", "),
                event_dimensions.join(", ")
            ),
        );
    }
    check_goals(query)?;
    if query.metrics.contains(&Metric::ViewsPerVisit) {
        let page_filter = query
            .filters
            .iter()
            .flat_map(Filter::conditions)
            .any(|c| c.dimension == Dimension::Page);
        if page_filter {
            return bad(
                "metrics",
                "Metric `views_per_visit` cannot be queried with a filter on `event:page`.",
            );
        }
        if query
            .dimensions
            .iter()
            .any(|d| !matches!(d, Dimension::Time(_)))
        {
            return bad(
                "metrics",
                "Metric `views_per_visit` cannot be queried with `dimensions`.",
            );
        }
    }
    Ok(())
}

/// Plausible's rules for goals: a goal filter only at the top level, with `is` or `contains`
/// (or their negations), naming configured goals; `conversion_rate` only with a goal filter
/// or dimension.
fn check_goals(query: &Query) -> Result<()> {
    let top_level = query
        .filters
        .iter()
        .filter(|filter| matches!(filter, Filter::Condition(c) if c.dimension == Dimension::Goal))
        .count();
    let goal_conditions: Vec<&Condition> = query
        .filters
        .iter()
        .flat_map(Filter::conditions)
        .filter(|condition| condition.dimension == Dimension::Goal)
        .collect();
    let uses_goals = !goal_conditions.is_empty() || query.dimensions.contains(&Dimension::Goal);
    if uses_goals && query.goals.is_empty() {
        return bad(
            "filters",
            "Invalid filters. No goals are configured for this site: add them to its tenant's goals.",
        );
    }
    if goal_conditions.len() > top_level {
        return bad(
            "filters",
            "Invalid filters. Dimension `event:goal` can only be filtered at the top level.",
        );
    }
    for condition in goal_conditions {
        if condition.operator.positive().0 == Operator::Matches {
            return bad(
                "filters",
                "Invalid filters. `event:goal` is filtered with is or contains.",
            );
        }
        if condition.operator.positive().0 == Operator::Is {
            let same = |a: &str, b: &str| {
                if condition.case_sensitive {
                    a == b
                } else {
                    a.to_lowercase() == b.to_lowercase()
                }
            };
            for clause in &condition.clauses {
                if !query.goals.iter().any(|goal| same(&goal.label(), clause)) {
                    return bad(
                        "filters",
                        format!(
                            "Invalid filters. The goal `{clause}` is not configured for this site. Find out how to configure goals here: https://plausible.io/docs/stats-api#filtering-by-goals"
                        ),
                    );
                }
            }
        }
    }
    if query.metrics.contains(&Metric::ConversionRate)
        && top_level == 0
        && !query.dimensions.contains(&Dimension::Goal)
    {
        return bad(
            "metrics",
            "Metric `conversion_rate` can only be queried with event:goal filters or dimensions.",
        );
    }
    Ok(())
}

fn instant(period: &Period, secs: i64) -> String {
    use chrono::TimeZone;
    period
        .zone
        .timestamp_opt(secs, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
        .unwrap_or_default()
}

/// The response: `results`, `meta`, and the query as understood.
pub fn render(request: &Map<String, JsonValue>, query: &Query, answer: &Answer) -> JsonValue {
    let metrics = |values: &[crate::query::run::Value]| -> Vec<JsonValue> {
        query
            .metrics
            .iter()
            .zip(values)
            .map(|(metric, value)| value_json(*metric, *value))
            .collect()
    };
    let results: Vec<JsonValue> = answer
        .rows
        .iter()
        .map(|row| {
            let mut result =
                json!({"dimensions": row.dimensions, "metrics": metrics(&row.metrics)});
            if let Some(compared) = &row.comparison {
                result["comparison"] = json!({
                    "dimensions": compared.dimensions,
                    "metrics": metrics(&compared.metrics),
                    "change": super::changes_json(&query.metrics, &compared.change),
                });
            }
            result
        })
        .collect();
    json!({
        "results": results,
        "meta": meta(request, query, answer),
        "query": echo(request, query),
    })
}

/// `meta`: what `include` asked for, and ours (`complete_until`, warnings, the comparison's
/// range).
fn meta(
    request: &Map<String, JsonValue>,
    query: &Query,
    answer: &Answer,
) -> Map<String, JsonValue> {
    let mut meta = Map::new();
    let include = request.get("include").and_then(JsonValue::as_object);
    let wants = |name: &str| {
        include
            .and_then(|i| i.get(name))
            .and_then(JsonValue::as_bool)
            == Some(true)
    };
    if wants("time_labels") {
        meta.insert("time_labels".into(), json!(answer.time_labels));
    }
    if wants("total_rows") {
        meta.insert("total_rows".into(), json!(answer.total_rows));
    }
    if wants("imports") {
        meta.insert("imports_included".into(), json!(false));
    }
    meta.insert(
        "complete_until".into(),
        json!(
            answer
                .complete_until_ms
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        ),
    );
    if query.period.clamped {
        meta.insert(
            "warnings".into(),
            json!([format!("date_range \"all\" was cut to the last {} days (the longest range one query reads)", crate::query::range::MAX_DAYS)]),
        );
    }
    if let Some(period) = &answer.comparison_period {
        meta.insert(
            "comparison_date_range".into(),
            json!([instant(period, period.from), instant(period, period.to - 1)]),
        );
    }
    meta
}

/// `query`: the request as understood (the resolved range, the order filled in, `include`'s
/// set flags).
fn echo(request: &Map<String, JsonValue>, query: &Query) -> JsonValue {
    let order_by: Vec<JsonValue> = (if query.order_by.is_empty() {
        default_order(query)
    } else {
        query.order_by.clone()
    })
    .iter()
    .map(|(key, direction)| {
        let name = match key {
            OrderKey::Metric(index) => query.metrics[*index].name().to_owned(),
            OrderKey::Dimension(index) => query.dimensions[*index].name(),
        };
        let direction = if *direction == Direction::Asc {
            "asc"
        } else {
            "desc"
        };
        json!([name, direction])
    })
    .collect();
    let mut echoed_include = Map::new();
    if let Some(include) = request.get("include").and_then(JsonValue::as_object) {
        for (key, value) in include {
            if !matches!(value, JsonValue::Bool(false) | JsonValue::Null) {
                echoed_include.insert(key.clone(), value.clone());
            }
        }
    }
    json!({
        "site_id": request.get("site_id"),
        "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "date_range": [instant(&query.period, query.period.from), instant(&query.period, query.period.to - 1)],
        "filters": request.get("filters").cloned().unwrap_or(json!([])),
        "dimensions": query.dimensions.iter().map(Dimension::name).collect::<Vec<_>>(),
        "order_by": order_by,
        "include": echoed_include,
        "pagination": {"offset": query.offset, "limit": query.limit},
        "timezone": query.period.zone.name(),
    })
}
