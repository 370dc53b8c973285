//! Query parameters, validated into a typed request; every mistake names its parameter.

use std::collections::HashMap;

use crate::error::ApiError;
use crate::queries::Step;

/// A half-open time range `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start, inclusive.
    pub from: i64,
    /// End, exclusive.
    pub to: i64,
}

/// Bucket size of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

/// Optional filters on events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// A page view's location: a page's path, or a screen's name.
    pub path: Option<String>,
    /// Track event name.
    pub event: Option<String>,
    /// Campaign source.
    pub utm_source: Option<String>,
}

impl Filters {
    /// Whether no filter is set (pre-aggregated tables answer only unfiltered questions).
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.event.is_none() && self.utm_source.is_none()
    }
}

const MAX_RANGE_SECS: i64 = 366 * 24 * 3600;
const KNOWN: [&str; 14] = [
    "timezone",
    "bots",
    "exclude",
    "breakdown",
    "from",
    "to",
    "interval",
    "metric",
    "limit",
    "path",
    "event",
    "utm_source",
    "steps",
    "window",
];
const MAX_STEPS: usize = 8;
const MAX_WINDOW_SECS: u32 = 30 * 24 * 3600;

/// The REST endpoints, for their parameter sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/overview`.
    Overview,
    /// `/api/timeseries`.
    Timeseries,
    /// `/api/top/{kind}`.
    Top,
    /// `/api/funnel`.
    Funnel,
    /// `/api/retention`.
    Retention,
    /// `/api/persons/{person_id}/sessions`.
    PersonSessions,
    /// `/api/progress`.
    Progress,
}

/// The range, zone, bots and filters every report takes.
const REPORT: [&str; 7] = [
    "from",
    "to",
    "timezone",
    "bots",
    "path",
    "event",
    "utm_source",
];

impl Endpoint {
    /// The parameters it takes.
    pub fn parameters(self) -> Vec<&'static str> {
        let extra: &[&str] = match self {
            Endpoint::Overview | Endpoint::Retention => &[],
            Endpoint::Timeseries => &["interval", "metric"],
            Endpoint::Top => &["limit"],
            Endpoint::Funnel => &["steps", "window", "exclude", "breakdown"],
            Endpoint::PersonSessions => return vec!["from", "to", "limit"],
            Endpoint::Progress => return Vec::new(),
        };
        REPORT.iter().chain(extra).copied().collect()
    }
}

/// Parsed parameters of any endpoint.
#[derive(Debug, Clone)]
pub struct Params {
    raw: HashMap<String, String>,
    now: i64,
}

impl Params {
    /// Refuses parameters no endpoint knows (a typo must not silently widen a query).
    pub fn new(raw: HashMap<String, String>, now: i64) -> Result<Params, ApiError> {
        if let Some(unknown) = raw.keys().find(|key| !KNOWN.contains(&key.as_str())) {
            return Err(ApiError::BadParameter {
                parameter: unknown.clone(),
                message: "unknown parameter".into(),
            });
        }
        Ok(Params { raw, now })
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.raw.get(name) else {
            return Ok(None);
        };
        if let Ok(seconds) = text.parse::<i64>() {
            return Ok(Some(seconds));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|time| Some(time.timestamp()))
            .map_err(|_| ApiError::BadParameter {
                parameter: name.into(),
                message: "must be Unix seconds or an RFC 3339 time like 2024-05-01T00:00:00Z"
                    .into(),
            })
    }

    /// `from`/`to`, defaulting to the last 24 hours.
    pub fn range(&self) -> Result<Range, ApiError> {
        let to = self.time("to")?.unwrap_or(self.now);
        let from = self.time("from")?.unwrap_or(to - 24 * 3600);
        if from >= to {
            return Err(ApiError::BadParameter {
                parameter: "from".into(),
                message: "must be before `to`".into(),
            });
        }
        if to - from > MAX_RANGE_SECS {
            return Err(ApiError::BadParameter {
                parameter: "from".into(),
                message: "the range may span at most 366 days".into(),
            });
        }
        if from < 0 || to > i64::from(u32::MAX) {
            return Err(ApiError::BadParameter {
                parameter: "from".into(),
                message: "outside the supported time range".into(),
            });
        }
        Ok(Range { from, to })
    }

    /// `interval`: `minute`, `hour` (default) or `day`.
    pub fn interval(&self) -> Result<Interval, ApiError> {
        match self.raw.get("interval").map(String::as_str) {
            None | Some("hour") => Ok(Interval::Hour),
            Some("minute") => Ok(Interval::Minute),
            Some("day") => Ok(Interval::Day),
            Some(_) => Err(ApiError::BadParameter {
                parameter: "interval".into(),
                message: "must be minute, hour or day".into(),
            }),
        }
    }

