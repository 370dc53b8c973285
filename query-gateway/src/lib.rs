//! The query gateway: the dashboard's REST API over ClickHouse, scoped by read key.
//!
//! [`router`] builds the whole HTTP surface from an [`AppState`], so tests drive it in-process
//! exactly as `main` serves it.
#![warn(missing_docs)]

pub mod ask;
pub mod erasure;
pub mod error;
pub mod graphql;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod plausible;
pub mod queries;
pub mod query;
pub mod rest;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use schemas::tenants::{Tenant, Tenants};

pub use error::ApiError;
use params::Params;

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    /// Key lookup; replaced whole when the tenants file is reloaded (SIGHUP).
    pub tenants: TenantStore,
    /// ClickHouse, with the pipeline's database selected.
    pub clickhouse: clickhouse::Client,
    /// Live counters, relayed from the engine through Redis.
    pub live: Arc<live::LiveHub>,
    /// How long one `/live` stream lasts before the browser is made to reconnect.
    pub live_stream_lifetime: std::time::Duration,
    /// Questions in plain English.
    pub ask: Arc<ask::AskService>,
    /// Served at `/metrics` by [`metrics_router`].
    pub metrics: Arc<metrics::Metrics>,
    /// What "now" is for relative ranges ("today", `7d`).
    pub clock: Clock,
    /// Erasure, suppression and export for admin keys; `None`: not configured (503).
    pub erasure: Option<Arc<erasure::ErasureService>>,
}

/// The tenants as last loaded: readers take a snapshot, a reload swaps it whole, so a key
/// removed from the file stops working without a restart.
#[derive(Debug, Default)]
pub struct TenantStore(std::sync::RwLock<Arc<Tenants>>);

impl TenantStore {
    /// The current tenants.
    pub fn current(&self) -> Arc<Tenants> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the tenants (a reload of the file).
    pub fn replace(&self, tenants: Tenants) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tenants);
    }
}

impl From<Tenants> for TenantStore {
    fn from(tenants: Tenants) -> Self {
        TenantStore(std::sync::RwLock::new(Arc::new(tenants)))
    }
}

/// What a key may do: a read key everything of its tenant but erase and export, a share key
/// its dashboard only, an admin key everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read key.
    Read,
    /// A share key: aggregate numbers only (no Ask, no person's sessions).
    Share,
    /// An admin key: also erasure, suppression and export of persons.
    Admin,
}

/// The gateway's "now": the system clock, or a fixed instant, so that tests and examples can
/// ask about "yesterday" over data written for a known day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    fixed_secs: Option<i64>,
}

impl Clock {
    /// Always this instant (Unix seconds).
    pub fn fixed(secs: i64) -> Clock {
        Clock {
            fixed_secs: Some(secs),
        }
    }

    /// Now, Unix seconds (UTC).
    pub fn now_secs(self) -> i64 {
        self.fixed_secs
            .unwrap_or_else(|| chrono::Utc::now().timestamp())
    }
}

impl AppState {
    /// The state of a gateway over `database` at `clickhouse_url` with Ask's offline
    /// translator and default limits, and no live feed: what tests and benchmarks serve.
    pub fn offline(tenants: Tenants, clickhouse_url: &str, database: &str) -> AppState {
        let metrics = Arc::new(metrics::Metrics::default());
        let runner = ask::run::Runner::new(clickhouse_url, database, Default::default());
        AppState {
            tenants: tenants.into(),
            clickhouse: clickhouse::Client::default()
                .with_url(clickhouse_url)
                .with_database(database)
                .with_validation(false)
                .with_setting("readonly", "2"),
            live: Default::default(),
            live_stream_lifetime: std::time::Duration::from_secs(60),
            ask: Arc::new(ask::AskService::new(
                runner,
                None,
                schemas::version::ServerVersion::OLDEST,
                Default::default(),
                metrics.clone(),
            )),
            metrics,
            clock: Clock::default(),
            erasure: None,
        }
    }
}

/// The API's paths, as in the OpenAPI document (a test keeps the two equal).
pub const API_PATHS: [&str; 7] = [
    "/api/overview",
    "/api/timeseries",
    "/api/top/{kind}",
    "/api/funnel",
    "/api/retention",
    "/api/persons/{person_id}/sessions",
    "/api/progress",
];

