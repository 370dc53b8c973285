//! The typed query Ask answers with: what the offline translator (and a model, when it can
//! express the question) produce instead of SQL. Each kind runs through the same code as the
//! dashboard's door for it, so a question asked in words and the same question asked through
//! the API get the same number by construction:
//!
//! - `query`: a Stats API v2 body (without `site_id`) through [`crate::plausible::v2::execute`];
//! - `funnel`: `/api/funnel`'s model ([`crate::rest::funnel`]);
//! - `retention`: `/api/retention`'s cohorts ([`crate::rest::retention`]);
//! - `person`: one person's sessions, as `/api/persons/{id}/sessions` lists them.
//!
//! The JSON form is externally tagged: `{"query": {...}}`, `{"funnel": {...}}`, …

use clickhouse::Client;
use schemas::tenants::Tenant;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::params::Params;
use crate::plausible::PlausibleError;
use crate::query::range::Period;

/// One question as the query model's doors take it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TypedQuery {
    /// A Stats API v2 body without `site_id` (the tenant is the caller's).
    #[schema(value_type = Object)]
    Query(Map<String, Value>),
    /// Persons through ordered steps.
    Funnel(FunnelSpec),
    /// Weekly cohorts.
    Retention(RetentionSpec),
    /// One person's sessions.
    Person(PersonSpec),
}

/// A funnel: `steps` as `/api/funnel` names them (`page:/pricing`, `event:Signed Up`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunnelSpec {
    /// 2 to 8 steps.
    pub steps: Vec<String>,
    /// Seconds from the first step to the last; default 86,400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// A v2 date range.
    #[schema(value_type = Object)]
    pub date_range: Value,
    /// Exclusion steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Retention cohorts over a v2 date range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// A v2 date range.
    #[schema(value_type = Object)]
    pub date_range: Value,
}

/// One person, by any of their ids (`userId` or `anonymousId`, exact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonSpec {
    /// A `userId` or `anonymousId`.
    pub id: String,
    /// A v2 date range.
    #[schema(value_type = Object)]
    pub date_range: Value,
}

/// What a typed query returned, as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<Value>>,
    /// The period, resolved: first and last local date.
    pub period: Option<Period>,
    /// Everything received before this instant (Unix ms) is counted.
    pub complete_until_ms: Option<i64>,
}

/// Why a typed query gave no table.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The model refuses the query (a 400 of its door), in words safe to show.
    #[error("{0}")]
    Invalid(String),
    /// The person asked about has no events.
    #[error("no person has the id \"{0}\"")]
    UnknownPerson(String),
    /// ClickHouse failed or is unreachable.
    #[error("the analytics store is unavailable")]
    Unavailable,
}

impl From<ApiError> for ExecuteError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::BadParameter { .. } => ExecuteError::Invalid(error.to_string()),
            _ => ExecuteError::Unavailable,
        }
    }
}

impl From<PlausibleError> for ExecuteError {
    fn from(error: PlausibleError) -> Self {
        if error.0.is_client_error() {
            ExecuteError::Invalid(error.1)
        } else {
            ExecuteError::Unavailable
        }
    }
}

/// Runs `query` for `tenant` at `now` (Unix seconds) through its door.
///
/// # Errors
/// [`ExecuteError`].
pub async fn execute(
    client: &Client,
    tenant: &Tenant,
    query: &TypedQuery,
    now: i64,
) -> Result<Executed, ExecuteError> {
    match query {
        TypedQuery::Query(body) => stats(client, tenant, body, now).await,
        TypedQuery::Funnel(spec) => funnel(client, tenant, spec, now).await,
        TypedQuery::Retention(spec) => retention(client, tenant, spec, now).await,
        TypedQuery::Person(spec) => person(client, tenant, spec, now).await,
    }
}

/// A v2 answer as a table: dimensions, then metrics, then (with a comparison) the previous
/// period's metrics and the changes.
async fn stats(
    client: &Client,
    tenant: &Tenant,
    body: &Map<String, Value>,
    now: i64,
) -> Result<Executed, ExecuteError> {
    let mut request = body.clone();
    request.insert("site_id".into(), json!(tenant.id));
    let response = crate::plausible::v2::execute(client, tenant, &request, now).await?;
    let dimensions = crate::json_strings(&response["query"]["dimensions"]);
    let metrics = crate::json_strings(&response["query"]["metrics"]);
    let results = response["results"].as_array().cloned().unwrap_or_default();
    let compared = results.iter().any(|row| row.get("comparison").is_some());
    let mut columns: Vec<String> = dimensions.iter().chain(&metrics).cloned().collect();
    if compared {
        columns.extend(metrics.iter().map(|m| format!("{m} (previous period)")));
        columns.extend(metrics.iter().map(|m| format!("{m} change %")));
    }
    let rows = results
        .iter()
        .map(|row| {
            let mut cells: Vec<Value> = Vec::new();
            for key in ["dimensions", "metrics"] {
                cells.extend(row[key].as_array().cloned().unwrap_or_default());
            }
            if compared {
                for key in ["metrics", "change"] {
                    let values = row["comparison"][key].as_array().cloned();
                    cells.extend(values.unwrap_or_else(|| vec![Value::Null; metrics.len()]));
                }
            }
            cells
        })
        .collect();
    let period = resolve(tenant, body.get("date_range"), now).ok();
    Ok(Executed {
        columns,
        rows,
        period,
        complete_until_ms: response["meta"]["complete_until"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis()),
    })
}

