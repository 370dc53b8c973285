//! A seeded, reproducible generator of realistic clickstream.
//!
//! Sessions arrive as a Poisson process; a session belongs to a new visitor or a returning one
//! (any visitor ever made, or one with a session in a recent window: see
//! [`GeneratorConfig::return_window_secs`]), browses Zipf-popular pages with exponential think
//! times, sometimes clicks or signs up, and some visitors identify after a session or alias a
//! second device. Arrival order is perturbed the way real networks and mobile clients do it: a
//! few percent of events arrive out of order, some days late, some twice.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Geometric, Zipf};
use schemas::{Campaign, Event, EventKind};
use serde_json::{Value, json};

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Seed: the same seed gives the same events.
    pub seed: u64,
    /// Tenants to spread sessions over.
    pub tenants: Vec<String>,
    /// Distinct pages (Zipf-popular).
    pub pages: usize,
    /// Sessions started per simulated second.
    pub sessions_per_sec: f64,
    /// Mean pause between two events of a session.
    pub mean_think_secs: f64,
    /// Mean page views per session.
    pub mean_pages_per_session: f64,
    /// Share of sessions by a visitor never seen before.
    pub new_visitor_share: f64,
    /// Chance that an anonymous visitor identifies at the end of a session.
    pub identify_share: f64,
    /// Chance that an identified user's session comes from a new device (an alias follows).
    pub new_device_share: f64,
    /// Share of events delivered seconds to minutes late (out of order).
    pub out_of_order_share: f64,
    /// Share of events delivered days late (past the 72-hour lateness horizon: an app that
    /// was offline).
    pub late_share: f64,
    /// Share of events delivered twice (client retries).
    pub duplicate_share: f64,
    /// Share of new visitors on a mobile app: they send `screen` calls instead of `page`.
    pub mobile_share: f64,
    /// Share of identifies sent by a broken integration with a placeholder user id
    /// ("undefined", "null", ...), which must link nothing.
    pub placeholder_share: f64,
    /// Chance that a known user's session starts with a change of user id: `alias` from the
    /// old user id to a new one (Segment's `previousId` is then a user id).
    pub rename_share: f64,
    /// Chance per session of a server-side trait refresh (a CRM sync): an `identify` with
    /// only the user id of a known user, which is not a visit.
    pub crm_sync_share: f64,
    /// Where a returning visitor comes from. `None`: any visitor ever made, equally likely.
    /// The visitors active in any stretch of time then keep growing with the run (each
    /// returning session more likely brings back one not seen for days), so state that a
    /// processor rightly keeps per active visitor grows too. `Some(secs)`: one of the sessions
    /// started in the last `secs` of simulated time, equally likely (a visitor weighted by its
    /// sessions in it), so the visitors active in a stretch longer than the window stop growing
    /// once the window has filled: a stationary stream that keeps bringing new visitors.
    pub return_window_secs: Option<f64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            tenants: vec!["demo".into()],
            pages: 200,
            sessions_per_sec: 5.0,
            mean_think_secs: 40.0,
            mean_pages_per_session: 4.0,
            new_visitor_share: 0.35,
            identify_share: 0.15,
            new_device_share: 0.1,
            out_of_order_share: 0.03,
            late_share: 0.002,
            duplicate_share: 0.005,
            mobile_share: 0.15,
            placeholder_share: 0.05,
            rename_share: 0.03,
            crm_sync_share: 0.05,
            return_window_secs: None,
        }
    }
}

/// A generated event and when it reaches the gateway.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When the event is delivered, Unix ms (>= its event time).
    pub arrival_ms: i64,
    /// The event, with `timestamp_ms` its true event time.
    pub event: Event,
}

struct Visitor {
    tenant: usize,
    anonymous_id: String,
    user_id: Option<String>,
    mobile: bool,
    /// The visitor's browser (or crawler, or app) as its `User-Agent`.
    agent: &'static str,
    /// The visitor's public address, as its browser's requests carry it.
    ip: String,
    /// When its last session started, simulated Unix ms.
    last_session_ms: f64,
}

