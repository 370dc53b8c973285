//! The ingest gateway: Segment-compatible HTTP endpoints that validate events, resolve the
//! tenant from the write key, and hand the events durably to Kafka.
//!
//! [`router`] builds the whole HTTP surface from an [`AppState`], so tests drive it in-process
//! exactly as `main` serves it.
#![warn(missing_docs)]

pub mod address;
pub mod body;
pub mod enrich;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod plausible;
pub mod ratelimit;
pub mod salt;
pub mod segment;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use schemas::{Event, EventKind, IngestWarning, WarningKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use error::ApiError;
use kafka::{EventProducer, ProduceError};
use metrics::{IgnoredLabels, Metrics, RefusalLabels, RequestLabels};
use schemas::tenants::{Tenant, Tenants};
use segment::{BatchDefaults, FieldIssue, Ignored, Limits, Normalized, RequestMeta};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// Write-key lookup.
    pub tenants: Tenants,
    /// The Kafka hand-off.
    pub producer: EventProducer,
    /// Segment's size limits.
    pub limits: Limits,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Seconds a client is told to wait after a 503.
    pub retry_after_secs: u64,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-tenant quotas (Redis, with local buckets when it does not answer in time).
    pub rate_limiter: ratelimit::RateLimiter,
    /// Agent rules, GeoIP databases and referrer lists (shared: loading them takes a second
    /// and the GeoIP files' size in memory).
    pub enricher: Arc<enrich::Enricher>,
    /// The daily salts of the visitor ids derived for Plausible's Events API.
    pub salts: salt::Salts,
}

/// The complete HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    // Browsers post from any site that embeds the tracker; write keys are public by design, so
    // CORS protects nothing here and must not get in the way.
    // Browser SDKs send headers of their own (RudderStack's JS SDK sends `AnonymousId`) and
    // may send credentials, which a wildcard origin would make the browser refuse: answer
    // with the requesting origin and the requested headers, and let browsers cache that.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .max_age(Duration::from_secs(86_400));
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        // analytics.js (analytics-next) posts to the type's initial, batches to `/b`.
        .route("/v1/b", post(batch))
        .route("/v1/{kind}", post(single))
        .route("/api/event", post(plausible_event))
        .route("/tracker.js", get(tracker))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(cors)
        .with_state(state)
}

/// The browser tracker, embedded: no build step, nothing to host besides the gateway.
pub const TRACKER_JS: &str = include_str!("tracker.js");

async fn tracker() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        TRACKER_JS,
    )
        .into_response()
}

/// `/metrics`, served on an address of its own: the public port is open to every browser
/// (CORS), the metrics are for the operator's Prometheus only.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn single(
    State(state): State<Arc<AppState>>,
    kind: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    // A segment that is not even UTF-8 names no route either (and gets our JSON error).
    let Some(kind) = kind.ok().and_then(|Path(kind)| route_kind(&kind)) else {
        return ApiError::NotFound.into_response();
    };
    let result = async {
        let object = one_event_object(&state, &headers, body).await?;
        let tenant = authenticate(&state, &headers, object.get("writeKey"))?;
        let meta = request_meta(&state, &tenant, &headers, &extensions);
        let mut validated = Validated::default();
        validated.add(
            0,
            &object,
            segment::normalize(Some(kind), &object, &BatchDefaults::default(), &meta),
            &meta,
        );
        count_validation(&state, &validated);
        if let Some(refused) = validated.refused.pop() {
            // The request is the event: it is refused as a whole, and still recorded.
            record_warnings(&state, &validated.warnings).await;
            return Err(ApiError::InvalidEvent(refused.errors));
        }
        admit(&state, &tenant, &validated).await?;
        produce(&state, validated).await
    }
    .await;
    respond(&state, kind.as_str(), result, 1, segment_success)
}

/// The body of a single-event request as a JSON object, within the single-event limit.
async fn one_event_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let body = body::read(body, headers, state.limits.max_request_bytes).await?;
    let body = body::repair_lone_surrogates(&body);
    if body.len() > state.limits.max_event_bytes {
        return Err(ApiError::EventTooLarge {
            limit: state.limits.max_event_bytes,
        });
    }
    serde_json::from_slice(&body).map_err(|error| ApiError::InvalidJson(error.to_string()))
}

