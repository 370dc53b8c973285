//! Query parameters. Each group of parameters is one typed struct, and an endpoint is the list
//! of its groups ([`Endpoint::parameters`]): the same structs validate a request (serde; an
//! unknown or irrelevant parameter is refused by name) and write the endpoint's parameters in
//! the OpenAPI document ([`crate::openapi`], through utoipa's `IntoParams`), so the two cannot
//! drift apart.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};

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

/// A time parameter: Unix seconds, or an RFC 3339 time such as `2024-05-01T00:00:00Z`
/// (documented as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Time, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(seconds) = text.parse::<i64>() {
            return Ok(Time(seconds));
        }
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|time| Time(time.timestamp()))
            .map_err(|_| {
                D::Error::custom(
                    "must be Unix seconds or an RFC 3339 time like 2024-05-01T00:00:00Z",
                )
            })
    }
}

/// Whether events flagged `is_bot` at ingestion are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bots {
    /// Left out (the default).
    #[default]
    Exclude,
    /// Counted.
    Include,
}

/// Bucket size of a time series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One minute.
    Minute,
    /// One hour (the default).
    #[default]
    Hour,
    /// One (local) day.
    Day,
}

/// The metric of `/api/timeseries`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SeriesMetric {
    /// Page and screen views (the default).
    #[default]
    PageViews,
    /// Activity events.
    Events,
    /// Distinct visitors per bucket.
    Visitors,
    /// Visits that started in the bucket.
    Sessions,
}

/// The time range every endpoint but progress takes.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Start of the range, inclusive: Unix seconds or RFC 3339. Default: `to` minus 24 hours.
    /// A range spans at most 366 days.
    #[param(value_type = Option<String>)]
    pub from: Option<Time>,
    /// End of the range, exclusive: Unix seconds or RFC 3339. Default: now.
    #[param(value_type = Option<String>)]
    pub to: Option<Time>,
}

/// The zone, bots and filters every report takes (besides its range).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// IANA zone for local days, weeks and hours (e.g. `Asia/Kolkata`). Default: the
    /// tenant's.
    pub timezone: Option<String>,
    /// `include` counts the events flagged `is_bot` at ingestion. Default: `exclude`.
    #[param(inline)]
    pub bots: Option<Bots>,
    /// Only page views of this path (or screen name), as `event:page` in the Stats API:
    /// event metrics count the matching events, visit metrics the visits that contain one.
    pub path: Option<String>,
    /// Only events of this name (`pageview` for page views), as `event:name`.
    pub event: Option<String>,
    /// Only visits from this campaign source (`visit:utm_source`: whole visits).
    pub utm_source: Option<String>,
}

/// `/api/timeseries`' own parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Bucket size. Default: `hour`.
    #[param(inline)]
    pub interval: Option<Interval>,
    /// What each bucket counts. Default: `page_views`.
    #[param(inline)]
    pub metric: Option<SeriesMetric>,
}

/// A list's length.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitParams {
    /// Entries (list items, or a person's sessions, newest first), 1 to 1000. Default: 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// `/api/funnel`'s own parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelParams {
    /// 2 to 8 steps, comma-separated, each `page:<path>` or `event:<name>`
    /// (e.g. `page:/pricing,event:Signed Up`).
    #[param(required = true)]
    pub steps: Option<String>,
    /// Seconds from a person's first step to the last, 1 to 2,592,000 (30 days). Default:
    /// 86,400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 2_592_000)]
    pub window: Option<String>,
    /// Exclusion steps, as `steps`: a person with one between two consecutive steps is
    /// counted as excluded, not converted.
    pub exclude: Option<String>,
    /// A dimension as the Stats API v2 names it (`event:page`, `visit:utm_source`,
    /// `time:day`…): the funnel again per value of it on each person's first step.
    pub breakdown: Option<String>,
}

const MAX_RANGE_SECS: i64 = 366 * 24 * 3600;
const MAX_LIMIT: u32 = 1000;
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

