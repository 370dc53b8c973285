//! Tenants and their keys, loaded from a TOML file:
//!
//! ```toml
//! [[tenants]]
//! id = "acme"
//! write_keys = ["wk_acme_1"]
//! read_keys = ["rk_acme_1"]
//! share_keys = ["sk_acme_1"]   # optional: read-only dashboard links (no Ask, no persons)
//! admin_keys = ["ak_acme_1"]   # optional: erasure, suppression and export of persons
//! anonymize_ip = true   # default
//! rate_limit = { events_per_sec = 500, burst = 5000 }   # optional; none: unlimited
//! time_zone = "Europe/Berlin"   # optional; default UTC
//! trailing_slash = "keep"   # or "strip": `/pricing/` and `/pricing` are one page; default keep
//! domains = ["acme.example"]   # optional: its sites, also accepted as Plausible's `site_id`
//! goals = [{ event = "Signed Up" }, { page = "/blog/**", name = "Read the blog" }]   # optional
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

/// One tenant's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Stable tenant id: the first column of every ClickHouse table.
    pub id: String,
    /// Keys that may send events (public: they ship in browser code).
    pub write_keys: Vec<String>,
    /// Keys that may query (secret; used by the query gateway).
    #[serde(default)]
    pub read_keys: Vec<String>,
    /// Keys of read-only share links: they open the tenant's dashboard and its aggregate
    /// numbers only (no Ask, no person's sessions). Revoked by removing them from the file
    /// and sending the query gateway SIGHUP.
    #[serde(default)]
    pub share_keys: Vec<String>,
    /// Keys that may erase a person, lift a suppression and export a person's data (GDPR
    /// Art. 15 and 17), besides everything a read key may do. Kept apart from read keys so
    /// that a dashboard's key cannot delete data.
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Zero the host part of client IPs before they are stored (GDPR default). A tenant with
    /// its own legal basis may opt out.
    #[serde(default = "default_true")]
    pub anonymize_ip: bool,
    /// Events the gateway accepts from the tenant, as a token bucket; `None`: unlimited.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// IANA time zone of the tenant's reports, e.g. `Europe/Berlin` (default `UTC`): Ask's
    /// "today" and "per day" are local days of this zone. Validated by the query gateway.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Whether `/pricing/` and `/pricing` are one page (`strip`) or two (`keep`, the default:
    /// a site may serve different pages at both, and keeping is what Plausible does).
    #[serde(default)]
    pub trailing_slash: TrailingSlash,
    /// The tenant's sites' domains (`acme.example`): Plausible's API clients name a site by
    /// its domain (`site_id`), its tracker sends events by domain (`/api/event`), and a
    /// referrer on one of them (or a subdomain) is the site itself, not a source. A domain
    /// belongs to one tenant.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Conversions the tenant counts (Plausible's goals): the `event:goal` dimension and
    /// filter and the `conversion_rate` metric read them.
    #[serde(default)]
    pub goals: Vec<Goal>,
    /// Days the tenant's per-person rows (raw events, sessions, visitor hours) are kept, at
    /// least 1; `None` (the default): kept for good. The per-minute rollups, which hold no
    /// person's id, are kept for good either way, so a range that reaches further back gets
    /// their metrics only (see [`crate::retention`]).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// A goal: a custom event by name, or a page view of a path pattern (`*` and `**` match any
/// characters, the whole path must match, as Plausible's page goals).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// What reports call it; default the event's name, or `Visit <page>` (Plausible's label).
    #[serde(default)]
    pub name: Option<String>,
    /// A track call of this name.
    #[serde(default)]
    pub event: Option<String>,
    /// A page view (or screen) whose location matches this pattern.
    #[serde(default)]
    pub page: Option<String>,
}

impl Tenant {
    /// Where the tenant's raw rows start at `now_secs` (Unix seconds): `None` when they are
    /// kept for good ([`crate::retention::horizon_secs`]).
    pub fn raw_from(&self, now_secs: i64) -> Option<i64> {
        self.retention_days
            .map(|days| crate::retention::horizon_secs(days, now_secs))
    }
}

