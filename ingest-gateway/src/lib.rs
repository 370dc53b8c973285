//! The ingest gateway: Segment-compatible HTTP endpoints that validate events, resolve the
//! tenant from the write key, and hand the events durably to Kafka.
//!
//! [`router`] builds the whole HTTP surface from an [`AppState`], so tests drive it in-process
//! exactly as `main` serves it.
#![warn(missing_docs)]

pub mod body;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod ratelimit;
pub mod segment;

use std::net::{IpAddr, SocketAddr};
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
use schemas::{Event, EventKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use error::ApiError;
use kafka::{EventProducer, ProduceError};
use metrics::{Metrics, RequestLabels};
use schemas::tenants::{Tenant, Tenants};
use segment::{BatchDefaults, FieldIssue, Limits, RequestMeta};

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
        let body = body::read(body, &headers, state.limits.max_request_bytes).await?;
        let body = body::repair_lone_surrogates(&body);
        if body.len() > state.limits.max_event_bytes {
            return Err(ApiError::EventTooLarge {
                limit: state.limits.max_event_bytes,
            });
        }
        let object: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|error| ApiError::InvalidJson(error.to_string()))?;
        let tenant = authenticate(&state, &headers, object.get("writeKey"))?;
        let meta = request_meta(&state, &tenant, &headers, &extensions);
        let event = segment::normalize(Some(kind), &object, &BatchDefaults::default(), &meta)
            .map_err(ApiError::InvalidEvent)?;
        enforce_quota(&state, &tenant, 1).await?;
        produce(&state, &[event]).await
    }
    .await;
    respond(&state, kind.as_str(), result, 1)
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
        let context = match &envelope.context {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Object(context)) => Some(context),
            Some(_) => {
                return Err(ApiError::InvalidJson(
                    "the batch's context must be an object".to_owned(),
                ));
            }
        };
        let defaults = BatchDefaults {
            sent_at: envelope.sent_at.as_ref(),
            context,
        };
        let events = normalize_batch(&envelope.batch, &defaults, &meta, state.limits)?;
        enforce_quota(&state, &tenant, events.len()).await?;
        produce(&state, &events).await
    }
    .await;
    respond(&state, "batch", result, events_in_request)
}

/// Validates every event; the batch is accepted whole or not at all, with every bad index
/// reported, so a client can fix the batch and resend it without duplicating the good events.
fn normalize_batch(
    raw_events: &[&RawValue],
    defaults: &BatchDefaults<'_>,
    meta: &RequestMeta<'_>,
    limits: Limits,
) -> Result<Vec<Event>, ApiError> {
    let mut events = Vec::with_capacity(raw_events.len());
    let mut issues = Vec::new();
    for (index, raw) in raw_events.iter().enumerate() {
        let located = |mut issue: FieldIssue| {
            issue.index = Some(index);
            issue
        };
        if raw.get().len() > limits.max_event_bytes {
            issues.push(located(FieldIssue {
                index: None,
                field: String::new(),
                message: format!("event exceeds {} bytes", limits.max_event_bytes),
            }));
            continue;
        }
        let object = match serde_json::from_str::<Map<String, Value>>(raw.get()) {
            Ok(object) => object,
            Err(_) => {
                issues.push(located(FieldIssue {
                    index: None,
                    field: String::new(),
                    message: "must be a JSON object".to_owned(),
                }));
                continue;
            }
        };
        match segment::normalize(None, &object, defaults, meta) {
            Ok(event) => events.push(event),
            Err(event_issues) => issues.extend(event_issues.into_iter().map(located)),
        }
    }
    if issues.is_empty() {
        Ok(events)
    } else {
        Err(ApiError::InvalidBatch(issues))
    }
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

async fn produce(state: &AppState, events: &[Event]) -> Result<usize, ApiError> {
    let started = Instant::now();
    match state.producer.send_all(events).await {
        Ok(()) => {
            state
                .metrics
                .produce_duration
                .observe(started.elapsed().as_secs_f64());
            Ok(events.len())
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

fn respond(
    state: &AppState,
    route: &'static str,
    result: Result<usize, ApiError>,
    events_in_request: usize,
) -> Response {
    let response = match result {
        Ok(accepted) => {
            state.metrics.events_accepted.inc_by(accepted as u64);
            (StatusCode::OK, axum::Json(json!({"success": true}))).into_response()
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
    state: &AppState,
    tenant: &'a Tenant,
    headers: &'a HeaderMap,
    extensions: &Extensions,
) -> RequestMeta<'a> {
    let forwarded = || {
        headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok())
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