impl Endpoint {
    /// Every REST endpoint, in the order of [`crate::API_PATHS`].
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Overview,
        Endpoint::Timeseries,
        Endpoint::Top,
        Endpoint::Funnel,
        Endpoint::Retention,
        Endpoint::PersonSessions,
        Endpoint::Progress,
    ];

    /// Its query parameters, from the structs that parse them.
    pub fn parameters(self) -> Vec<Parameter> {
        let query = || Some(ParameterIn::Query);
        let report = || {
            [
                RangeParams::into_params(query),
                ReportParams::into_params(query),
            ]
            .concat()
        };
        match self {
            Endpoint::Overview | Endpoint::Retention => report(),
            Endpoint::Timeseries => [report(), SeriesParams::into_params(query)].concat(),
            Endpoint::Top => [report(), LimitParams::into_params(query)].concat(),
            Endpoint::Funnel => [report(), FunnelParams::into_params(query)].concat(),
            Endpoint::PersonSessions => [
                RangeParams::into_params(query),
                LimitParams::into_params(query),
            ]
            .concat(),
            Endpoint::Progress => Vec::new(),
        }
    }
}

/// A request's query string, read into typed parameter groups.
#[derive(Debug, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
    now: i64,
}

impl Params {
    /// The query string's `name=value` pairs (percent-decoded), read at `now` (Unix seconds).
    pub fn new(pairs: Vec<(String, String)>, now: i64) -> Params {
        Params { pairs, now }
    }

    /// The instant the request is read at (Unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Refuses a parameter that `endpoint` does not take: a typo (`form=`) must not silently
    /// widen a query, and `steps` on the overview would answer another question than the
    /// one asked. A tenant never comes from the query string.
    pub fn only(&self, endpoint: Endpoint) -> Result<(), ApiError> {
        let allowed: Vec<String> = endpoint
            .parameters()
            .into_iter()
            .map(|parameter| parameter.name)
            .collect();
        match self.pairs.iter().find(|(name, _)| !allowed.contains(name)) {
            Some((name, _)) => Err(ApiError::BadParameter {
                parameter: name.clone(),
                message: if allowed.is_empty() {
                    "this endpoint takes no parameters".into()
                } else {
                    format!(
                        "not a parameter of this endpoint (it takes {})",
                        allowed.join(", ")
                    )
                },
            }),
            None => Ok(()),
        }
    }

    /// One group of parameters; a value of the wrong form is refused naming its parameter
    /// (a repeated parameter too).
    pub fn group<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        for (index, (name, _)) in self.pairs.iter().enumerate() {
            if self.pairs[..index]
                .iter()
                .any(|(earlier, _)| earlier == name)
            {
                return Err(ApiError::BadParameter {
                    parameter: name.clone(),
                    message: "given more than once".into(),
                });
            }
        }
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.pairs)
            .finish();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let parameter = error.path().to_string();
            ApiError::BadParameter {
                parameter: if parameter == "." {
                    "query".into()
                } else {
                    parameter
                },
                message: error.into_inner().to_string(),
            }
        })
    }

    /// `[from, to)` ([`RangeParams`]), defaulting to the 24 hours before `to`, and `to` to
    /// now.
    pub fn range(&self) -> Result<Range, ApiError> {
        let RangeParams { from, to } = self.group()?;
        let to = to.map_or(self.now, |time| time.0);
        let from = from.map_or(to - 24 * 3600, |time| time.0);
        let bad = |message: &str| ApiError::BadParameter {
            parameter: "from".into(),
            message: message.into(),
        };
        if from >= to {
            return Err(bad("must be before `to`"));
        }
        if to - from > MAX_RANGE_SECS {
            return Err(bad("the range may span at most 366 days"));
        }
        if from < 0 || to > i64::from(u32::MAX) {
            return Err(bad("outside the supported time range"));
        }
        Ok(Range { from, to })
    }
}

/// A whole number in `range`, or `default` when absent; anything else is refused with what
/// the parameter must be.
fn whole_number(
    text: Option<&str>,
    parameter: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
    unit: &str,
) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ApiError::BadParameter {
            parameter: parameter.into(),
            message: format!("must be {unit} from {} to {}", range.start(), range.end()),
        })
}

/// `limit`: 1 to 1000, default 10.
pub fn limit(limit: Option<&str>) -> Result<u32, ApiError> {
    whole_number(limit, "limit", 1..=MAX_LIMIT, 10, "an integer")
}

impl ReportParams {
    /// `timezone`, or the tenant's zone.
    pub fn zone(&self, tenant_zone: &str) -> Result<chrono_tz::Tz, ApiError> {
        let name = self.timezone.as_deref().unwrap_or(tenant_zone);
        name.parse().map_err(|_| ApiError::BadParameter {
            parameter: "timezone".into(),
            message: format!("{name:?} is not an IANA time zone (e.g. America/New_York)"),
        })
    }

    /// A filter parameter's value; an empty one filters nothing.
    pub fn filter(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|value| !value.is_empty())
    }
}

