//! Every error the API can answer, turned into a response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API failure. `Display` is the client-facing message; internals are logged, not leaked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is invalid.
    #[error("{parameter}: {message}")]
    BadParameter {
        /// The parameter.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
    /// No read key, or one that belongs to no tenant.
    #[error("missing or unknown read key (send `Authorization: Bearer <read key>`)")]
    Unauthorized,
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// The key is valid but may not do this (a share key asking a question).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The tenant asked too often.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request is accepted again.
        retry_after_secs: u64,
    },
    /// ClickHouse failed; details are logged.
    #[error("the analytics store is unavailable; retry later")]
    Unavailable,
    /// A feature this gateway was not configured for.
    #[error("{0}")]
    NotConfigured(&'static str),
}

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_parameter`, `unauthorized`, `forbidden`, `not_found`, `unavailable`,
    /// `not_configured` or `rate_limited`.
    pub code: &'static str,
    /// What is wrong, in words.
    pub message: String,
    /// With `bad_parameter` only: the parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadParameter { .. } => (StatusCode::BAD_REQUEST, "bad_parameter"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                parameter: match &self {
                    ApiError::BadParameter { parameter, .. } => Some(parameter.clone()),
                    _ => None,
                },
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(error: clickhouse::error::Error) -> Self {
        tracing::error!(%error, "ClickHouse query failed");
        ApiError::Unavailable
    }
}