/// The tenant's period of a v2 `date_range` at `now`.
fn resolve(tenant: &Tenant, date_range: Option<&Value>, now: i64) -> Result<Period, ExecuteError> {
    let zone = crate::plausible::zone(tenant, None)?;
    let range = crate::plausible::v2::date_range(date_range)?;
    Period::resolve(&range, zone, now, None)
        .map_err(|error| ExecuteError::Invalid(error.to_string()))
}

/// The query string `/api/{funnel,retention}` would get for `period`, plus `extra`.
fn params_of(period: &Period, extra: Vec<(String, String)>, now: i64) -> Params {
    let mut pairs = vec![
        ("from".to_owned(), period.from.to_string()),
        ("to".to_owned(), period.to.to_string()),
    ];
    pairs.extend(extra);
    Params::new(pairs, now)
}

async fn funnel(
    client: &Client,
    tenant: &Tenant,
    spec: &FunnelSpec,
    now: i64,
) -> Result<Executed, ExecuteError> {
    if spec
        .steps
        .iter()
        .chain(&spec.exclude)
        .any(|s| s.contains(','))
    {
        return Err(ExecuteError::Invalid(
            "a funnel step's name contains a comma".into(),
        ));
    }
    let period = resolve(tenant, Some(&spec.date_range), now)?;
    let mut extra = vec![("steps".to_owned(), spec.steps.join(","))];
    if let Some(window) = spec.window {
        extra.push(("window".to_owned(), window.to_string()));
    }
    if !spec.exclude.is_empty() {
        extra.push(("exclude".to_owned(), spec.exclude.join(",")));
    }
    let answer = crate::rest::funnel(client, tenant, &params_of(&period, extra, now)).await?;
    let rows = answer
        .steps
        .iter()
        .zip(&spec.steps)
        .map(|(step, name)| {
            json!([
                step.step,
                name,
                step.persons,
                step.in_progress,
                step.conversion_from_previous,
                step.conversion_from_first
            ])
            .as_array()
            .cloned()
            .unwrap_or_default()
        })
        .collect();
    Ok(Executed {
        columns: [
            "step",
            "name",
            "persons",
            "in_progress",
            "conversion_from_previous",
            "conversion_from_first",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows,
        period: Some(period),
        complete_until_ms: answer.complete_until_ms,
    })
}

async fn retention(
    client: &Client,
    tenant: &Tenant,
    spec: &RetentionSpec,
    now: i64,
) -> Result<Executed, ExecuteError> {
    let period = resolve(tenant, Some(&spec.date_range), now)?;
    let answer =
        crate::rest::retention(client, tenant, &params_of(&period, Vec::new(), now)).await?;
    let weeks = answer
        .cohorts
        .iter()
        .map(|cohort| cohort.retained.len())
        .max()
        .unwrap_or(0);
    let mut columns = vec!["cohort".to_owned(), "persons".to_owned()];
    columns.extend((0..weeks).map(|week| format!("week {week}")));
    let rows = answer
        .cohorts
        .iter()
        .map(|cohort| {
            let mut row = vec![json!(cohort.week), json!(cohort.persons)];
            row.extend((0..weeks).map(|week| {
                cohort
                    .retained
                    .get(week)
                    .map_or(Value::Null, |retained| json!(retained.persons))
            }));
            row
        })
        .collect();
    Ok(Executed {
        columns,
        rows,
        period: Some(period),
        complete_until_ms: answer.complete_until_ms,
    })
}

async fn person(
    client: &Client,
    tenant: &Tenant,
    spec: &PersonSpec,
    now: i64,
) -> Result<Executed, ExecuteError> {
    let period = resolve(tenant, Some(&spec.date_range), now)?;
    let person_id = crate::queries::person_of(client, &tenant.id, &spec.id)
        .await?
        .ok_or_else(|| ExecuteError::UnknownPerson(spec.id.clone()))?;
    let range = crate::params::Range {
        from: period.from,
        to: period.to,
    };
    let sessions =
        crate::queries::person_sessions(client, &tenant.id, &person_id, range, 100).await?;
    let complete_until_ms = crate::queries::progress(client, &tenant.id).await?;
    let rows = sessions
        .iter()
        .map(|s| {
            let start = chrono::DateTime::from_timestamp_millis(s.start_ms)
                .map(|t| t.with_timezone(&period.zone).to_rfc3339())
                .unwrap_or_default();
            vec![
                json!(start),
                json!((s.end_ms - s.start_ms) / 1000),
                json!(s.events),
                json!(s.page_views),
                json!(s.entry_path),
                json!(s.exit_path),
            ]
        })
        .collect();
    Ok(Executed {
        columns: [
            "session start",
            "duration s",
            "events",
            "page views",
            "entry page",
            "exit page",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows,
        period: Some(period),
        complete_until_ms,
    })
}
