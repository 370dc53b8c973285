//! GraphQL at `/api/graphql`: one schema over the query model. `stats` takes what a Stats API
//! v2 request takes and runs through the same [`crate::plausible::v2::execute`], so a GraphQL
//! query and its `/api/v2/query` twin give the same numbers, with the same tenant scoping
//! (the tenant is the key's), the same validation and the same limits; the schema adds its
//! own depth and complexity limits. Introspection is on.

use std::sync::Arc;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, Error, InputObject, Json, Object, Schema,
    SimpleObject,
};
use schemas::tenants::Tenant;
use serde_json::{Map, Value, json};

use crate::AppState;

/// The schema type.
pub type StatsSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// Queries nest at most this deep (the schema itself is 4 levels).
const MAX_DEPTH: usize = 8;
/// At most this many fields per query.
const MAX_COMPLEXITY: usize = 200;

/// The schema, with its limits.
pub fn schema() -> StatsSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// What a request runs with: the gateway, the key's tenant, and "now".
#[derive(Debug)]
pub struct Scope {
    /// The gateway.
    pub state: Arc<AppState>,
    /// The key's tenant.
    pub tenant: Arc<Tenant>,
    /// Unix seconds.
    pub now: i64,
}

/// The query model's metrics (Stats API v2 names, in GraphQL's case).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Metric {
    /// Distinct visitors with activity.
    Visitors,
    /// Distinct persons (identity-stitched) with activity.
    Persons,
    /// Visits that started in the range.
    Visits,
    /// The same number as `VISITS`.
    Sessions,
    /// Page and screen views.
    Pageviews,
    /// Page views per visit.
    ViewsPerVisit,
    /// Bounced visits / visits, %.
    BounceRate,
    /// Mean visit duration, s.
    VisitDuration,
    /// Activity events.
    Events,
    /// A group's share of the query's visitors, %.
    Percentage,
    /// Converting visitors / visitors, % (needs a goal).
    ConversionRate,
}

impl Metric {
    /// The query model's metric, whose name the v2 request carries.
    fn model(self) -> crate::query::model::Metric {
        use crate::query::model::Metric as Model;
        match self {
            Metric::Visitors => Model::Visitors,
            Metric::Persons => Model::Persons,
            Metric::Visits => Model::Visits,
            Metric::Sessions => Model::Sessions,
            Metric::Pageviews => Model::Pageviews,
            Metric::ViewsPerVisit => Model::ViewsPerVisit,
            Metric::BounceRate => Model::BounceRate,
            Metric::VisitDuration => Model::VisitDuration,
            Metric::Events => Model::Events,
            Metric::Percentage => Model::Percentage,
            Metric::ConversionRate => Model::ConversionRate,
        }
    }
}

/// How to compare with another period.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ComparisonMode {
    /// The range of the same length before.
    PreviousPeriod,
    /// The same dates a year before.
    YearOverYear,
}

/// A question of the query model: a Stats API v2 request's fields.
#[derive(InputObject, Debug)]
pub struct StatsInput {
    /// What to compute.
    pub metrics: Vec<Metric>,
    /// A v2 shortcut (`day`, `7d`, `30d`, `month`, `6mo`, `year`, `all`, …) or, with `to`,
    /// the first local date (`2026-11-01`).
    pub date_range: String,
    /// With a first date in `date_range`: the last local date, inclusive.
    pub to: Option<String>,
    /// v2 dimension names (`visit:country`, `event:page`, `time:day`, …).
    #[graphql(default)]
    pub dimensions: Vec<String>,
    /// v2 filters, as the Stats API takes them (`[["is", "visit:country", ["DE"]]]`).
    pub filters: Option<Json<Value>>,
    /// v2 `order_by` (`[["visitors", "desc"]]`).
    pub order_by: Option<Json<Value>>,
    /// Rows at most (v2 `pagination.limit`).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
    /// Compare with another period.
    pub comparison: Option<ComparisonMode>,
    /// An IANA zone; default the tenant's.
    pub timezone: Option<String>,
    /// Count events flagged as bots.
    #[graphql(default)]
    pub include_bots: bool,
}