/// Plausible's Events API (see [`plausible`]): one event, for the tenant of each domain it
/// names (Plausible's tracker may send to several sites at once), answered `202 ok` as
/// Plausible answers.
async fn plausible_event(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    let result = async {
        let object = one_event_object(&state, &headers, body).await?;
        let sent = plausible::PlausibleEvent::read(&object).map_err(ApiError::InvalidEvent)?;
        let mut tenants: Vec<&Arc<Tenant>> = Vec::new();
        for tenant in sent
            .domains
            .iter()
            .filter_map(|domain| state.tenants.by_domain(domain))
        {
            if !tenants.iter().any(|known| known.id == tenant.id) {
                tenants.push(tenant);
            }
        }
        if tenants.is_empty() {
            return Err(ApiError::UnknownDomain(sent.domains.join(",")));
        }
        let mut accepted = Accepted::default();
        for tenant in tenants {
            let one = plausible_for_tenant(&state, tenant, &sent, &object, &headers, &extensions);
            accepted.events += one.await?.events;
        }
        Ok(accepted)
    }
    .await;
    respond(&state, "plausible", result, 1, |_| {
        (StatusCode::ACCEPTED, "ok").into_response()
    })
}

/// One tenant's copy of a Plausible event: its derived visitor id, the Segment reading,
/// quota, Kafka.
async fn plausible_for_tenant(
    state: &AppState,
    tenant: &Tenant,
    sent: &plausible::PlausibleEvent,
    object: &Map<String, Value>,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Accepted, ApiError> {
    let meta = request_meta(state, tenant, headers, extensions);
    let salt = state.salts.of_day(meta.received_at_ms).await.map_err(|error| {
        tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "no visitor-id salt; answering 503");
        ApiError::Unavailable {
            retry_after_secs: state.retry_after_secs,
        }
    })?;
    let address = meta.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let anonymous_id = salt::visitor_id(
        &salt,
        &tenant.id,
        &address,
        meta.user_agent.unwrap_or_default(),
    );
    let call = sent.to_segment(&anonymous_id, object.get("v"));
    let outcome =
        segment::normalize(None, &call, &BatchDefaults::default(), &meta).map(|mut normalized| {
            sent.finish(&mut normalized.event);
            normalized
        });
    let mut validated = Validated::default();
    validated.add(0, &call, outcome, &meta);
    count_validation(state, &validated);
    if let Some(refused) = validated.refused.pop() {
        record_warnings(state, &validated.warnings).await;
        return Err(ApiError::InvalidEvent(refused.errors));
    }
    admit(state, tenant, &validated).await?;
    produce(state, validated).await
}

/// Segment's batch envelope. Events stay raw until each is size-checked on its own.
#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    /// An object; PHP's empty array `[]` and `null` read as none.
    context: Option<Value>,
}

async fn batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    let mut events_in_request = 0;
    let result = async {
        let body = body::read(body, &headers, state.limits.max_request_bytes).await?;
        let body = body::repair_lone_surrogates(&body);
        let envelope: BatchEnvelope<'_> = serde_json::from_slice(&body)
            .map_err(|error| ApiError::InvalidJson(error.to_string()))?;
        events_in_request = envelope.batch.len();
        let tenant = authenticate(&state, &headers, envelope.write_key.as_ref())?;
        if envelope.batch.len() > state.limits.max_batch_events {
            return Err(ApiError::BatchTooLarge {
                count: envelope.batch.len(),
                limit: state.limits.max_batch_events,
            });
        }
        let meta = request_meta(&state, &tenant, &headers, &extensions);
        let (context, context_ignored) = match &envelope.context {
            None | Some(Value::Null) => (None, None),
            Some(Value::Array(items)) if items.is_empty() => (None, None),
            Some(Value::Object(context)) => (Some(context), None),
            Some(other) => {
                let detail =
                    "the batch's context must be an object; its events were stored without it";
                let ignored =
                    Ignored::new(WarningKind::InvalidContextIgnored, "context", other, detail);
                (None, Some(ignored))
            }
        };
        let defaults = BatchDefaults {
            sent_at: envelope.sent_at.as_ref(),
            context,
        };
        let validated = validate_batch(
            &envelope.batch,
            &defaults,
            &meta,
            state.limits,
            context_ignored,
        );
        count_validation(&state, &validated);
        admit(&state, &tenant, &validated).await?;
        produce(&state, validated).await
    }
    .await;
    respond(&state, "batch", result, events_in_request, segment_success)
}

