//! Plausible's Stats APIs over the query model: `POST /api/v2/query` ([`v2`]) and the
//! legacy v1 `GET /api/v1/stats/*` ([`v1`]), so that Plausible's API clients, connectors and
//! MCP servers work unchanged against this gateway. Shapes follow Plausible's public
//! reference (plausible.io/docs/stats-api, stats-api-v1) and its source
//! (`lib/plausible/stats/`, `lib/plausible_web/controllers/api/`).

pub mod v1;
pub mod v2;

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use schemas::tenants::Tenant;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::query::model::Metric;
use crate::query::run::Value;

/// An error in Plausible's shape: `{"error": "<message>"}`, the status as Plausible answers.
#[derive(Debug)]
pub struct PlausibleError(pub StatusCode, pub String);

impl PlausibleError {
    /// A 400 naming the request field (`#/metrics/0: …` for v2, plain for v1).
    pub fn bad(message: impl Into<String>) -> PlausibleError {
        PlausibleError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for PlausibleError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ApiError> for PlausibleError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::BadParameter { parameter, message } => {
                PlausibleError::bad(format!("#/{parameter}: {message}"))
            }
            other => {
                let status = other.status();
                PlausibleError(status, other.to_string())
            }
        }
    }
}

/// The tenant of the read key, which must own `site_id` (its id or one of its domains).
/// Plausible answers an unknown site exactly as a wrong key, so that a key cannot probe
/// which sites exist.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    site_id: Option<&str>,
) -> Result<Arc<Tenant>, PlausibleError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            PlausibleError(
                StatusCode::UNAUTHORIZED,
                "Missing API key. Please use a valid Plausible API key as a Bearer Token.".into(),
            )
        })?;
    let invalid = || {
        PlausibleError(
            StatusCode::UNAUTHORIZED,
            "Invalid API key or site ID. Please make sure you're using a valid API key with \
             access to the site you've requested."
                .into(),
        )
    };
    let (tenant, _) = crate::tenant_of_key(state, key).ok_or_else(invalid)?;
    let site_id = site_id.filter(|site| !site.is_empty()).ok_or_else(|| {
        PlausibleError::bad(
            "Missing site ID. Please provide the required site_id parameter with your request.",
        )
    })?;
    // Domains compare as the ingest side compares them (`www.` and case ignored).
    let site = schemas::tenants::site_domain(site_id);
    if tenant.id == site_id
        || tenant
            .domains
            .iter()
            .any(|domain| schemas::tenants::site_domain(domain) == site)
    {
        Ok(tenant)
    } else {
        Err(invalid())
    }
}

/// The zone of a request: its own `timezone`, else the tenant's.
pub fn zone(tenant: &Tenant, requested: Option<&str>) -> Result<Tz, PlausibleError> {
    match requested {
        Some(name) => name.parse().map_err(|_| {
            PlausibleError::bad(format!(
                "#/timezone: Invalid time zone {name:?}: expected an IANA name like Europe/Berlin"
            ))
        }),
        None => tenant.time_zone.parse().map_err(|_| {
            PlausibleError::bad(format!(
                "the tenant's time_zone {:?} is not an IANA zone",
                tenant.time_zone
            ))
        }),
    }
}

/// A metric's value as Plausible writes it ([`crate::query::run::reported`]): counts, bounce
/// rate and visit duration as integers, the other rates as decimals, an undefined one `null`.
pub fn value_json(metric: Metric, value: Value) -> serde_json::Value {
    match (metric, value) {
        (_, Value::Count(count)) => json!(count),
        (Metric::Percentage | Metric::ViewsPerVisit | Metric::ConversionRate, _) => {
            json!(crate::query::run::reported(metric, value))
        }
        _ => json!(crate::query::run::reported(metric, value).map(|number| number as i64)),
    }
}

/// Changes as Plausible writes them: the conversion rate's in points with a decimal, every
/// other an integer.
pub fn changes_json(metrics: &[Metric], changes: &[Option<f64>]) -> Vec<serde_json::Value> {
    metrics
        .iter()
        .zip(changes)
        .map(|(metric, change)| match (metric, change) {
            (_, None) => serde_json::Value::Null,
            (Metric::ConversionRate, Some(change)) => json!(change),
            (_, Some(change)) => json!(*change as i64),
        })
        .collect()
}