/// Real user agents with their weights: mostly browsers on desktops, phones and tablets, a
/// few crawlers (which the gateway flags and the engine leaves out of visits).
const WEB_AGENTS: [(&str, u32); 10] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        12,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        5,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.61",
        8,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        20,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
        15,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        4,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        4,
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        2,
    ),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        1,
    ),
];

/// The crawlers at the end of [`WEB_AGENTS`] (a person's second device is never one).
const CRAWLERS: usize = 2;

/// The agent of the mobile app (its screen calls).
const APP_AGENT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";

/// Address blocks of large consumer networks on five continents, as (first octets, weight):
/// visitors get a random address inside one.
const NETWORKS: [([u8; 2], u32); 10] = [
    ([73, 0], 30),    // Comcast, US
    ([99, 224], 6),   // Rogers, CA
    ([91, 0], 10),    // Deutsche Telekom, DE
    ([90, 0], 8),     // Orange, FR
    ([86, 128], 8),   // BT, GB
    ([126, 0], 8),    // SoftBank, JP
    ([117, 192], 10), // BSNL, IN
    ([177, 0], 8),    // Brazil
    ([1, 120], 6),    // Telstra, AU
    ([105, 112], 6),  // Airtel, NG
];

/// Where sessions come from: referrers (empty: direct) with weights.
const REFERRERS: [(&str, u32); 14] = [
    ("", 30),
    ("https://www.google.com/", 25),
    ("https://www.google.co.uk/", 4),
    ("https://www.google.de/", 4),
    ("https://www.bing.com/search?q=shop", 4),
    ("https://duckduckgo.com/", 3),
    ("https://news.ycombinator.com/", 5),
    ("https://t.co/x1y2z3", 4),
    (
        "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example%2F",
        5,
    ),
    ("https://www.linkedin.com/feed/", 3),
    ("https://www.reddit.com/r/shops/", 4),
    ("https://chatgpt.com/", 3),
    ("https://www.youtube.com/watch?v=abc", 3),
    ("https://github.com/example/project", 3),
];

/// Campaigns a fifth of sessions carry: (utm_source, utm_medium, utm_campaign, utm_content, utm_term).
const CAMPAIGNS: [(&str, &str, &str, &str, &str); 4] = [
    ("newsletter", "email", "november", "header-link", ""),
    ("google", "cpc", "spring", "ad-1", "running shoes"),
    ("partner", "affiliate", "launch", "", ""),
    ("facebook", "paid_social", "spring", "carousel", ""),
];

/// One of `choices`, by weight.
fn weighted<T: Copy>(rng: &mut StdRng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (choice, weight) in choices {
        if roll < *weight {
            return *choice;
        }
        roll -= weight;
    }
    choices[0].0
}

/// Generates events session by session.
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    visitors: Vec<Visitor>,
    /// With a return window: the sessions started in it, `(start ms, visitor)`, oldest first.
    recent_sessions: VecDeque<(f64, usize)>,
    clock_ms: f64,
    next_message: u64,
    page_zipf: Zipf<f64>,
    think: Exp<f64>,
    arrivals: Exp<f64>,
    pages_per_session: Geometric,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("config", &self.config)
            .field("visitors", &self.visitors.len())
            .finish_non_exhaustive()
    }
}

/// Why a configuration cannot generate.
#[derive(Debug, thiserror::Error)]
#[error("invalid generator configuration: {0}")]
pub struct GeneratorError(String);