/// An event refused on its own: an entry of the response's `refused` list.
#[derive(Debug, Serialize)]
struct Refused {
    /// Its position in the batch (0 for a single event).
    index: usize,
    /// Its `messageId` as sent; absent when it had none.
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    /// Every field that made it unusable.
    errors: Vec<FieldIssue>,
}

/// A request's events after validation: what to store, what to record in
/// `ingestion_warnings`, and what to tell the client it refused.
#[derive(Debug, Default)]
struct Validated {
    events: Vec<Event>,
    warnings: Vec<IngestWarning>,
    refused: Vec<Refused>,
}

impl Validated {
    /// Adds the outcome of one event (at `index`, read from `object`).
    fn add(
        &mut self,
        index: usize,
        object: &Map<String, Value>,
        outcome: Result<Normalized, Vec<FieldIssue>>,
        meta: &RequestMeta<'_>,
    ) {
        match outcome {
            Ok(Normalized { event, ignored }) => {
                for ignored in ignored {
                    let warning = warning(meta, &event.message_id, ignored);
                    self.warnings.push(warning);
                }
                self.events.push(event);
            }
            Err(errors) => self.refuse(index, sent_message_id(object), object, errors, meta),
        }
    }

    fn refuse(
        &mut self,
        index: usize,
        sent_id: Option<String>,
        object: &Map<String, Value>,
        errors: Vec<FieldIssue>,
        meta: &RequestMeta<'_>,
    ) {
        // Refusals of events without an id get one, so that they stay apart in the table.
        let message_id = sent_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        for error in &errors {
            // An absent field is stored as an empty value, a sent `null` as `null`.
            let value = field_value(object, &error.field).unwrap_or(Value::String(String::new()));
            let ignored = Ignored::new(
                WarningKind::RefusedEvent,
                &error.field,
                &value,
                error.message.clone(),
            );
            self.warnings.push(warning(meta, &message_id, ignored));
        }
        self.refused.push(Refused {
            index,
            message_id: sent_id,
            errors,
        });
    }
}

/// The `messageId` an event was sent with, if any.
fn sent_message_id(object: &Map<String, Value>) -> Option<String> {
    match object.get("messageId") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    }
}

/// The warning row of one problem of the event `message_id`.
fn warning(meta: &RequestMeta<'_>, message_id: &str, ignored: Ignored) -> IngestWarning {
    IngestWarning {
        tenant: meta.tenant.id.clone(),
        kind: ignored.kind,
        message_id: message_id.to_owned(),
        field: ignored.field,
        value: ignored.value,
        detail: ignored.detail,
        received_at_ms: meta.received_at_ms,
    }
}

/// The value at a dotted field path (`context.ip`), if the event has one.
fn field_value(object: &Map<String, Value>, field: &str) -> Option<Value> {
    let mut parts = field.split('.');
    let first = parts.next().and_then(|part| object.get(part));
    parts
        .try_fold(first, |value, part| Some(value?.get(part)))
        .flatten()
        .cloned()
}

