//! Every error the API can answer, turned into a response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    /// The tenant asked too often.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request is accepted again.
        retry_after_secs: u64,
    },
    /// ClickHouse failed; details are logged.
    #[error("the analytics store is unavailable; retry later")]
    Unavailable,
}

/// What an error answer carries, for the OpenAPI document: `{"error": {...}}`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// `bad_parameter`, `unauthorized`, `not_found`, `unavailable` or `rate_limited`.
    code: String,
    /// What is wrong, in words.
    message: String,
    /// With `bad_parameter`: the parameter.
    parameter: Option<String>,
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
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut error = json!({"code": code, "message": self.to_string()});
        if let ApiError::BadParameter { parameter, .. } = &self {
            error["parameter"] = json!(parameter);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
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