impl Goal {
    /// The name reports use.
    pub fn label(&self) -> String {
        match (&self.name, &self.event, &self.page) {
            (Some(name), _, _) => name.clone(),
            (None, Some(event), _) => event.clone(),
            (None, None, Some(page)) => format!("Visit {page}"),
            (None, None, None) => String::new(),
        }
    }
}

/// What the gateway does with a trailing slash of a page's path (never the root `/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrailingSlash {
    /// Paths are stored as sent.
    #[default]
    Keep,
    /// `/a/` is stored as `/a`.
    Strip,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// A token bucket, counted in events (not requests): `burst` events may arrive at once, and
/// the bucket refills at `events_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained events per second (> 0).
    pub events_per_sec: f64,
    /// Largest number of events accepted at once (>= 1). A request larger than the burst is
    /// accepted when the bucket is full and charged in full (the bucket goes into debt).
    pub burst: u32,
}

fn default_true() -> bool {
    true
}

/// Why a tenants file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The file could not be read.
    #[error("cannot read tenants file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid tenants file")]
    Parse(#[from] toml::de::Error),
    /// A semantic problem, e.g. a key shared by two tenants.
    #[error("invalid tenants file: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    tenants: Vec<Tenant>,
}

/// Key lookup: write keys (ingestion) and read keys (queries) to their tenant.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    all: Vec<Arc<Tenant>>,
    by_write_key: HashMap<String, Arc<Tenant>>,
    by_read_key: HashMap<String, Arc<Tenant>>,
    by_share_key: HashMap<String, Arc<Tenant>>,
    by_admin_key: HashMap<String, Arc<Tenant>>,
    by_domain: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    /// Loads and checks a tenants file.
    pub fn load(path: &Path) -> Result<Tenants, TenantsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TenantsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tenants::parse(&text)
    }

    /// Parses and checks tenants from TOML text.
    pub fn parse(text: &str) -> Result<Tenants, TenantsError> {
        let file: TenantsFile = toml::from_str(text)?;
        Tenants::new(file.tenants)
    }

    /// Builds the lookup, refusing ambiguous configurations.
    pub fn new(tenants: Vec<Tenant>) -> Result<Tenants, TenantsError> {
        let mut ids = std::collections::HashSet::new();
        let mut by_write_key = HashMap::new();
        let mut by_read_key = HashMap::new();
        let mut all = Vec::new();
        for tenant in tenants {
            if !crate::ddl::is_valid_identifier(&tenant.id) {
                return Err(TenantsError::Invalid(format!(
                    "tenant id {:?} must be letters, digits and underscores",
                    tenant.id
                )));
            }
            if !ids.insert(tenant.id.clone()) {
                return Err(TenantsError::Invalid(format!(
                    "tenant {:?} is defined twice",
                    tenant.id
                )));
            }
            if let Some(limit) = tenant.rate_limit
                && !(limit.events_per_sec.is_finite()
                    && limit.events_per_sec > 0.0
                    && limit.burst >= 1)
            {
                return Err(TenantsError::Invalid(format!(
                    "rate_limit of tenant {:?} needs events_per_sec > 0 and burst >= 1",
                    tenant.id
                )));
            }
            if tenant.retention_days == Some(0) {
                return Err(TenantsError::Invalid(format!(
                    "retention_days of tenant {:?} must be at least 1",
                    tenant.id
                )));
            }
            let mut labels = std::collections::HashSet::new();
            for goal in &tenant.goals {
                if goal.event.is_some() == goal.page.is_some() || !labels.insert(goal.label()) {
                    return Err(TenantsError::Invalid(format!(
                        "goal {:?} of tenant {:?} needs exactly one of event or page, and a name no other goal has",
                        goal.label(),
                        tenant.id
                    )));
                }
            }
            let tenant = Arc::new(tenant);
            all.push(tenant.clone());
            for key in &tenant.write_keys {
                if key.is_empty() {
                    return Err(TenantsError::Invalid(format!(
                        "tenant {:?} has an empty write key",
                        tenant.id
                    )));
                }
                if by_write_key.insert(key.clone(), tenant.clone()).is_some() {
                    return Err(TenantsError::Invalid(format!(
                        "write key of tenant {:?} is used twice",
                        tenant.id
                    )));
                }
            }
        }
        let mut by_domain = HashMap::new();
        for tenant in &all {
            for domain in &tenant.domains {
                let key = site_domain(domain);
                let other = by_domain
                    .insert(key.clone(), tenant.clone())
                    .filter(|holder: &Arc<Tenant>| holder.id != tenant.id);
                if key.is_empty() || other.is_some() {
                    return Err(TenantsError::Invalid(format!(
                        "domain {domain:?} of tenant {:?} is empty or another tenant's too",
                        tenant.id
                    )));
                }
            }
        }
        // Read keys after all write keys, so that a read key equal to any tenant's write key
        // is caught: write keys ship in browser code, a read key must never be one.
        for tenant in &all {
            for key in &tenant.read_keys {
                if key.is_empty()
                    || by_write_key.contains_key(key)
                    || by_read_key.insert(key.clone(), tenant.clone()).is_some()
                {
                    return Err(TenantsError::Invalid(format!(
                        "read key of tenant {:?} is empty, reused, or also a write key",
                        tenant.id
                    )));
                }
            }
        }
        let mut by_share_key = HashMap::new();
        for tenant in &all {
            for key in &tenant.share_keys {
                if key.is_empty()
                    || by_write_key.contains_key(key)
                    || by_read_key.contains_key(key)
                    || by_share_key.insert(key.clone(), tenant.clone()).is_some()
                {
                    return Err(TenantsError::Invalid(format!(
                        "share key of tenant {:?} is empty, reused, or also a write or read key",
                        tenant.id
                    )));
                }
            }
        }
        let mut by_admin_key = HashMap::new();
        for tenant in &all {
            for key in &tenant.admin_keys {
                if key.is_empty()
                    || by_write_key.contains_key(key)
                    || by_read_key.contains_key(key)
                    || by_share_key.contains_key(key)
                    || by_admin_key.insert(key.clone(), tenant.clone()).is_some()
                {
                    return Err(TenantsError::Invalid(format!(
                        "admin key of tenant {:?} is empty, reused, or also another kind of key",
                        tenant.id
                    )));
                }
            }
        }
        Ok(Tenants {
            all,
            by_write_key,
            by_read_key,
            by_share_key,
            by_admin_key,
            by_domain,
        })
    }

    /// Every tenant, in file order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.all.iter()
    }

    /// The tenant a write key belongs to.
    pub fn by_write_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_write_key.get(key)
    }

    /// The tenant a read key belongs to.
    pub fn by_read_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_read_key.get(key)
    }

    /// The tenant a share key belongs to.
    pub fn by_share_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_share_key.get(key)
    }

    /// The tenant of an admin key.
    pub fn by_admin_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_admin_key.get(key)
    }

    /// The tenant whose `domains` hold `domain` (compared as [`site_domain`] writes both):
    /// how Plausible's Events API, which sends a site's domain and no key, finds its tenant.
    pub fn by_domain(&self, domain: &str) -> Option<&Arc<Tenant>> {
        self.by_domain.get(&site_domain(domain))
    }
}

