//! The tenant's own names that a question may mention, read through the query model itself
//! (a v2 breakdown per dimension over the last 92 days), so that a name the translator accepts
//! is one the model can filter on, and a name the tenant never had is refused. A name not
//! seen in those days is refused too ("no such name"): a refusal, never a wrong number.

use clickhouse::Client;
use futures_util::future::join_all;
use schemas::tenants::Tenant;
use serde_json::{Map, Value, json};

use crate::ask::typed::TypedQuery;
use crate::query::model::VisitAttribute;

/// Most values read per dimension (most frequent first).
const MAX_VALUES: usize = 300;
/// Most property keys read.
const MAX_PROPERTY_KEYS: u32 = 20;
/// Names are those of the last this many days.
const NAME_DAYS: u64 = 92;

/// Names and values, each list most frequent first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    /// Track events' names (`event:name` without `pageview`).
    pub events: Vec<String>,
    /// Page-view locations (`event:page`: paths, screens' names).
    pub pages: Vec<String>,
    /// Property keys, each with its values.
    pub properties: Vec<(String, Vec<String>)>,
    /// Visit attributes' values (sources, countries, devices, …), empty values left out.
    pub visits: Vec<(VisitAttribute, Vec<String>)>,
    /// The tenant's goals: label, and the event name or page pattern it counts.
    pub goals: Vec<schemas::tenants::Goal>,
}

/// The visit attributes whose values a question may name, in the order a reader expects
/// when two share a value ("Google" is a source before it is a UTM source).
pub(crate) const NAMED_ATTRIBUTES: [VisitAttribute; 14] = [
    VisitAttribute::Source,
    VisitAttribute::Channel,
    VisitAttribute::Country,
    VisitAttribute::City,
    VisitAttribute::Region,
    VisitAttribute::Device,
    VisitAttribute::Browser,
    VisitAttribute::Os,
    VisitAttribute::UtmCampaign,
    VisitAttribute::UtmSource,
    VisitAttribute::UtmMedium,
    VisitAttribute::UtmContent,
    VisitAttribute::UtmTerm,
    VisitAttribute::EntryPage,
];

impl Vocabulary {
    /// Reads `tenant`'s names at `now` (Unix seconds).
    ///
    /// # Errors
    /// [`crate::ask::typed::ExecuteError`] when ClickHouse fails.
    pub async fn read(
        client: &Client,
        tenant: &Tenant,
        now: i64,
    ) -> Result<Vocabulary, crate::ask::typed::ExecuteError> {
        let from = now - i64::try_from(NAME_DAYS).unwrap_or(92) * 86_400;
        let keys =
            crate::queries::property_keys(client, &tenant.id, from, MAX_PROPERTY_KEYS).await?;
        let mut dimensions: Vec<String> = vec!["event:name".into(), "event:page".into()];
        dimensions.extend(keys.iter().map(|key| format!("event:props:{key}")));
        dimensions.extend(
            NAMED_ATTRIBUTES
                .iter()
                .map(|attribute| format!("visit:{}", attribute.name())),
        );
        let lists = join_all(
            dimensions
                .iter()
                .map(|dimension| values(client, tenant, dimension, now)),
        )
        .await;
        let mut lists = lists
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let events = lists
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter(|name| name != "pageview")
            .collect();
        let pages = lists.next().unwrap_or_default();
        let properties = keys.into_iter().zip(lists.by_ref()).collect();
        let visits = NAMED_ATTRIBUTES.into_iter().zip(lists).collect();
        Ok(Vocabulary {
            events,
            pages,
            properties,
            visits,
            goals: tenant.goals.clone(),
        })
    }