/// Validates every event on its own: good events are kept whatever the others hold, and
/// every refused one is reported by index, `messageId` and field, so that a client that does
/// not retry a 400 (analytics.js) loses only the events that were wrong. Segment's API keeps
/// the good events of a batch too.
fn validate_batch(
    raw_events: &[&RawValue],
    defaults: &BatchDefaults<'_>,
    meta: &RequestMeta<'_>,
    limits: Limits,
    context_ignored: Option<Ignored>,
) -> Validated {
    let mut validated = Validated::default();
    for (index, raw) in raw_events.iter().enumerate() {
        let unusable = |message: String| {
            vec![FieldIssue {
                index: None,
                field: String::new(),
                message,
            }]
        };
        let Ok(object) = serde_json::from_str::<Map<String, Value>>(raw.get()) else {
            let errors = unusable("must be a JSON object".to_owned());
            validated.refuse(index, None, &Map::new(), errors, meta);
            continue;
        };
        if raw.get().len() > limits.max_event_bytes {
            // Refused, and still named by its id (the request's limit bounds the parse).
            let errors = unusable(format!("event exceeds {} bytes", limits.max_event_bytes));
            validated.refuse(index, sent_message_id(&object), &Map::new(), errors, meta);
            continue;
        }
        let mut outcome = segment::normalize(None, &object, defaults, meta);
        if let (Ok(normalized), Some(ignored)) = (&mut outcome, &context_ignored) {
            normalized.ignored.push(ignored.clone());
        }
        validated.add(index, &object, outcome, meta);
    }
    validated
}

/// Counts a request's refused events (each by the first field that made it unusable) and
/// ignored fields.
fn count_validation(state: &AppState, validated: &Validated) {
    for refused in &validated.refused {
        let field = refused
            .errors
            .first()
            .map(|e| e.field.clone())
            .unwrap_or_default();
        let labels = RefusalLabels { field };
        state.metrics.events_refused.get_or_create(&labels).inc();
    }
    for warning in &validated.warnings {
        if warning.kind != WarningKind::RefusedEvent {
            let labels = IgnoredLabels {
                kind: warning.kind.as_str(),
            };
            state.metrics.fields_ignored.get_or_create(&labels).inc();
        }
    }
}

/// Takes the request's good events from its tenant's quota (a request without one costs
/// nothing); over quota, its warnings are still written, since the refusals they record do
/// not depend on the quota.
async fn admit(state: &AppState, tenant: &Tenant, validated: &Validated) -> Result<(), ApiError> {
    if validated.events.is_empty() {
        return Ok(());
    }
    let admitted = enforce_quota(state, tenant, validated.events.len()).await;
    if admitted.is_err() {
        record_warnings(state, &validated.warnings).await;
    }
    admitted
}

/// Takes the request's events from its tenant's quota; over quota, nothing of the request is
/// accepted (`429` with `Retry-After`).
async fn enforce_quota(state: &AppState, tenant: &Tenant, events: usize) -> Result<(), ApiError> {
    let Some(limit) = tenant.rate_limit else {
        return Ok(());
    };
    match state
        .rate_limiter
        .check(&tenant.id, limit, events, &state.metrics)
        .await
    {
        ratelimit::Decision::Allowed => Ok(()),
        ratelimit::Decision::Limited { retry_after_ms } => {
            state.metrics.rate_limited_events.inc_by(events as u64);
            Err(ApiError::RateLimited {
                events_per_sec: limit.events_per_sec,
                burst: limit.burst,
                retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
            })
        }
    }
}

/// What a request stored: the response's figures.
#[derive(Debug, Default)]
struct Accepted {
    events: usize,
    refused: Vec<Refused>,
}

/// Writes a request's events and warnings to Kafka together; `503` unless all were
/// acknowledged. A request without a good event has only warnings to write: those are
/// diagnostics, so losing them is counted and logged, not answered with a 503 that would make
/// the client resend events that will be refused again.
async fn produce(state: &AppState, validated: Validated) -> Result<Accepted, ApiError> {
    let Validated {
        events,
        warnings,
        refused,
    } = validated;
    if events.is_empty() {
        record_warnings(state, &warnings).await;
        return Ok(Accepted { events: 0, refused });
    }
    let started = Instant::now();
    match state.producer.send_all(&events, &warnings).await {
        Ok(()) => {
            state
                .metrics
                .produce_duration
                .observe(started.elapsed().as_secs_f64());
            Ok(Accepted {
                events: events.len(),
                refused,
            })
        }
        Err(error) => {
            state.metrics.produce_failures.inc();
            match &error {
                ProduceError::QueueFull => {
                    tracing::warn!(events = events.len(), "kafka queue full; answering 503")
                }
                other => {
                    tracing::warn!(error = %other, cause = ?std::error::Error::source(other), "kafka did not acknowledge; answering 503")
                }
            }
            Err(ApiError::Unavailable {
                retry_after_secs: state.retry_after_secs,
            })
        }
    }
}