impl Generator {
    /// A generator whose simulated clock starts at `start_ms`.
    pub fn new(config: GeneratorConfig, start_ms: i64) -> Result<Generator, GeneratorError> {
        let invalid = |what: &str| GeneratorError(what.to_owned());
        if config.tenants.is_empty() {
            return Err(invalid("at least one tenant"));
        }
        let page_zipf =
            Zipf::new(config.pages.max(1) as f64, 1.1).map_err(|e| invalid(&e.to_string()))?;
        let think = Exp::new(1.0 / config.mean_think_secs.max(0.001))
            .map_err(|e| invalid(&e.to_string()))?;
        let arrivals =
            Exp::new(config.sessions_per_sec.max(0.001)).map_err(|e| invalid(&e.to_string()))?;
        let pages_per_session = Geometric::new(1.0 / config.mean_pages_per_session.max(1.0))
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Generator {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            visitors: Vec::new(),
            recent_sessions: VecDeque::new(),
            clock_ms: start_ms as f64,
            next_message: 0,
            page_zipf,
            think,
            arrivals,
            pages_per_session,
        })
    }

    /// The simulated clock (Unix ms): every event generated from now on arrives at or after
    /// it.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms as i64
    }

    /// Generates at least `count` events (whole sessions), sorted by arrival time.
    pub fn generate(&mut self, count: usize) -> Vec<Arrival> {
        let mut out = Vec::with_capacity(count + 64);
        while out.len() < count {
            self.session(&mut out);
        }
        out.sort_by_key(|arrival| arrival.arrival_ms);
        out
    }

    /// A UUID (version 4 in form), as the gateway and Segment's and RudderStack's libraries
    /// send: the seed, mixed, in its high half and a counter in its low half, so a run's ids
    /// are distinct and the same on every run, and the random stream is not consumed. The
    /// version takes 4 bits of the high half: mixed first (an odd multiplier is a bijection),
    /// seeds that differ in a few bits (runs seeded by the clock) differ in the rest too.
    fn message_id(&mut self) -> String {
        self.next_message += 1;
        let mixed = self.config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mixed.to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_message.to_be_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    fn pick_visitor(&mut self) -> usize {
        let returning =
            !self.visitors.is_empty() && !self.rng.random_bool(self.config.new_visitor_share);
        if returning {
            // (Skewing returns towards a few regulars makes them return every few seconds,
            // merging all their visits into one session.)
            match self.config.return_window_secs {
                None => return self.rng.random_range(0..self.visitors.len()),
                Some(window_secs) => {
                    let since = self.clock_ms - window_secs * 1000.0;
                    while self
                        .recent_sessions
                        .front()
                        .is_some_and(|&(started, _)| started < since)
                    {
                        self.recent_sessions.pop_front();
                    }
                    if !self.recent_sessions.is_empty() {
                        let pick = self.rng.random_range(0..self.recent_sessions.len());
                        return self.recent_sessions[pick].1;
                    }
                }
            }
        }
        let tenant = self.rng.random_range(0..self.config.tenants.len());
        let anonymous_id = format!("anon-{}-{}", self.config.seed, self.visitors.len());
        let mobile = self.rng.random_bool(self.config.mobile_share);
        let agent = if mobile {
            APP_AGENT
        } else {
            weighted(&mut self.rng, &WEB_AGENTS)
        };
        let ip = self.address();
        self.visitors.push(Visitor {
            tenant,
            anonymous_id,
            user_id: None,
            mobile,
            agent,
            ip,
            last_session_ms: self.clock_ms,
        });
        self.visitors.len() - 1
    }

    /// Visitors with a session started at or after `since_ms` (simulated Unix ms): the
    /// stream's own count of the visitors active in a stretch, to read a processor's memory
    /// against.
    pub fn visitors_active_since(&self, since_ms: i64) -> usize {
        let since = since_ms as f64;
        self.visitors
            .iter()
            .filter(|visitor| visitor.last_session_ms >= since)
            .count()
    }

    fn session(&mut self, out: &mut Vec<Arrival>) {
        self.clock_ms += self.arrivals.sample(&mut self.rng) * 1000.0;
        let mut visitor = self.pick_visitor();
        let mut time = self.clock_ms;

        // A known user on a new device: a fresh anonymous id, aliased to the user.
        if self.visitors[visitor].user_id.is_some()
            && self.rng.random_bool(self.config.new_device_share)
        {
            let Visitor {
                tenant,
                user_id,
                mobile,
                ..
            } = &self.visitors[visitor];
            let (tenant, user_id, mobile) = (*tenant, user_id.clone(), *mobile);
            let anonymous_id = format!("anon-{}-{}", self.config.seed, self.visitors.len());
            let agent = weighted(&mut self.rng, &WEB_AGENTS[..WEB_AGENTS.len() - CRAWLERS]);
            let ip = self.address();
            self.visitors.push(Visitor {
                tenant,
                anonymous_id: anonymous_id.clone(),
                user_id: user_id.clone(),
                mobile,
                agent,
                ip,
                last_session_ms: time,
            });
            visitor = self.visitors.len() - 1;
            let mut alias = self.event(visitor, EventKind::Alias, time);
            alias.previous_id = anonymous_id;
            alias.anonymous_id = String::new();
            self.deliver(alias, out);
        }

        self.visitors[visitor].last_session_ms = time;
        if self.config.return_window_secs.is_some() {
            self.recent_sessions.push_back((time, visitor));
        }
        self.rename_or_sync(visitor, time, out);

        let views = 1 + self.pages_per_session.sample(&mut self.rng) as usize;
        let referrer = weighted(&mut self.rng, &REFERRERS);
        let utm = self
            .rng
            .random_bool(0.2)
            .then(|| CAMPAIGNS[self.rng.random_range(0..CAMPAIGNS.len())]);
        let mut previous_url = String::new();
        for view in 0..views {
            if view > 0 {
                time += self.think.sample(&mut self.rng) * 1000.0;
            }
            let page = self.page_zipf.sample(&mut self.rng) as usize;
            let kind = if self.visitors[visitor].mobile {
                EventKind::Screen
            } else {
                EventKind::Page
            };
            let mut event = self.event(visitor, kind, time);
            event.page.path = if page == 1 {
                "/".into()
            } else {
                format!("/p/{page}")
            };
            event.page.url = format!("https://shop.example{}", event.page.path);
            event.name = event.page.path.clone();
            if view == 0 {
                event.page.referrer = referrer.to_owned();
                if let Some((source, medium, name, content, term)) = utm {
                    event.campaign = Campaign {
                        source: source.into(),
                        medium: medium.into(),
                        name: name.into(),
                        content: content.into(),
                        term: term.into(),
                    };
                }
            } else {
                // Inside the site, each page's referrer is the page before.
                event.page.referrer = previous_url.clone();
            }
            previous_url = event.page.url.clone();
            self.deliver(event, out);
            if self.rng.random_bool(0.25) {
                time += self.think.sample(&mut self.rng) * 250.0;
                let mut click = self.event(visitor, EventKind::Track, time);
                click.name = ["Clicked Buy", "Added to Cart", "Played Video"]
                    [self.rng.random_range(0..3)]
                .into();
                self.deliver(click, out);
            }
        }
        if self.visitors[visitor].user_id.is_none()
            && self.rng.random_bool(self.config.identify_share)
        {
            time += self.think.sample(&mut self.rng) * 500.0;
            let user_id = format!("user-{}-{visitor}", self.config.seed);
            self.visitors[visitor].user_id = Some(user_id);
            let mut signup = self.event(visitor, EventKind::Track, time);
            signup.name = "Signed Up".into();
            self.deliver(signup, out);
            let mut identify = self.event(visitor, EventKind::Identify, time + 1.0);
            if self.rng.random_bool(self.config.placeholder_share) {
                // A broken integration: this visitor stays anonymous.
                identify.user_id = ["undefined", "null", "[object Object]", "0"]
                    [self.rng.random_range(0..4)]
                .into();
                self.visitors[visitor].user_id = None;
            }
            self.deliver(identify, out);
        }
    }

    /// Before a known user's session: sometimes the user id changes (an alias from the old
    /// user id), sometimes a server refreshes the user's traits (an identify with only the
    /// user id).
    fn rename_or_sync(&mut self, visitor: usize, time: f64, out: &mut Vec<Arrival>) {
        let Some(user_id) = self.visitors[visitor].user_id.clone() else {
            return;
        };
        if self.rng.random_bool(self.config.rename_share) {
            let renamed = format!("{user_id}-renamed");
            let mut alias = self.event(visitor, EventKind::Alias, time - 1.0);
            alias.previous_id = user_id.clone();
            alias.anonymous_id = String::new();
            alias.user_id = renamed.clone();
            self.deliver(alias, out);
            for other in &mut self.visitors {
                if other.user_id.as_deref() == Some(user_id.as_str()) {
                    other.user_id = Some(renamed.clone());
                }
            }
        } else if self.rng.random_bool(self.config.crm_sync_share) {
            let mut sync = self.event(visitor, EventKind::Identify, time - 2.0);
            sync.anonymous_id = String::new();
            self.deliver(sync, out);
        }
    }

    fn event(&mut self, visitor: usize, kind: EventKind, time_ms: f64) -> Event {
        let Visitor {
            tenant,
            anonymous_id,
            user_id,
            agent,
            ip,
            ..
        } = &self.visitors[visitor];
        let (tenant, anonymous_id, user_id, agent, ip) = (
            self.config.tenants[*tenant].clone(),
            anonymous_id.clone(),
            user_id.clone(),
            *agent,
            ip.clone(),
        );
        let mut event = Event::new(&tenant, &self.message_id(), kind, time_ms as i64);
        event.anonymous_id = anonymous_id;
        event.user_id = user_id.unwrap_or_default();
        event.user_agent = agent.into();
        event.ip = ip;
        event.locale = "en-US".into();
        event.library = "loadgen/0.1".into();
        event
    }

    /// A random address in one of [`NETWORKS`].
    fn address(&mut self) -> String {
        let [a, b] = weighted(&mut self.rng, &NETWORKS);
        let (c, d) = (
            self.rng.random_range(0..=255u8),
            self.rng.random_range(1..=254u8),
        );
        format!("{a}.{b}.{c}.{d}")
    }

    fn deliver(&mut self, mut event: Event, out: &mut Vec<Arrival>) {
        let roll: f64 = self.rng.random();
        let delay_ms = if roll < self.config.late_share {
            self.rng.random_range(73 * 3_600_000..96 * 3_600_000)
        } else if roll < self.config.late_share + self.config.out_of_order_share {
            self.rng.random_range(5_000..600_000)
        } else {
            self.rng.random_range(0..500)
        };
        let arrival_ms = event.timestamp_ms + delay_ms;
        event.received_at_ms = arrival_ms;
        if self.rng.random_bool(self.config.duplicate_share) {
            let retry_ms = arrival_ms + self.rng.random_range(1_000..30_000);
            let mut again = event.clone();
            again.received_at_ms = retry_ms;
            out.push(Arrival {
                arrival_ms: retry_ms,
                event: again,
            });
        }
        out.push(Arrival { arrival_ms, event });
    }
}