/// Plausible's Stats API v2 ([`plausible::v2`]).
pub const V2_QUERY_PATH: &str = "/api/v2/query";

/// Plausible's Stats API v1 ([`plausible::v1`]).
pub const V1_PATHS: [&str; 4] = [
    plausible::v1::ENDPOINTS[0].0,
    plausible::v1::ENDPOINTS[1].0,
    plausible::v1::ENDPOINTS[2].0,
    plausible::v1::ENDPOINTS[3].0,
];

/// `POST {"question": "..."}`: a question in plain English, answered over the caller's
/// tenant only (see [`ask`]).
pub const ASK_PATH: &str = "/api/ask";

/// `GET`: the key's site: its id (Plausible's `site_id`), time zone, goals and what the key
/// may do, so that the dashboard can ask the Stats API for it.
pub const SITE_PATH: &str = "/api/site";

/// `POST {"query": "...", "variables": {...}}`: GraphQL over the query model ([`graphql`]).
pub const GRAPHQL_PATH: &str = "/api/graphql";

/// `GET`: the tenant's read-only share link (read key only).
pub const SHARE_LINK_PATH: &str = "/api/share-link";

/// `DELETE` (admin key): erases the person an id belongs to, with every id linked to it (GDPR
/// Art. 17); 202 with the request ([`erasure`]).
pub const PERSON_PATH: &str = "/api/persons/{id}";

/// `GET` (admin key): everything stored about the person an id belongs to (GDPR Art. 15).
pub const PERSON_EXPORT_PATH: &str = "/api/persons/{id}/export";

/// `GET` (admin key): an erasure request: `pending` or `completed`, and rows removed per table.
pub const DELETION_PATH: &str = "/api/deletions/{request_id}";

/// `GET` (admin key): the tenant's erasure requests, newest first, with the requesting key's id.
pub const DELETIONS_PATH: &str = "/api/deletions";

/// `DELETE` (admin key): lets events carrying an erased id in again, from now on.
pub const SUPPRESSION_PATH: &str = "/api/suppressions/{id}";

/// Every admin key's path (erasure, suppression, export).
pub const ADMIN_PATHS: [&str; 5] = [
    PERSON_PATH,
    PERSON_EXPORT_PATH,
    DELETION_PATH,
    DELETIONS_PATH,
    SUPPRESSION_PATH,
];

/// The Server-Sent Events stream of live counters. Browsers' `EventSource` cannot send
/// headers, so besides `Authorization: Bearer` it takes the read key as `?key=`.
pub const LIVE_PATH: &str = "/live";

/// The dashboard page served at `/`: one self-contained file, no build step.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// The items of a JSON array as text (strings as they are, other values as JSON); empty for
/// anything but an array. The gateway's answers list names this way (metrics, dimensions).
pub fn json_strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The complete HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = plausible::v1::ENDPOINTS
        .into_iter()
        .fold(Router::new(), |router, (path, endpoint)| {
            router.route(path, plausible::v1::route(endpoint))
        });
    Router::new()
        .merge(v1)
        .route("/", get(|| async { axum::response::Html(DASHBOARD) }))
        .route(API_PATHS[0], get(overview))
        .route(API_PATHS[1], get(timeseries))
        .route(API_PATHS[2], get(top))
        .route(API_PATHS[3], get(funnel))
        .route(API_PATHS[4], get(retention))
        .route(API_PATHS[5], get(person_sessions))
        .route(API_PATHS[6], get(progress))
        .route(V2_QUERY_PATH, post(plausible::v2::query))
        .route(LIVE_PATH, get(live_stream))
        .route(ASK_PATH, post(ask_question))
        .route(SHARE_LINK_PATH, get(share_link))
        .route(SITE_PATH, get(site))
        .route(GRAPHQL_PATH, post(graphql_query))
        .route(PERSON_PATH, delete(erase_person))
        .route(PERSON_EXPORT_PATH, get(export_person))
        .route(DELETION_PATH, get(deletion))
        .route(DELETIONS_PATH, get(deletions))
        .route(SUPPRESSION_PATH, delete(lift_suppression))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// `/metrics` (Prometheus text), served on an address of its own.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move {
                // The stall gauge is read at each scrape, so it outlives an engine that
                // exited on the stall (an alert fires on the row, not on the engine).
                match queries::log_stalls(&state.clickhouse).await {
                    Ok(stalls) => state.metrics.set_log_stalls(stalls.len()),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot read _log_stalls for /metrics");
                        state.metrics.set_log_stalls_unknown();
                    }
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.render(),
                )
            }),
        )
        .with_state(state)
}