    /// `limit`: 1 to 1000, default 10.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.raw.get("limit") {
            None => Ok(10),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::BadParameter {
                    parameter: "limit".into(),
                    message: "must be an integer from 1 to 1000".into(),
                }),
        }
    }

    /// `metric` as one of `allowed`, `(name, value)` pairs (the first is the default).
    pub fn metric<T: Copy>(
        &self,
        allowed: &[(&'static str, T)],
    ) -> Result<(&'static str, T), ApiError> {
        let text = self.raw.get("metric").map_or(allowed[0].0, String::as_str);
        allowed
            .iter()
            .find(|(name, _)| *name == text)
            .copied()
            .ok_or_else(|| ApiError::BadParameter {
                parameter: "metric".into(),
                message: format!(
                    "must be one of {}",
                    allowed
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// `steps`: 2 to 8 funnel steps, comma-separated, each `page:<path>` or `event:<name>`.
    pub fn steps(&self) -> Result<Vec<Step>, ApiError> {
        let bad = |message: &str| ApiError::BadParameter {
            parameter: "steps".into(),
            message: message.into(),
        };
        let text = self
            .raw
            .get("steps")
            .ok_or_else(|| bad("required: e.g. steps=page:/pricing,event:Signed Up"))?;
        let steps = Params::step_list(text).map_err(|message| bad(&message))?;
        if !(2..=MAX_STEPS).contains(&steps.len()) {
            return Err(bad(&format!("a funnel has 2 to {MAX_STEPS} steps")));
        }
        Ok(steps)
    }

    /// `exclude`: funnel exclusion steps, as `steps` (none by default).
    pub fn exclusions(&self) -> Result<Vec<Step>, ApiError> {
        match self.raw.get("exclude").filter(|text| !text.is_empty()) {
            None => Ok(Vec::new()),
            Some(text) => Params::step_list(text).map_err(|message| ApiError::BadParameter {
                parameter: "exclude".into(),
                message,
            }),
        }
    }

    /// `breakdown`: a dimension as Stats API v2 names it (`event:page`, `visit:utm_source`…).
    pub fn breakdown(
        &self,
        range_secs: i64,
    ) -> Result<Option<crate::query::model::Dimension>, ApiError> {
        let Some(name) = self.raw.get("breakdown").filter(|text| !text.is_empty()) else {
            return Ok(None);
        };
        match crate::query::model::Dimension::parse(name, range_secs) {
            Some(dimension) => Ok(Some(dimension)),
            None => Err(ApiError::BadParameter {
                parameter: "breakdown".into(),
                message: format!(
                    "{name:?} is not a dimension (e.g. event:page, visit:utm_source, time:day)"
                ),
            }),
        }
    }

    fn step_list(text: &str) -> Result<Vec<Step>, String> {
        text.split(',')
            .map(|step| match step.trim().split_once(':') {
                Some(("page", path)) if !path.is_empty() => Ok(Step::Page(path.to_owned())),
                Some(("event", name)) if !name.is_empty() => Ok(Step::Event(name.to_owned())),
                _ => Err(format!("{step:?} is not page:<path> or event:<name>")),
            })
            .collect()
    }

    /// `window`: seconds from a funnel's first step to its last, 1 to 30 days; default 1 day.
    pub fn window_secs(&self) -> Result<u32, ApiError> {
        match self.raw.get("window") {
            None => Ok(24 * 3600),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_WINDOW_SECS).contains(n))
                .ok_or_else(|| ApiError::BadParameter {
                    parameter: "window".into(),
                    message: format!("must be seconds from 1 to {MAX_WINDOW_SECS}"),
                }),
        }
    }

    /// Refuses a parameter that is known but means nothing to this endpoint (`steps` on the
    /// overview): silently ignoring it would answer another question than the one asked.
    pub fn only(&self, endpoint: Endpoint) -> Result<(), ApiError> {
        let allowed = endpoint.parameters();
        match self.raw.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(ApiError::BadParameter {
                parameter: key.clone(),
                message: format!(
                    "not a parameter of this endpoint (it takes {})",
                    allowed.join(", ")
                ),
            }),
            None => Ok(()),
        }
    }

    /// `bots=include` counts the events flagged `is_bot` (left out by default).
    pub fn include_bots(&self) -> Result<bool, ApiError> {
        match self.raw.get("bots").map(String::as_str) {
            None | Some("exclude") => Ok(false),
            Some("include") => Ok(true),
            Some(_) => Err(ApiError::BadParameter {
                parameter: "bots".into(),
                message: "must be include or exclude".into(),
            }),
        }
    }

    /// `timezone`: an IANA zone for local days and hours; default the tenant's.
    pub fn zone(&self, tenant_zone: &str) -> Result<chrono_tz::Tz, ApiError> {
        let name = self.raw.get("timezone").map_or(tenant_zone, String::as_str);
        name.parse().map_err(|_| ApiError::BadParameter {
            parameter: "timezone".into(),
            message: format!("{name:?} is not an IANA time zone (e.g. America/New_York)"),
        })
    }

    /// The event filters.
    pub fn filters(&self) -> Filters {
        let get = |name: &str| {
            self.raw
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        Filters {
            path: get("path"),
            event: get("event"),
            utm_source: get("utm_source"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<Params, ApiError> {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            1_700_000_000,
        )
    }

    fn bad(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::BadParameter { parameter, .. }) => parameter,
            other => panic!("expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_formats() {
        let p = params(&[]).unwrap();
        assert_eq!(
            p.range().unwrap(),
            Range {
                from: 1_700_000_000 - 86_400,
                to: 1_700_000_000
            }
        );
        assert_eq!(p.interval().unwrap(), Interval::Hour);
        assert_eq!(p.limit().unwrap(), 10);
        let p = params(&[("from", "2023-11-14T00:00:00Z"), ("to", "1699999999")]).unwrap();
        assert_eq!(
            p.range().unwrap(),
            Range {
                from: 1_699_920_000,
                to: 1_699_999_999
            }
        );
    }

    #[test]
    fn every_mistake_names_its_parameter() {
        assert_eq!(
            bad(params(&[("tenant", "other")])),
            "tenant",
            "a tenant can never come from the query"
        );
        assert_eq!(
            bad(params(&[("from", "yesterday")]).unwrap().range()),
            "from"
        );
        assert_eq!(
            bad(params(&[("from", "10"), ("to", "5")]).unwrap().range()),
            "from"
        );
        assert_eq!(
            bad(params(&[("interval", "week")]).unwrap().interval()),
            "interval"
        );
        assert_eq!(bad(params(&[("limit", "0")]).unwrap().limit()), "limit");
        assert_eq!(
            bad(params(&[("metric", "x")]).unwrap().metric(&[("a", 1)])),
            "metric"
        );
    }
}