impl FunnelParams {
    /// `steps`: 2 to 8 funnel steps.
    pub fn steps(&self) -> Result<Vec<Step>, ApiError> {
        let bad = |message: &str| ApiError::BadParameter {
            parameter: "steps".into(),
            message: message.into(),
        };
        let text = self
            .steps
            .as_deref()
            .ok_or_else(|| bad("required: e.g. steps=page:/pricing,event:Signed Up"))?;
        let steps = step_list(text).map_err(|message| bad(&message))?;
        if !(2..=MAX_STEPS).contains(&steps.len()) {
            return Err(bad(&format!("a funnel has 2 to {MAX_STEPS} steps")));
        }
        Ok(steps)
    }

    /// `exclude`: exclusion steps (none by default).
    pub fn exclusions(&self) -> Result<Vec<Step>, ApiError> {
        match self.exclude.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(Vec::new()),
            Some(text) => step_list(text).map_err(|message| ApiError::BadParameter {
                parameter: "exclude".into(),
                message,
            }),
        }
    }

    /// `breakdown`, as a dimension of the query model.
    pub fn breakdown(
        &self,
        range_secs: i64,
    ) -> Result<Option<crate::query::model::Dimension>, ApiError> {
        let Some(name) = self.breakdown.as_deref().filter(|text| !text.is_empty()) else {
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

    /// `window`, seconds; default one day.
    pub fn window_secs(&self) -> Result<u32, ApiError> {
        whole_number(
            self.window.as_deref(),
            "window",
            1..=MAX_WINDOW_SECS,
            24 * 3600,
            "seconds",
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
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

    fn report(pairs: &[(&str, &str)]) -> Result<Range, ApiError> {
        params(pairs).range()
    }

    #[test]
    fn defaults_and_formats() {
        assert_eq!(
            report(&[]).unwrap(),
            Range {
                from: 1_700_000_000 - 86_400,
                to: 1_700_000_000
            }
        );
        let series: SeriesParams = params(&[]).group().unwrap();
        assert_eq!(series.interval.unwrap_or_default(), Interval::Hour);
        assert_eq!(limit(None).unwrap(), 10);
        assert_eq!(
            report(&[("from", "2023-11-14T00:00:00Z"), ("to", "1699999999")]).unwrap(),
            Range {
                from: 1_699_920_000,
                to: 1_699_999_999
            }
        );
    }

    #[test]
    fn every_mistake_names_its_parameter() {
        for endpoint in Endpoint::ALL {
            assert_eq!(
                bad(params(&[("tenant", "other")]).only(endpoint)),
                "tenant",
                "a tenant can never come from the query"
            );
        }
        assert_eq!(
            bad(params(&[("steps", "page:/a")]).only(Endpoint::Overview)),
            "steps"
        );
        assert_eq!(bad(report(&[("from", "yesterday")])), "from");
        assert_eq!(bad(report(&[("from", "10"), ("to", "5")])), "from");
        assert_eq!(
            bad(params(&[("interval", "week")]).group::<SeriesParams>()),
            "interval"
        );
        assert_eq!(
            bad(params(&[("metric", "x")]).group::<SeriesParams>()),
            "metric"
        );
        for wrong in ["ten", "0", "-1", "1001"] {
            match limit(Some(wrong)) {
                Err(ApiError::BadParameter { parameter, message }) => {
                    assert_eq!(parameter, "limit");
                    assert_eq!(message, "must be an integer from 1 to 1000");
                }
                other => panic!("limit={wrong}: {other:?}"),
            }
        }
        assert_eq!(
            bad(params(&[("path", "/a"), ("path", "/b")]).group::<ReportParams>()),
            "path",
            "a repeated parameter is refused, not one of its values picked"
        );
    }

    #[test]
    fn the_parameters_an_endpoint_takes_are_the_fields_that_parse_them() {
        let names = |endpoint: Endpoint| -> Vec<String> {
            endpoint
                .parameters()
                .into_iter()
                .map(|parameter| parameter.name)
                .collect()
        };
        assert_eq!(
            names(Endpoint::Timeseries),
            [
                "from",
                "to",
                "timezone",
                "bots",
                "path",
                "event",
                "utm_source",
                "interval",
                "metric"
            ]
        );
        assert!(names(Endpoint::Progress).is_empty());
        assert_eq!(names(Endpoint::PersonSessions), ["from", "to", "limit"]);
    }
}