/// The tenant of the request's `Authorization: Bearer <read or share key>`, and what the
/// key may do.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(Arc<Tenant>, Access), ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|key| tenant_of_key(state, key.trim()))
        .ok_or(ApiError::Unauthorized)
}

/// The tenant of a read, share or admin key.
pub fn tenant_of_key(state: &AppState, key: &str) -> Option<(Arc<Tenant>, Access)> {
    let tenants = state.tenants.current();
    tenants
        .by_read_key(key)
        .map(|tenant| (tenant.clone(), Access::Read))
        .or_else(|| {
            tenants
                .by_share_key(key)
                .map(|tenant| (tenant.clone(), Access::Share))
        })
        .or_else(|| {
            tenants
                .by_admin_key(key)
                .map(|tenant| (tenant.clone(), Access::Admin))
        })
}

/// Refuses a share key where only a read key may go.
fn read_key_only(access: Access) -> Result<(), ApiError> {
    match access {
        Access::Read | Access::Admin => Ok(()),
        Access::Share => Err(ApiError::Forbidden(
            "a share link reads the dashboard's numbers only; this needs a read key",
        )),
    }
}

/// The tenant of an admin key, and the key's id for the audit trail; 403 for any other key of
/// a tenant (read, share, and write keys, which the query gateway knows as no key at all but
/// answers the same way so as not to tell them apart).
fn admin(state: &AppState, headers: &HeaderMap) -> Result<(Arc<Tenant>, String), ApiError> {
    const ADMIN_ONLY: &str =
        "erasure, suppression and export need an admin key (admin_keys in the tenants file)";
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    match tenant_of_key(state, key) {
        Some((tenant, Access::Admin)) => Ok((tenant, erasure::key_id(key))),
        Some(_) => Err(ApiError::Forbidden(ADMIN_ONLY)),
        None if state.tenants.current().by_write_key(key).is_some() => {
            Err(ApiError::Forbidden(ADMIN_ONLY))
        }
        None => Err(ApiError::Unauthorized),
    }
}

async fn erase_person(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (tenant, key_id) = admin(&state, &headers)?;
        let service = erasure::configured(&state.erasure)?;
        erasure::erase_person(
            service,
            &state.clickhouse,
            &state.ask,
            &tenant.id,
            &id,
            key_id,
        )
        .await
    }
    .await;
    match result {
        Ok(deletion) => (axum::http::StatusCode::ACCEPTED, Json(deletion)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn export_person(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let (tenant, _) = admin(&state, &headers)?;
            erasure::export(&state.clickhouse, &tenant.id, &id).await
        }
        .await,
    )
}

async fn deletion(
    State(state): State<Arc<AppState>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let (tenant, _) = admin(&state, &headers)?;
            erasure::deletion(&state.clickhouse, &tenant.id, &request_id).await
        }
        .await,
    )
}

async fn deletions(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    respond(
        async {
            let (tenant, _) = admin(&state, &headers)?;
            erasure::deletions(&state.clickhouse, &tenant.id).await
        }
        .await,
    )
}

/// The answer of `DELETE /api/suppressions/{id}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SuppressionLifted {
    /// Events carrying the id received after this instant (RFC 3339 UTC) are kept again.
    pub lifted_at: String,
}

async fn lift_suppression(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (tenant, _) = admin(&state, &headers)?;
        let service = erasure::configured(&state.erasure)?;
        let at = erasure::lift_suppression(service, &tenant.id, &id).await?;
        Ok::<_, ApiError>(SuppressionLifted {
            lifted_at: chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
        })
    }
    .await;
    match result {
        Ok(lifted) => (axum::http::StatusCode::ACCEPTED, Json(lifted)).into_response(),
        Err(error) => error.into_response(),
    }
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// What every API handler starts from: the read key's tenant, then the validated-later
/// parameters. Authentication comes first, so an anonymous caller learns nothing about which
/// parameters are valid.
struct Scoped {
    tenant: Arc<Tenant>,
    access: Access,
    params: Params,
}

