//! Enrichment: what the gateway adds to each event once, at ingestion, so that every later
//! reader (the engine, the query gateway, a user's own SQL) groups by the same values.
//!
//! - [`agent`]: browser, OS and device type from the user agent (uap-core's rules);
//! - [`geo`]: country, region and city of the client address, looked up *before* the
//!   address is anonymised (an anonymised address still has its country, often not its city);
//! - [`acquisition`]: source and channel from the referrer, the UTM fields and ad click ids.
//!
//! The gateway is the one place that sees the whole address, so geography has to happen here;
//! the rest happens here too so that an event in Kafka is complete (a replay, a second engine
//! or a rescale reads the same values back).

pub mod acquisition;
pub mod agent;
pub mod geo;

use std::net::IpAddr;
use std::path::PathBuf;

use schemas::Event;

/// uap-core 0.18.0's rules, vendored (see `data/uap-core/SOURCE.md`).
pub const DEFAULT_UA_REGEXES: &str = include_str!("../../data/uap-core/regexes.yaml");

/// Where the enrichment data comes from.
#[derive(Debug, Clone, Default)]
pub struct EnrichConfig {
    /// A uap-core `regexes.yaml` to use instead of the vendored one.
    pub ua_regexes: Option<PathBuf>,
    /// MaxMind DB files, tried in order (e.g. an IPv4 and an IPv6 file); none: no geography.
    pub geoip: Vec<PathBuf>,
}

/// Why enrichment could not be set up (the gateway refuses to start rather than run blind).
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The user-agent rules file could not be read.
    #[error("cannot read the user-agent rules {path}: {source}")]
    ReadRules {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The user-agent rules do not compile.
    #[error(transparent)]
    Rules(#[from] agent::AgentRulesError),
    /// A GeoIP file could not be opened.
    #[error(transparent)]
    Geo(#[from] geo::GeoError),
    /// A vendored referrer list does not parse.
    #[error(transparent)]
    Referrers(#[from] acquisition::ReferrersError),
}

/// Everything enrichment needs, built once at start (compiling the agent rules takes about a
/// second) and shared by every request.
#[derive(Debug)]
pub struct Enricher {
    agents: agent::Agents,
    geo: geo::Geo,
    referrers: acquisition::Referrers,
}

impl Enricher {
    /// Loads the rules and databases `config` names.
    pub fn load(config: &EnrichConfig) -> Result<Enricher, EnrichError> {
        let agents = match &config.ua_regexes {
            None => agent::Agents::new(DEFAULT_UA_REGEXES)?,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| EnrichError::ReadRules {
                        path: path.clone(),
                        source,
                    })?;
                agent::Agents::new(&text)?
            }
        };
        Ok(Enricher {
            agents,
            geo: geo::Geo::open(&config.geoip)?,
            referrers: acquisition::Referrers::new()?,
        })
    }

    /// Whether a GeoIP database is loaded.
    pub fn has_geo(&self) -> bool {
        !self.geo.is_empty()
    }

    /// Fills `event`'s client, location and acquisition, and flags it a bot's when its agent
    /// is on the `isbot` crate's crawler list or uap-core calls its device a crawler.
    /// `client_ip` is the address as received, before anonymisation; `own_domains` are the
    /// tenant's sites (referrals from them are not sources).
    pub fn enrich(&self, event: &mut Event, client_ip: Option<IpAddr>, own_domains: &[String]) {
        event.client = self.agents.client(&event.user_agent);
        event.location = self.geo.locate(client_ip);
        event.acquisition = self
            .referrers
            .classify(&event.page, &event.campaign, own_domains);
        event.is_bot = agent::is_crawler(&event.user_agent) || event.client.device == agent::BOT;
    }
}
