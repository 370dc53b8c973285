//! Browser, OS and device type from the user agent, by uap-core's rules (the `ua-parser`
//! crate, the ua-parser project's own Rust implementation, over the vendored
//! `data/uap-core/regexes.yaml` or a file the deployment names).
//!
//! uap-core has no device *type*, only a device family (`iPhone`, `Spider`, `Other`...), so
//! the type comes from the families it found, in this order:
//! - `Bot`: the device family is `Spider` (uap-core's name for crawlers);
//! - `Tablet`: an iPad, a Kindle or Silk, a device family naming a tablet, or Android without
//!   `Mobile` in the agent (Google's rule for Android tablets:
//!   <https://developer.chrome.com/docs/multidevice/user-agent#chrome_for_android>);
//! - `Mobile`: iOS, Android, Windows Phone, KaiOS, BlackBerry OS, or `Mobile` in the agent;
//! - `Desktop`: anything else that named a browser or an OS.
//!
//! Parsing costs tens of microseconds (a few hundred regexes behind a prefilter); a site's
//! traffic has a few thousand distinct agents, so results are cached per agent string.

use std::sync::LazyLock;

use quick_cache::sync::Cache;
use schemas::{ArcStr, Client};

/// The device type of crawlers.
pub const BOT: &str = "Bot";

/// True for user agents on the `isbot` crate's crawler list (which knows headless browsers,
/// monitors and HTTP libraries uap-core's `Spider` rules do not).
pub fn is_crawler(user_agent: &str) -> bool {
    static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);
    !user_agent.is_empty() && BOTS.is_bot(user_agent)
}

/// Distinct agents remembered. A cache entry is about 200 bytes plus the agent.
const CACHE_AGENTS: usize = 20_000;

/// The longest agent read: real ones are under 300 bytes, and a client sending 32 KiB agents
/// must not make the cache hold 20,000 of them or the rules scan them.
const MAX_AGENT_BYTES: usize = 512;

/// A compiled rule set with its cache.
pub struct Agents {
    extractor: ua_parser::Extractor<'static>,
    cache: Cache<String, Client>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").finish_non_exhaustive()
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AgentRulesError {
    /// The YAML is not a uap-core `regexes.yaml`.
    #[error("not a uap-core regexes.yaml: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A rule's regex does not compile.
    #[error("a uap-core rule does not compile: {0}")]
    Rule(#[from] ua_parser::Error),
}

impl Agents {
    /// Compiles a uap-core `regexes.yaml` (the rules are copied out of the text: `ua-parser`
    /// deserializes its strings owned).
    pub fn new(regexes_yaml: &str) -> Result<Agents, AgentRulesError> {
        let regexes: ua_parser::Regexes<'static> = serde_yaml_ng::from_str(regexes_yaml)?;
        Ok(Agents {
            extractor: ua_parser::Extractor::try_from(regexes)?,
            cache: Cache::new(CACHE_AGENTS),
        })
    }

    /// What the agent says about the client; every field empty for an empty agent.
    pub fn client(&self, user_agent: &str) -> Client {
        if user_agent.is_empty() {
            return Client::default();
        }
        let cut = (0..=MAX_AGENT_BYTES.min(user_agent.len()))
            .rev()
            .find(|at| user_agent.is_char_boundary(*at))
            .unwrap_or(0);
        let user_agent = &user_agent[..cut];
        if let Some(client) = self.cache.get(user_agent) {
            return client;
        }
        let client = self.parse(user_agent);
        self.cache.insert(user_agent.to_owned(), client.clone());
        client
    }

    fn parse(&self, user_agent: &str) -> Client {
        let (browser, os, device) = self.extractor.extract(user_agent);
        let known = |family: &str| !family.is_empty() && family != "Other";
        let browser = browser.filter(|b| known(&b.family));
        let os = os.filter(|o| known(&o.os));
        let device_family = device.map(|d| d.device.into_owned()).unwrap_or_default();
        let os_family = os.as_ref().map(|o| o.os.to_string()).unwrap_or_default();
        let device = device_type(user_agent, &device_family, &os_family);
        let device = if device.is_empty() && (browser.is_some() || os.is_some()) {
            "Desktop"
        } else {
            device
        };
        Client {
            device: device.into(),
            browser: browser
                .as_ref()
                .map(|b| ArcStr::from(&*b.family))
                .unwrap_or_default(),
            browser_version: browser
                .map(|b| version(b.major, b.minor).into())
                .unwrap_or_default(),
            os: os_family.into(),
            os_version: os
                .map(|o| version(o.major.as_deref(), o.minor.as_deref()).into())
                .unwrap_or_default(),
        }
    }
}

/// `major.minor`, `major` alone, or empty.
fn version(major: Option<&str>, minor: Option<&str>) -> String {
    match (major, minor) {
        (Some(major), Some(minor)) if !minor.is_empty() => format!("{major}.{minor}"),
        (Some(major), _) => major.to_owned(),
        _ => String::new(),
    }
}

/// The device type by the rules in the module's documentation; empty when nothing says.
fn device_type(user_agent: &str, device_family: &str, os_family: &str) -> &'static str {
    const TABLETS: [&str; 4] = ["iPad", "Kindle", "Silk", "Tablet"];
    const MOBILE_OSES: [&str; 6] = [
        "iOS",
        "Android",
        "Windows Phone",
        "KaiOS",
        "BlackBerry OS",
        "Firefox OS",
    ];
    if device_family == "Spider" {
        return BOT;
    }
    let mobile_word = user_agent.contains("Mobile");
    if TABLETS
        .iter()
        .any(|name| device_family.contains(name) || user_agent.contains(name))
        || (os_family == "Android" && !mobile_word)
    {
        return "Tablet";
    }
    if MOBILE_OSES.contains(&os_family) || mobile_word {
        return "Mobile";
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real agents, each with what a person reading it would say (not what the code says).
    #[test]
    fn real_agents() {
        let agents = Agents::new(super::super::DEFAULT_UA_REGEXES).unwrap();
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Desktop", "Chrome", "120.0", "Windows", "10"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                ("Desktop", "Safari", "17.1", "Mac OS X", "10.15"),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                ("Desktop", "Firefox", "121.0", "Linux", ""),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.61",
                ("Desktop", "Edge", "120.0", "Windows", "10"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
                ("Mobile", "Mobile Safari", "17.2", "iOS", "17.2"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
                ("Mobile", "Chrome Mobile", "120.0", "Android", "14"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
                ("Mobile", "Samsung Internet", "23.0", "Android", "13"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
                ("Tablet", "Mobile Safari", "16.6", "iOS", "16.6"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Tablet", "Chrome", "120.0", "Android", "13"),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                ("Bot", "Googlebot", "2.1", "", ""),
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
                ("Bot", "bingbot", "2.0", "", ""),
            ),
            (
                "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36 OPR/77.0",
                ("Mobile", "", "", "Android", "10"),
            ),
        ];
        for (agent, (device, browser, browser_version, os, os_version)) in cases {
            let client = agents.client(agent);
            assert_eq!(client.device, device, "{agent}");
            if !browser.is_empty() {
                assert_eq!(client.browser, browser, "{agent}");
                assert_eq!(client.browser_version, browser_version, "{agent}");
            }
            assert_eq!(client.os, os, "{agent}");
            assert_eq!(client.os_version, os_version, "{agent}");
            assert_eq!(
                agents.client(agent),
                client,
                "a cached answer is the same answer"
            );
        }
        assert_eq!(agents.client(""), Client::default());
        assert_eq!(agents.client("no agent at all"), Client::default());
    }
}