impl FromRequestParts<Arc<AppState>> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (tenant, access) = authenticate(state, &parts.headers)?;
        let pairs = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        Ok(Scoped {
            tenant,
            access,
            params: Params::new(pairs, state.clock.now_secs()),
        })
    }
}

async fn overview(
    State(state): State<Arc<AppState>>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(rest::overview(&state.clickhouse, &tenant, &params).await)
}

async fn timeseries(
    State(state): State<Arc<AppState>>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(rest::timeseries(&state.clickhouse, &tenant, &params).await)
}

async fn top(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(rest::top(&state.clickhouse, &tenant, &params, &kind).await)
}

async fn funnel(
    State(state): State<Arc<AppState>>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(rest::funnel(&state.clickhouse, &tenant, &params).await)
}

async fn retention(
    State(state): State<Arc<AppState>>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(rest::retention(&state.clickhouse, &tenant, &params).await)
}

/// The answer of `/api/persons/{person_id}/sessions`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PersonSessions {
    /// The person asked about.
    pub person_id: String,
    /// Newest first.
    pub sessions: Vec<queries::SessionSummary>,
}

async fn person_sessions(
    State(state): State<Arc<AppState>>,
    Path(person_id): Path<String>,
    Scoped {
        tenant,
        access,
        params,
    }: Scoped,
) -> Response {
    respond(
        async {
            read_key_only(access)?;
            params.only(params::Endpoint::PersonSessions)?;
            let limit: params::LimitParams = params.group()?;
            let sessions = queries::person_sessions(
                &state.clickhouse,
                &tenant.id,
                &person_id,
                params.range()?,
                params::limit(limit.limit.as_deref())?,
            )
            .await?;
            Ok(PersonSessions {
                person_id,
                sessions,
            })
        }
        .await,
    )
}

/// What `/api/progress` says of a stall (the engine's README section "When the log is lost"
/// has the recovery).
const LOG_STALL_EXPLANATION: &str = "The engine stopped reading: the Kafka log is not the one \
its checkpoints describe (the broker lost its log, the topic was recreated, or retention \
deleted records a replay needs). Nothing after \"complete up to\" is counted until an \
operator recovers the pipeline (README: When the log is lost).";

/// A stalled pipeline, in `/api/progress`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Stalled {
    /// When the engine first found a partition's log lost, RFC 3339 UTC.
    pub since: Option<String>,
    /// What happened and where the recovery is described.
    pub reason: &'static str,
    /// The partitions it is stalled on.
    pub partitions: Vec<queries::LogStall>,
}

/// The answer of `/api/progress`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Every event up to this time (Unix ms) is counted; null before the engine's first
    /// checkpoint for the tenant.
    pub complete_until_ms: Option<i64>,
    /// The same, RFC 3339 UTC.
    pub complete_until: Option<String>,
    /// Set while the engine is stalled on a lost log; null when it reads normally.
    pub stalled: Option<Stalled>,
}

async fn progress(
    State(state): State<Arc<AppState>>,
    Scoped { tenant, params, .. }: Scoped,
) -> Response {
    respond(
        async {
            params.only(params::Endpoint::Progress)?;
            let until = queries::progress(&state.clickhouse, &tenant.id).await?;
            let stalls = queries::log_stalls(&state.clickhouse).await?;
            state.metrics.set_log_stalls(stalls.len());
            let rfc3339 = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            };
            let since = stalls.iter().map(|s| s.detected_at_ms).min();
            let stalled = since.map(|since| Stalled {
                since: rfc3339(since),
                reason: LOG_STALL_EXPLANATION,
                partitions: stalls,
            });
            Ok(Progress {
                complete_until_ms: until,
                complete_until: until.and_then(rfc3339),
                stalled,
            })
        }
        .await,
    )
}

async fn live_stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let tenant = match authenticate(&state, &headers).or_else(|error| {
        query
            .get("key")
            .and_then(|key| tenant_of_key(&state, key))
            .ok_or(error)
    }) {
        Ok((tenant, _)) => tenant,
        Err(error) => return error.into_response(),
    };
    if let Some(unknown) = query.keys().find(|name| name.as_str() != "key") {
        return ApiError::BadParameter {
            parameter: unknown.clone(),
            message: "unknown parameter".into(),
        }
        .into_response();
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    state
        .live
        .stream(tenant.id.clone(), last_event_id, state.live_stream_lifetime)
        .into_response()
}