impl StatsInput {
    /// The v2 request this input is.
    fn to_v2(&self, site_id: &str) -> Map<String, Value> {
        let mut request = Map::new();
        request.insert("site_id".into(), json!(site_id));
        request.insert(
            "metrics".into(),
            json!(
                self.metrics
                    .iter()
                    .map(|m| m.model().name())
                    .collect::<Vec<_>>()
            ),
        );
        let range = match &self.to {
            Some(to) => json!([self.date_range, to]),
            None => json!(self.date_range),
        };
        request.insert("date_range".into(), range);
        if !self.dimensions.is_empty() {
            request.insert("dimensions".into(), json!(self.dimensions));
        }
        if let Some(Json(filters)) = &self.filters {
            request.insert("filters".into(), filters.clone());
        }
        if let Some(Json(order_by)) = &self.order_by {
            request.insert("order_by".into(), order_by.clone());
        }
        if self.limit.is_some() || self.offset.is_some() {
            let mut pagination = Map::new();
            if let Some(limit) = self.limit {
                pagination.insert("limit".into(), json!(limit));
            }
            if let Some(offset) = self.offset {
                pagination.insert("offset".into(), json!(offset));
            }
            request.insert("pagination".into(), Value::Object(pagination));
        }
        let mut include = Map::new();
        if let Some(mode) = self.comparison {
            let mode = match mode {
                ComparisonMode::PreviousPeriod => "previous_period",
                ComparisonMode::YearOverYear => "year_over_year",
            };
            include.insert("comparisons".into(), json!({ "mode": mode }));
        }
        if self.include_bots {
            include.insert("bots".into(), json!(true));
        }
        if !include.is_empty() {
            request.insert("include".into(), Value::Object(include));
        }
        if let Some(zone) = &self.timezone {
            request.insert("timezone".into(), json!(zone));
        }
        request
    }
}

/// The previous period's values of a row.
#[derive(SimpleObject, Debug)]
pub struct Compared {
    /// The group in the other period (a time bucket's own label).
    pub dimensions: Vec<String>,
    /// Its metrics, in the request's order.
    pub metrics: Vec<Option<f64>>,
    /// The change to this period, per metric (%, or percentage points for rates).
    pub change: Vec<Option<f64>>,
}

/// One group.
#[derive(SimpleObject, Debug)]
pub struct Row {
    /// The group's dimension values, in the request's order.
    pub dimensions: Vec<String>,
    /// Its metrics, in the request's order.
    pub metrics: Vec<Option<f64>>,
    /// With a comparison.
    pub comparison: Option<Compared>,
}

/// The answer.
#[derive(SimpleObject, Debug)]
pub struct Stats {
    /// The metrics, v2 names.
    pub metrics: Vec<String>,
    /// The dimensions, v2 names.
    pub dimensions: Vec<String>,
    /// The period, resolved: first and last instant (RFC 3339, the zone's offset).
    pub date_range: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Everything received before this instant is counted (RFC 3339 UTC).
    pub complete_until: Option<String>,
    /// Remarks, e.g. a range cut to the longest one query reads.
    pub warnings: Vec<String>,
}

/// The key's site.
#[derive(SimpleObject, Debug)]
pub struct Site {
    /// The tenant's id (the Stats API's `site_id`).
    pub id: String,
    /// Its IANA zone.
    pub time_zone: String,
    /// Its goals' labels.
    pub goals: Vec<String>,
}

/// The root of every query.
#[derive(Debug)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The key's site.
    async fn site(&self, ctx: &Context<'_>) -> Result<Site, Error> {
        let scope = ctx.data::<Scope>()?;
        Ok(Site {
            id: scope.tenant.id.clone(),
            time_zone: scope.tenant.time_zone.clone(),
            goals: scope.tenant.goals.iter().map(|goal| goal.label()).collect(),
        })
    }

    /// Metrics over a period, grouped and filtered: the numbers `POST /api/v2/query` gives.
    /// Each costs 60 of a query's 200 (at most three ClickHouse queries per request).
    #[graphql(complexity = "60 + child_complexity")]
    async fn stats(&self, ctx: &Context<'_>, input: StatsInput) -> Result<Stats, Error> {
        let scope = ctx.data::<Scope>()?;
        let request = input.to_v2(&scope.tenant.id);
        let response = crate::plausible::v2::execute(
            &scope.state.clickhouse,
            &scope.tenant,
            &request,
            scope.now,
        )
        .await
        .map_err(|error| Error::new(error.1))?;
        Ok(stats_of(&response))
    }
}

use crate::json_strings as strings;

fn numbers(value: &Value) -> Vec<Option<f64>> {
    value
        .as_array()
        .map(|items| items.iter().map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The v2 response as the schema's types.
fn stats_of(response: &Value) -> Stats {
    let rows = response["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|row| Row {
                    dimensions: strings(&row["dimensions"]),
                    metrics: numbers(&row["metrics"]),
                    comparison: row.get("comparison").map(|compared| Compared {
                        dimensions: strings(&compared["dimensions"]),
                        metrics: numbers(&compared["metrics"]),
                        change: numbers(&compared["change"]),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    Stats {
        metrics: strings(&response["query"]["metrics"]),
        dimensions: strings(&response["query"]["dimensions"]),
        date_range: strings(&response["query"]["date_range"]),
        rows,
        complete_until: response["meta"]["complete_until"]
            .as_str()
            .map(str::to_owned),
        warnings: strings(&response["meta"]["warnings"]),
    }
}