/// Writes warnings on their own, without failing the request (see [`produce`]).
async fn record_warnings(state: &AppState, warnings: &[IngestWarning]) {
    if warnings.is_empty() {
        return;
    }
    if let Err(error) = state.producer.send_all(&[], warnings).await {
        state.metrics.warnings_lost.inc_by(warnings.len() as u64);
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        tracing::warn!(%error, ?cause, warnings = warnings.len(), "ingestion warnings were not written to Kafka");
    }
}

/// Segment's `{"success": true}`, and, when events were refused on their own, how many were
/// accepted and which were refused (our extension; Segment's clients read only the status).
fn segment_success(Accepted { events, refused }: Accepted) -> Response {
    let body = if refused.is_empty() {
        json!({"success": true})
    } else {
        json!({"success": true, "accepted": events, "refused": refused})
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The answer to a request, `success` building it when it stored its events, counted in the
/// request metrics by route and status.
fn respond(
    state: &AppState,
    route: &'static str,
    result: Result<Accepted, ApiError>,
    events_in_request: usize,
    success: impl FnOnce(Accepted) -> Response,
) -> Response {
    let response = match result {
        Ok(accepted) => {
            state.metrics.events_accepted.inc_by(accepted.events as u64);
            success(accepted)
        }
        Err(error) => {
            if !matches!(error, ApiError::Unavailable { .. }) {
                state
                    .metrics
                    .events_rejected
                    .inc_by(events_in_request.max(1) as u64);
            }
            error.into_response()
        }
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The event type of a single-event route: Segment's `/v1/track` or analytics.js's `/v1/t`.
fn route_kind(segment: &str) -> Option<EventKind> {
    let short = match segment {
        "t" => Some(EventKind::Track),
        "p" => Some(EventKind::Page),
        "s" => Some(EventKind::Screen),
        "i" => Some(EventKind::Identify),
        "a" => Some(EventKind::Alias),
        "g" => Some(EventKind::Group),
        _ => None,
    };
    short.or_else(|| EventKind::parse(segment))
}

/// The write key is the Basic-auth user (Segment's convention) or `writeKey` in the body.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    body_key: Option<&Value>,
) -> Result<Arc<Tenant>, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .map(|credentials| credentials.split(':').next().unwrap_or_default().to_owned());
    let key = from_header.or_else(|| body_key.and_then(Value::as_str).map(str::to_owned));
    key.and_then(|key| state.tenants.by_write_key(&key).cloned())
        .ok_or(ApiError::Unauthorized)
}

fn request_meta<'a>(
    state: &'a AppState,
    tenant: &'a Tenant,
    headers: &'a HeaderMap,
    extensions: &Extensions,
) -> RequestMeta<'a> {
    // Every line of a header, as one list: a proxy may add a line instead of extending one.
    let all_lines = |name: &str| {
        let lines: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        (!lines.is_empty()).then(|| lines.join(","))
    };
    let forwarded = || {
        all_lines("forwarded")
            .and_then(|header| address::client_of_forwarded(&header))
            .or_else(|| {
                all_lines("x-forwarded-for").and_then(|chain| address::client_of_chain(&chain))
            })
    };
    let peer = || {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    };
    let client_ip = if state.trust_forwarded_for {
        forwarded().or_else(peer)
    } else {
        peer()
    };
    RequestMeta {
        tenant,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        client_ip,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok()),
        enricher: &state.enricher,
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let state_for_check = state.clone();
    let check = tokio::task::spawn_blocking(move || {
        state_for_check
            .producer
            .check_reachable(Duration::from_secs(2))
    })
    .await;
    // Redis only decides quotas, which fall back to local buckets: it is reported, and never
    // makes the gateway unready.
    let redis = match state.rate_limiter.redis_connected().await {
        Some(true) => "connected",
        Some(false) => "unreachable: quotas are enforced per process",
        None => "not configured",
    };
    match check {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(json!({"ready": true, "kafka": "ok", "redis": redis})),
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: kafka unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"ready": false, "kafka": error.to_string(), "redis": redis})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "readiness check panicked");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"ready": false})),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
