//! Every error the API can answer, turned into a response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::segment::FieldIssue;

/// An API failure. `Display` is the client-facing message; internals are logged, not leaked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body exceeds the request limit.
    #[error("request body exceeds {limit} bytes")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// One event exceeds the event limit (single-event calls).
    #[error("event exceeds {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A batch holds more events than allowed.
    #[error("batch holds {count} events; at most {limit} are accepted per request")]
    BatchTooLarge {
        /// Events in the batch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The body's `Content-Encoding` is not one the gateway reads.
    #[error("Content-Encoding {0:?} is not supported; send gzip, deflate or identity")]
    UnsupportedEncoding(String),
    /// The body does not decompress as its `Content-Encoding` says.
    #[error("body is not valid {encoding} data: {reason}")]
    InvalidEncoding {
        /// The declared encoding.
        encoding: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// The body is not the JSON shape the route expects.
    #[error("body is not valid JSON for this route: {0}")]
    InvalidJson(String),
    /// A single event failed validation.
    #[error("event is invalid")]
    InvalidEvent(Vec<FieldIssue>),
    /// No write key, or one that belongs to no tenant.
    #[error("missing or unknown write key (send it as the Basic auth user or as writeKey)")]
    Unauthorized,
    /// A Plausible event for a domain no tenant has.
    #[error("no site has the domain {0:?} (a tenant's `domains` in the tenants file)")]
    UnknownDomain(String),
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// The route exists, not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The tenant is over its quota; nothing of the request was accepted.
    #[error(
        "over the quota of {events_per_sec} events/s (burst {burst}); retry after {retry_after_secs} s"
    )]
    RateLimited {
        /// Sustained events per second allowed.
        events_per_sec: f64,
        /// Events allowed at once.
        burst: u32,
        /// Seconds until the request would pass.
        retry_after_secs: u64,
    },
    /// Kafka did not acknowledge the events; the client must retry.
    #[error("events could not be stored durably right now; retry later")]
    Unavailable {
        /// Seconds the client should wait.
        retry_after_secs: u64,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::RequestTooLarge { .. }
            | ApiError::EventTooLarge { .. }
            | ApiError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson(_)
            | ApiError::InvalidEvent(_)
            | ApiError::UnknownDomain(_)
            | ApiError::InvalidEncoding { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::UnsupportedEncoding(_) => "unsupported_encoding",
            ApiError::InvalidEncoding { .. } => "invalid_encoding",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::Unauthorized => "unauthorized",
            ApiError::UnknownDomain(_) => "unknown_domain",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::InvalidEvent(issues) = &self {
            error["details"] = json!(issues);
        }
        let mut response = (self.status(), Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unavailable { retry_after_secs }
            | ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            }
            _ => {}
        }
        response
    }
}