/// A GraphQL request (the GraphQL-over-HTTP JSON body).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct GraphQLBody {
    /// The query document.
    query: String,
    /// Its variables.
    #[schema(value_type = Option<Object>)]
    variables: Option<serde_json::Value>,
    /// The operation to run, when the document has several.
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
}

static GRAPHQL_SCHEMA: std::sync::LazyLock<graphql::StatsSchema> =
    std::sync::LazyLock::new(graphql::schema);

async fn graphql_query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let tenant = match authenticate(&state, &headers) {
        Ok((tenant, _)) => tenant,
        Err(error) => return error.into_response(),
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::BadParameter {
                parameter: "body".into(),
                message: format!("expected a GraphQL request {{\"query\": \"...\"}}: {error}"),
            }
            .into_response();
        }
    };
    let scope = graphql::Scope {
        now: state.clock.now_secs(),
        state: state.clone(),
        tenant,
    };
    Json(GRAPHQL_SCHEMA.execute(request.data(scope)).await).into_response()
}

/// The answer of `/api/site`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Site {
    /// The tenant's id: the `site_id` of Plausible's APIs.
    pub site_id: String,
    /// The tenant's IANA time zone, the default of every query.
    pub time_zone: String,
    /// The tenant's goals' labels (`event:goal` values).
    pub goals: Vec<String>,
    /// `read` or `share`.
    pub access: &'static str,
}

async fn site(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    respond(authenticate(&state, &headers).map(|(tenant, access)| Site {
        site_id: tenant.id.clone(),
        time_zone: tenant.time_zone.clone(),
        goals: tenant.goals.iter().map(|goal| goal.label()).collect(),
        access: match access {
            Access::Read => "read",
            Access::Share => "share",
            Access::Admin => "admin",
        },
    }))
}

/// The answer of `/api/share-link`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ShareLink {
    /// The share key (the tenants file's first `share_keys` entry).
    pub share_key: String,
    /// The dashboard's path with the key in its fragment (`/#share=<key>`): the key never
    /// reaches a server log or a Referer header.
    pub path: String,
}

async fn share_link(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    respond(
        authenticate(&state, &headers)
            .and_then(|(tenant, access)| read_key_only(access).map(|()| tenant))
            .and_then(|tenant| {
                let key = tenant.share_keys.first().ok_or(ApiError::NotFound)?;
                Ok(ShareLink {
                    share_key: key.clone(),
                    path: format!(
                        "/#share={}",
                        form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
                    ),
                })
            }),
    )
}

/// The body of `POST /api/ask`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question, in plain English (e.g. "page views per day last week").
    pub question: String,
}

async fn ask_question(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let tenant = match authenticate(&state, &headers)
        .and_then(|(tenant, access)| read_key_only(access).map(|()| tenant))
    {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let request: AskRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::BadParameter {
                parameter: "body".into(),
                message: format!("expected {{\"question\": \"...\"}}: {error}"),
            }
            .into_response();
        }
    };
    if let Err(error) = state.ask.admit(&tenant, &request.question) {
        return ask_error(error);
    }
    let complete_until = match queries::progress(&state.clickhouse, &tenant.id).await {
        Ok(until) => until,
        Err(error) => return error.into_response(),
    };
    match state
        .ask
        .ask(
            &state.clickhouse,
            &tenant,
            &request.question,
            complete_until,
            state.clock.now_secs(),
        )
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => ask_error(error),
    }
}

fn ask_error(error: ask::AskError) -> Response {
    match error {
        ask::AskError::BadQuestion(message) => ApiError::BadParameter {
            parameter: "question".into(),
            message,
        }
        .into_response(),
        ask::AskError::RateLimited { retry_after_secs } => {
            ApiError::RateLimited { retry_after_secs }.into_response()
        }
        ask::AskError::Unavailable(error) => {
            tracing::error!(error = %ask::error_chain(&error), "Ask: ClickHouse unavailable");
            ApiError::Unavailable.into_response()
        }
        ask::AskError::Store => ApiError::Unavailable.into_response(),
    }
}