    /// The values of a visit attribute.
    pub fn visit_values(&self, attribute: VisitAttribute) -> &[String] {
        self.visits
            .iter()
            .find(|(known, _)| *known == attribute)
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The names a typed query uses that the tenant does not have: filter values with `is` or
    /// `is_not` on events, pages, goals and visit attributes (countries as ISO codes: a
    /// country with no visits is a valid zero), and funnel steps.
    pub fn unknown_names(&self, query: &TypedQuery) -> Vec<String> {
        let mut unknown = Vec::new();
        match query {
            TypedQuery::Query(body) => {
                if let Some(filters) = body.get("filters") {
                    self.walk_filters(filters, &mut unknown);
                }
            }
            TypedQuery::Funnel(spec) => {
                for step in spec.steps.iter().chain(&spec.exclude) {
                    let (dimension, value) = match step.split_once(':') {
                        Some(("page", value)) => ("event:page", value),
                        Some(("event", value)) => ("event:name", value),
                        _ => ("", step.as_str()),
                    };
                    if !self.knows(dimension, value) {
                        unknown.push(format!("{step:?}"));
                    }
                }
            }
            TypedQuery::Retention(_) | TypedQuery::Person(_) => {}
        }
        unknown
    }

    fn walk_filters(&self, filter: &Value, unknown: &mut Vec<String>) {
        let Some(items) = filter.as_array() else {
            return;
        };
        match items.first().and_then(Value::as_str) {
            Some("is" | "is_not") => {
                let dimension = items.get(1).and_then(Value::as_str).unwrap_or_default();
                let values = items
                    .get(2)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for value in values.iter().filter_map(Value::as_str) {
                    if !self.knows(dimension, value) {
                        unknown.push(format!("{dimension} {value:?}"));
                    }
                }
            }
            Some(_) => {
                for item in &items[1..] {
                    self.walk_filters(item, unknown);
                }
            }
            None => {
                for item in items {
                    self.walk_filters(item, unknown);
                }
            }
        }
    }

    /// Whether `value` is one of the tenant's values of `dimension` (dimensions without a
    /// list, like hostnames, are not checked).
    fn knows(&self, dimension: &str, value: &str) -> bool {
        let known = |values: &[String]| values.iter().any(|known| known == value);
        match dimension {
            "event:name" => value == "pageview" || known(&self.events),
            "event:page" => known(&self.pages),
            "event:goal" => self.goals.iter().any(|goal| goal.label() == value),
            "visit:country" => celes::Country::from_alpha2(value).is_ok(),
            "" => false,
            _ => {
                if let Some(key) = dimension.strip_prefix("event:props:") {
                    return self
                        .properties
                        .iter()
                        .find(|(known_key, _)| known_key == key)
                        .is_some_and(|(_, values)| known(values));
                }
                let attribute = dimension.strip_prefix("visit:").and_then(|name| {
                    VisitAttribute::ALL
                        .iter()
                        .find(|(_, known_name)| *known_name == name)
                        .map(|(attribute, _)| *attribute)
                });
                match attribute {
                    Some(attribute) if NAMED_ATTRIBUTES.contains(&attribute) => {
                        known(self.visit_values(attribute))
                    }
                    _ => true,
                }
            }
        }
    }

    /// Every name, for "did you mean" suggestions.
    pub fn all_names(&self) -> impl Iterator<Item = &String> {
        self.events
            .iter()
            .chain(&self.pages)
            .chain(self.properties.iter().flat_map(|(_, values)| values))
            .chain(self.visits.iter().flat_map(|(_, values)| values))
    }
}

/// A dimension's non-empty values over the kept range, most events first.
async fn values(
    client: &Client,
    tenant: &Tenant,
    dimension: &str,
    now: i64,
) -> Result<Vec<String>, crate::ask::typed::ExecuteError> {
    let metric = if dimension.starts_with("visit:") {
        "visits"
    } else {
        "events"
    };
    let mut request = Map::new();
    request.insert("site_id".into(), json!(tenant.id));
    request.insert("metrics".into(), json!([metric]));
    request.insert("dimensions".into(), json!([dimension]));
    request.insert("date_range".into(), recent_days(tenant, now));
    request.insert("pagination".into(), json!({"limit": MAX_VALUES}));
    let response = crate::plausible::v2::execute(client, tenant, &request, now).await?;
    Ok(response["results"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| row["dimensions"][0].as_str())
                .filter(|value| !is_empty_label(value))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// The last [`NAME_DAYS`] local days of the tenant, today included: names read over a whole
/// year cost a large tenant seconds of ClickHouse time per refresh.
fn recent_days(tenant: &Tenant, now: i64) -> Value {
    let zone: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let today = chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .with_timezone(&zone)
        .date_naive();
    let first = today - chrono::Days::new(NAME_DAYS - 1);
    json!([first.to_string(), today.to_string()])
}

/// The labels the model shows for an empty value.
fn is_empty_label(value: &str) -> bool {
    value.is_empty() || matches!(value, "(not set)" | "Direct / None" | "(none)")
}