/// The Segment JSON a client library would send for `event` at `sent_at_ms`.
pub fn segment_json(event: &Event, sent_at_ms: i64) -> Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let mut body = json!({
        "type": event.kind.as_str(),
        "messageId": event.message_id,
        "timestamp": time(event.timestamp_ms),
        "sentAt": time(sent_at_ms),
        "context": {
            "userAgent": event.user_agent,
            "ip": event.ip,
            "locale": event.locale,
            "library": {"name": "loadgen", "version": "0.1"},
            "page": {"path": event.page.path, "url": event.page.url, "referrer": event.page.referrer},
        },
    });
    let fields = [
        ("anonymousId", &event.anonymous_id),
        ("userId", &event.user_id),
        ("previousId", &event.previous_id),
    ];
    for (field, value) in fields {
        if !value.is_empty() {
            body[field] = json!(value);
        }
    }
    match event.kind {
        EventKind::Track => body["event"] = json!(event.name),
        EventKind::Page | EventKind::Screen => {
            body["name"] = json!(event.name);
            body["properties"] = json!({"path": event.page.path, "url": event.page.url, "referrer": event.page.referrer});
        }
        _ => {}
    }
    if !event.campaign.source.is_empty() {
        let Campaign {
            source,
            medium,
            name,
            content,
            term,
        } = &event.campaign;
        body["context"]["campaign"] = json!({"source": source, "medium": medium, "name": name, "content": content, "term": term});
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn generate(seed: u64, count: usize) -> Vec<Arrival> {
        let config = GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        };
        Generator::new(config, 1_700_000_000_000)
            .unwrap()
            .generate(count)
    }

    #[test]
    fn same_seed_same_events() {
        let ids = |arrivals: &[Arrival]| {
            arrivals
                .iter()
                .map(|a| (a.event.message_id.clone(), a.arrival_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&generate(7, 2_000)), ids(&generate(7, 2_000)));
        assert_ne!(ids(&generate(7, 2_000)), ids(&generate(8, 2_000)));
    }

    #[test]
    fn realistic_mix_with_disorder_lateness_and_duplicates() {
        let arrivals = generate(1, 50_000);
        assert!(
            arrivals
                .windows(2)
                .all(|w| w[0].arrival_ms <= w[1].arrival_ms),
            "sorted by arrival"
        );
        let count = |kind| arrivals.iter().filter(|a| a.event.kind == kind).count();
        assert!(count(EventKind::Page) > arrivals.len() / 2);
        assert!(count(EventKind::Screen) > arrivals.len() / 20);
        assert!(count(EventKind::Identify) > 100 && count(EventKind::Alias) > 10);
        let placeholders = arrivals
            .iter()
            .filter(|a| {
                ["undefined", "null", "[object Object]", "0"].contains(&a.event.user_id.as_str())
            })
            .count();
        assert!(placeholders > 5, "placeholder identifies: {placeholders}");
        let renames = arrivals
            .iter()
            .filter(|a| {
                a.event.kind == EventKind::Alias && a.event.previous_id.starts_with("user-")
            })
            .count();
        assert!(renames > 5, "aliases between user ids: {renames}");
        let syncs = arrivals
            .iter()
            .filter(|a| a.event.kind == EventKind::Identify && a.event.anonymous_id.is_empty())
            .count();
        assert!(syncs > 5, "server-side identifies: {syncs}");
        let late = arrivals
            .iter()
            .filter(|a| a.arrival_ms - a.event.timestamp_ms > 72 * 3_600_000)
            .count();
        assert!(late > 10 && late < arrivals.len() / 100, "late: {late}");
        let out_of_order = arrivals
            .windows(2)
            .filter(|w| w[0].event.timestamp_ms > w[1].event.timestamp_ms)
            .count();
        assert!(
            out_of_order > arrivals.len() / 100,
            "out of order: {out_of_order}"
        );
        let distinct: HashSet<_> = arrivals.iter().map(|a| &a.event.message_id).collect();
        let duplicates = arrivals.len() - distinct.len();
        assert!(
            duplicates > 50 && duplicates < arrivals.len() / 50,
            "duplicates: {duplicates}"
        );
        let root = arrivals.iter().filter(|a| a.event.page.path == "/").count();
        let rare = arrivals
            .iter()
            .filter(|a| a.event.page.path == "/p/150")
            .count();
        assert!(
            root > 20 * rare.max(1),
            "Zipf pages: / {root} vs /p/150 {rare}"
        );
    }

    /// Visitors with a session in the last 4 simulated hours, at 8 and at 16 hours.
    fn active_in_four_hours(return_window_secs: Option<f64>) -> (usize, usize) {
        const HOUR_MS: i64 = 3_600_000;
        let start = 1_700_000_000_000;
        let config = GeneratorConfig {
            seed: 5,
            sessions_per_sec: 2.0,
            return_window_secs,
            ..GeneratorConfig::default()
        };
        let mut generator = Generator::new(config, start).unwrap();
        let mut active_at = |hours: i64| {
            while generator.clock_ms() < start + hours * HOUR_MS {
                generator.generate(1_000);
            }
            generator.visitors_active_since(generator.clock_ms() - 4 * HOUR_MS)
        };
        (active_at(8), active_at(16))
    }

    #[test]
    fn a_return_window_keeps_the_active_visitors_flat() {
        let (at_8, at_16) = active_in_four_hours(None);
        let growth = at_16 as f64 / at_8 as f64;
        assert!(
            growth > 1.15,
            "returns from every visitor: {at_8} -> {at_16}"
        );
        let (at_8, at_16) = active_in_four_hours(Some(3_600.0));
        let growth = at_16 as f64 / at_8 as f64;
        assert!(
            (0.95..1.05).contains(&growth),
            "returns from the last hour: {at_8} -> {at_16}"
        );
    }

    #[test]
    fn segment_json_passes_the_gateway_shape() {
        for arrival in generate(3, 500) {
            let body = segment_json(&arrival.event, arrival.arrival_ms);
            assert!(body["type"].is_string() && body["messageId"].is_string());
            assert!(body["anonymousId"].is_string() || body["userId"].is_string());
            if arrival.event.kind == EventKind::Alias {
                assert!(body["previousId"].is_string() && body["userId"].is_string());
            }
        }
    }
}
