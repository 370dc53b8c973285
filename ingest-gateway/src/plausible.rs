//! Plausible's Events API (`POST /api/event`), so that a site running Plausible's tracker
//! switches by changing its endpoint.
//!
//! The tracker posts one JSON object per event as `text/plain` (no CORS preflight) with short
//! keys; the server API and older clients use long ones. Both are read (Plausible's own
//! reading: `lib/plausible/ingestion/request.ex`):
//!
//! | short | long | meaning |
//! |---|---|---|
//! | `n` | `name` | `pageview`, `engagement`, or a custom event's name (required) |
//! | `u` | `url` | the page's URL (required) |
//! | `d` | `domain` | the site's domain, or several comma-separated (default: the URL's host) |
//! | `r` | `referrer` | `document.referrer` |
//! | `p`, `m` | `props`, `meta` | custom properties, an object or its JSON text |
//! | `$` | `revenue` | `{amount, currency}` |
//! | `i` | `interactive` | `false`: the event does not count as the visitor's activity |
//! | `h` | `hashMode` | `1`: the URL's fragment is part of the page (hash-based routing) |
//! | `e`, `sd` | | an `engagement` event's engaged time (ms) and scroll depth (%) |
//!
//! Each event becomes a Segment call and goes through the same validation and enrichment as
//! the Segment routes: `pageview` a `page` call, anything else a `track` call. An
//! `engagement` ping, and any event sent with `interactive: false`, is stored flagged
//! non-interactive: it is not activity (it would otherwise extend visits and turn bounces
//! into engaged visits; see `schemas::definitions`). Revenue and engagement figures become
//! properties (`revenue_amount`, `revenue_currency`, `engagement_ms`, `scroll_depth`).
//!
//! The tracker sends no visitor id: the gateway derives one as Plausible does (see
//! [`crate::salt`]), and the Segment routes keep Segment's `anonymousId`.

use serde_json::{Map, Value, json};

use crate::segment::FieldIssue;

/// One Plausible event, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PlausibleEvent {
    /// The event's name.
    pub name: String,
    /// The page's URL.
    pub url: String,
    /// The sites' domains, as sent (`www.` and case are the tenant lookup's business).
    pub domains: Vec<String>,
    /// `document.referrer`, when there was one.
    pub referrer: Option<String>,
    /// Custom properties (and revenue and engagement figures), as Segment `properties`.
    pub properties: Map<String, Value>,
    /// False for `engagement` and `interactive: false` events.
    pub interactive: bool,
    /// Whether the URL's fragment belongs to the page's path.
    pub hash_mode: bool,
}

/// The engagement ping's name (`n`).
pub const ENGAGEMENT: &str = "engagement";