/// A site's domain as Plausible compares them: trimmed, lowercased, without `www.`.
pub fn site_domain(domain: &str) -> String {
    let domain = domain.trim().to_ascii_lowercase();
    domain.strip_prefix("www.").unwrap_or(&domain).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let tenants = Tenants::parse(
            r#"
            [[tenants]]
            id = "acme"
            write_keys = ["k1", "k2"]
            [[tenants]]
            id = "globex"
            write_keys = ["k3"]
            anonymize_ip = false
            "#,
        )
        .unwrap();
        assert_eq!(tenants.by_write_key("k2").unwrap().id, "acme");
        assert!(tenants.by_write_key("k2").unwrap().anonymize_ip);
        assert!(!tenants.by_write_key("k3").unwrap().anonymize_ip);
        assert!(tenants.by_write_key("nope").is_none());
        assert!(
            tenants.by_read_key("k1").is_none(),
            "write keys do not read"
        );
    }

    #[test]
    fn read_keys_are_separate_from_write_keys() {
        let tenants =
            Tenants::parse("[[tenants]]\nid='a'\nwrite_keys=['w']\nread_keys=['r']\n").unwrap();
        assert_eq!(tenants.by_read_key("r").unwrap().id, "a");
        let reused = "[[tenants]]\nid='a'\nwrite_keys=['k']\nread_keys=['k']\n";
        assert!(matches!(
            Tenants::parse(reused),
            Err(TenantsError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_ambiguity_and_typos() {
        let shared =
            "[[tenants]]\nid='a'\nwrite_keys=['k']\n[[tenants]]\nid='b'\nwrite_keys=['k']\n";
        assert!(matches!(
            Tenants::parse(shared),
            Err(TenantsError::Invalid(_))
        ));
        let twice =
            "[[tenants]]\nid='a'\nwrite_keys=['k']\n[[tenants]]\nid='a'\nwrite_keys=['j']\n";
        assert!(matches!(
            Tenants::parse(twice),
            Err(TenantsError::Invalid(_))
        ));
        let typo = "[[tenants]]\nid='a'\nwrite_key=['k']\n";
        assert!(matches!(Tenants::parse(typo), Err(TenantsError::Parse(_))));
        let bad_id = "[[tenants]]\nid='a b'\nwrite_keys=['k']\n";
        assert!(matches!(
            Tenants::parse(bad_id),
            Err(TenantsError::Invalid(_))
        ));
    }

    #[test]
    fn rate_limits_are_optional_and_checked() {
        let tenants = Tenants::parse(
            "[[tenants]]\nid='a'\nwrite_keys=['k']\nrate_limit={events_per_sec=2.5, burst=10}\n\
             [[tenants]]\nid='b'\nwrite_keys=['j']\n",
        )
        .unwrap();
        assert_eq!(
            tenants.by_write_key("k").unwrap().rate_limit,
            Some(RateLimit {
                events_per_sec: 2.5,
                burst: 10
            })
        );
        assert_eq!(tenants.by_write_key("j").unwrap().rate_limit, None);
        for bad in [
            "events_per_sec=0, burst=10",
            "events_per_sec=1, burst=0",
            "events_per_sec=1",
        ] {
            let text = format!("[[tenants]]\nid='a'\nwrite_keys=['k']\nrate_limit={{{bad}}}\n");
            assert!(Tenants::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_goal_is_an_event_or_a_page_with_a_name_of_its_own() {
        let tenants = Tenants::parse(
            "[[tenants]]\nid = \"a\"\nwrite_keys = [\"w\"]\ngoals = [{ event = \"Signed Up\" }, { page = \"/blog/**\" }]\n",
        )
        .unwrap();
        let labels: Vec<String> = tenants
            .all()
            .next()
            .unwrap()
            .goals
            .iter()
            .map(Goal::label)
            .collect();
        assert_eq!(labels, ["Signed Up", "Visit /blog/**"]);
        for goals in [
            "[{ event = \"x\", page = \"/x\" }]",
            "[{ name = \"only a name\" }]",
            "[{ event = \"x\" }, { event = \"y\", name = \"x\" }]",
        ] {
            let text = format!("[[tenants]]\nid = \"a\"\nwrite_keys = [\"w\"]\ngoals = {goals}\n");
            assert!(Tenants::parse(&text).is_err(), "{goals}");
        }
    }

    #[test]
    fn tenants_are_found_by_any_spelling_of_their_domains() {
        let tenants = Tenants::parse(
            "[[tenants]]\nid='a'\nwrite_keys=['wa']\ndomains=['acme.example', 'www.acme.example']\n\
             [[tenants]]\nid='b'\nwrite_keys=['wb']\ndomains=['Beta.Example']\n",
        )
        .unwrap();
        assert_eq!(tenants.by_domain("WWW.Acme.example").unwrap().id, "a");
        assert_eq!(tenants.by_domain(" beta.example ").unwrap().id, "b");
        assert!(tenants.by_domain("other.example").is_none());
        let shared = Tenants::parse(
            "[[tenants]]\nid='a'\nwrite_keys=['wa']\ndomains=['acme.example']\n\
             [[tenants]]\nid='b'\nwrite_keys=['wb']\ndomains=['www.acme.example']\n",
        );
        assert!(shared.is_err(), "one domain, two tenants");
    }
}