impl PlausibleEvent {
    /// Reads a request body. Errors: each field that makes the event unusable.
    pub fn read(object: &Map<String, Value>) -> Result<PlausibleEvent, Vec<FieldIssue>> {
        let field = |short: &str, long: &str| object.get(short).or_else(|| object.get(long));
        let mut issues = Vec::new();
        let name = read_name(field("n", "name")).unwrap_or_else(|issue| {
            issues.push(issue);
            String::new()
        });
        let url = read_url(field("u", "url")).unwrap_or_else(|issue| {
            issues.push(issue);
            String::new()
        });
        let domains = read_domains(field("d", "domain"), &url);
        if domains.is_empty() && !url.is_empty() {
            issues.push(FieldIssue::new(
                "d",
                "the site's domain (d or domain) is required",
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let referrer = match field("r", "referrer") {
            Some(Value::String(referrer)) if !referrer.is_empty() => Some(referrer.clone()),
            _ => None,
        };
        let mut properties = custom_properties(object);
        if let Some(Value::Object(revenue)) = field("$", "revenue") {
            for (key, target) in [
                ("amount", "revenue_amount"),
                ("currency", "revenue_currency"),
            ] {
                if let Some(value) = revenue.get(key).filter(|value| !value.is_null()) {
                    properties.insert(target.to_owned(), value.clone());
                }
            }
        }
        let engagement = name == ENGAGEMENT;
        if engagement {
            for (key, target) in [("e", "engagement_ms"), ("sd", "scroll_depth")] {
                if let Some(value) = object.get(key).filter(|value| value.is_number()) {
                    properties.insert(target.to_owned(), value.clone());
                }
            }
        }
        let interactive = !engagement && field("i", "interactive") != Some(&Value::Bool(false));
        let hash_mode = matches!(field("h", "hashMode"), Some(Value::Number(n)) if n.as_i64() == Some(1))
            || field("h", "hashMode") == Some(&Value::Bool(true));
        Ok(PlausibleEvent {
            name,
            url,
            domains,
            referrer,
            properties,
            interactive,
            hash_mode,
        })
    }

    /// The Segment call of this event by `anonymous_id`, for `segment::normalize`. A page
    /// view carries its page in `properties` as analytics.js's page calls do, over any custom
    /// property of the same name (`url`, `referrer`), which would otherwise replace it.
    pub fn to_segment(
        &self,
        anonymous_id: &str,
        tracker_version: Option<&Value>,
    ) -> Map<String, Value> {
        let referrer = self.referrer.clone().unwrap_or_default();
        let page = json!({"url": self.url, "referrer": referrer});
        let version = match tracker_version {
            Some(Value::String(version)) => version.clone(),
            Some(Value::Number(version)) => version.to_string(),
            _ => String::new(),
        };
        let library = json!({"name": "plausible-tracker", "version": version});
        let mut call = json!({
            "anonymousId": anonymous_id,
            "properties": self.properties,
            "context": {"page": page, "library": library},
        });
        if self.name == "pageview" {
            call["type"] = json!("page");
            call["properties"]["url"] = json!(self.url);
            call["properties"]["referrer"] = json!(referrer);
        } else {
            call["type"] = json!("track");
            call["event"] = json!(self.name);
        }
        match call {
            Value::Object(call) => call,
            _ => Map::new(),
        }
    }

    /// What the Segment reading cannot know: the flag, and the fragment of a hash-routed page
    /// (`/app#/settings`), which Segment paths never keep.
    pub fn finish(&self, event: &mut schemas::Event) {
        event.non_interactive = !self.interactive;
        if self.hash_mode
            && let Some(fragment) = url::Url::parse(&self.url)
                .ok()
                .and_then(|parsed| parsed.fragment().map(str::to_owned))
            && !fragment.is_empty()
        {
            event.page.path = format!("{}#{fragment}", event.page.path);
        }
    }
}

fn read_name(sent: Option<&Value>) -> Result<String, FieldIssue> {
    match sent {
        Some(Value::String(name)) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
        _ => Err(FieldIssue::new(
            "n",
            "the event name (n or name) is required",
        )),
    }
}

fn read_url(sent: Option<&Value>) -> Result<String, FieldIssue> {
    let Some(Value::String(url)) = sent else {
        return Err(FieldIssue::new("u", "the page URL (u or url) is required"));
    };
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() != "data" => Ok(url.clone()),
        Ok(_) => Err(FieldIssue::new("u", "a data: URL is not a page")),
        Err(error) => Err(FieldIssue::new("u", format!("is not a URL: {error}"))),
    }
}

/// The comma-separated domains sent, else the URL's host (Plausible's default).
fn read_domains(sent: Option<&Value>, url: &str) -> Vec<String> {
    match sent {
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|domain| !domain.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => url::Url::parse(url)
            .ok()
            .and_then(|parsed| parsed.host_str().map(str::to_owned))
            .into_iter()
            .collect(),
    }
}

/// `p`/`props`/`m`/`meta`: an object or its JSON text; empty, null, list and object values are
/// dropped, as Plausible drops them.
fn custom_properties(object: &Map<String, Value>) -> Map<String, Value> {
    let raw = ["p", "props", "m", "meta"]
        .iter()
        .find_map(|key| object.get(*key));
    let parsed = match raw {
        Some(Value::Object(props)) => props.clone(),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(props)) => props,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    parsed
        .into_iter()
        .filter(|(_, value)| match value {
            Value::Null | Value::Array(_) | Value::Object(_) => false,
            Value::String(text) => !text.is_empty(),
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: Value) -> Result<PlausibleEvent, Vec<FieldIssue>> {
        PlausibleEvent::read(body.as_object().unwrap())
    }

    #[test]
    fn short_and_long_keys_read_alike() {
        let short = read(
            json!({"n": "Signup", "u": "https://acme.example/p", "d": "acme.example",
            "r": "https://t.co/x", "p": {"plan": "pro", "empty": "", "list": [1]}, "v": 36}),
        )
        .unwrap();
        let long = read(
            json!({"name": "Signup", "url": "https://acme.example/p", "domain": "acme.example",
            "referrer": "https://t.co/x", "props": "{\"plan\": \"pro\", \"none\": null}"}),
        )
        .unwrap();
        assert_eq!(short, long);
        assert_eq!(
            short.properties,
            json!({"plan": "pro"}).as_object().unwrap().clone()
        );
        assert!(short.interactive);
    }

    #[test]
    fn engagement_and_non_interactive_events_are_flagged() {
        let ping = read(json!({"n": "engagement", "u": "https://a.example/", "d": "a.example", "e": 5230, "sd": 80})).unwrap();
        assert!(!ping.interactive);
        assert_eq!(ping.properties["engagement_ms"], json!(5230));
        let autoplay =
            read(json!({"n": "autoplay", "u": "https://a.example/", "i": false})).unwrap();
        assert!(!autoplay.interactive);
        assert_eq!(
            autoplay.domains,
            ["a.example"],
            "the URL's host when no domain is sent"
        );
        let bought = read(
            json!({"n": "Purchase", "u": "https://a.example/", "d": "a.example,b.example",
            "$": {"amount": 15.99, "currency": "USD"}}),
        )
        .unwrap();
        assert_eq!(bought.domains, ["a.example", "b.example"]);
        assert_eq!(bought.properties["revenue_currency"], json!("USD"));
    }

    #[test]
    fn what_is_missing_is_named() {
        let issues = read(json!({"d": "a.example"})).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|issue| issue.field.as_str()).collect();
        assert_eq!(fields, ["n", "u"]);
        let issues = read(json!({"n": "pageview", "u": "data:text/html,hi"})).unwrap_err();
        assert_eq!(issues[0].field, "u");
    }

    #[test]
    fn hash_routes_keep_their_fragment() {
        let routed =
            read(json!({"n": "pageview", "u": "https://a.example/app#/settings", "h": 1})).unwrap();
        let mut event = schemas::Event::new("t", "m", schemas::EventKind::Page, 0);
        event.page.path = "/app".into();
        routed.finish(&mut event);
        assert_eq!(event.page.path, "/app#/settings");
        let plain = read(json!({"n": "pageview", "u": "https://a.example/app#top"})).unwrap();
        let mut event = schemas::Event::new("t", "m", schemas::EventKind::Page, 0);
        event.page.path = "/app".into();
        plain.finish(&mut event);
        assert_eq!(event.page.path, "/app");
    }
}
