//! Where a visit came from: its source (a known site's name, or the referring host, or
//! `utm_source`) and its channel, GA4's "default channel group".
//!
//! Known sites come from Matomo's lists (search engines, social networks, AI assistants;
//! vendored under `data/referrers/`, CC0, see `SOURCE.md` there). The channel rules are GA4's,
//! in GA4's order (<https://support.google.com/analytics/answer/9756891>), with two additions:
//! `AI Assistants` for referrals from a site on Matomo's AI list (GA4 has no such group; it
//! would call them Referral), and a Google or Microsoft Ads click id (`gclid`, `gbraid`,
//! `wbraid`, `msclkid`) in the landing URL read as `cpc` from that engine when no `utm_medium`
//! says otherwise (what GA4's auto-tagging reports). GA4's shopping-site list is not vendored:
//! shopping channels come from campaign names only.
//!
//! A referrer on the page's own host, or on one of the tenant's `domains` (or a subdomain of
//! one), is the site talking to itself, not a source.

use std::collections::{BTreeMap, HashMap};

use schemas::{Acquisition, Campaign, Page};
use serde::Deserialize;

const SEARCH_ENGINES: &str = include_str!("../../data/referrers/SearchEngines.yml");
const SOCIALS: &str = include_str!("../../data/referrers/Socials.yml");
const AI_ASSISTANTS: &str = include_str!("../../data/referrers/AIAssistants.yml");

/// GA4's video sites among Matomo's social networks (GA4 lists more, e.g. Twitch and
/// Dailymotion, which Matomo's lists do not have: they come out as referrals).
const VIDEO_SITES: [&str; 2] = ["YouTube", "Vimeo"];

/// Generic top-level domains a `stem.{}` entry may end in (besides any two-letter country
/// code), and the second-level labels of country codes (`co.uk`, `com.br`).
const GENERIC_TLDS: [&str; 8] = ["com", "net", "org", "info", "biz", "edu", "gov", "int"];
const SECOND_LEVEL: [&str; 10] = [
    "co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go",
];

/// What kind of site a known source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Search,
    Social,
    Video,
    Ai,
}

#[derive(Debug, Clone)]
struct Site {
    name: String,
    category: Category,
}

/// The compiled lists.
///
/// Matching follows what each list means: a search engine is its listed hosts
/// (`www.google.com`, not `mail.google.com`: Gmail is no search), with `{}.host` entries for
/// any subdomain and `stem.{}` entries for any top-level domain; a social network or an AI
/// assistant is its domains and everything under them (`lm.facebook.com`).
#[derive(Debug)]
pub struct Referrers {
    /// By exact host (`google.com`, `l.facebook.com`).
    exact: HashMap<String, Site>,
    /// By a domain whose every subdomain is the site too (`facebook.com`, `bing.com`).
    with_subdomains: HashMap<String, Site>,
    /// By the part before a top-level domain (`google` for `google.{}`).
    any_tld: HashMap<String, Site>,
    /// By lowercased name (`google`), for `utm_source=google`.
    by_name: HashMap<String, Site>,
}

/// A list that does not read as Matomo's format.
#[derive(Debug, thiserror::Error)]
#[error("a vendored referrer list does not parse: {0}")]
pub struct ReferrersError(#[from] serde_yaml_ng::Error);

#[derive(Deserialize)]
struct SearchEngine {
    #[serde(default)]
    urls: Vec<String>,
}

impl Referrers {
    /// Compiles the vendored lists.
    pub fn new() -> Result<Referrers, ReferrersError> {
        let mut referrers = Referrers {
            exact: HashMap::new(),
            with_subdomains: HashMap::new(),
            any_tld: HashMap::new(),
            by_name: HashMap::new(),
        };
        // A host on two lists keeps its first: AI assistants (gemini.google.com) before
        // social networks, and those before search engines (Matomo lists facebook.com's
        // search as an engine too).
        let assistants: BTreeMap<String, Vec<String>> = serde_yaml_ng::from_str(AI_ASSISTANTS)?;
        for (name, hosts) in assistants {
            referrers.add(&name, Category::Ai, hosts);
        }
        let socials: BTreeMap<String, Vec<String>> = serde_yaml_ng::from_str(SOCIALS)?;
        for (name, hosts) in socials {
            let category = if VIDEO_SITES.contains(&name.as_str()) {
                Category::Video
            } else {
                Category::Social
            };
            referrers.add(&name, category, hosts);
        }
        let engines: BTreeMap<String, Vec<SearchEngine>> = serde_yaml_ng::from_str(SEARCH_ENGINES)?;
        for (name, entries) in engines {
            let hosts = entries.into_iter().flat_map(|entry| entry.urls);
            referrers.add(&name, Category::Search, hosts);
        }
        Ok(referrers)
    }

    /// Registers a site under each of its list entries: `host` (with its subdomains unless
    /// the site is a search engine), `host/path` (the path is dropped), `{}.host` and
    /// `a.{}.host` (any subdomain of `host`), and `stem.{}` (any top-level domain).
    fn add(&mut self, name: &str, category: Category, entries: impl IntoIterator<Item = String>) {
        let site = Site {
            name: name.to_owned(),
            category,
        };
        for entry in entries {
            let entry = entry
                .split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let (host, any_subdomain) = match entry.rsplit_once("{}.") {
                Some((_, host)) => (host, true),
                None => (entry.as_str(), category != Category::Search),
            };
            let table = if let Some(stem) = host.strip_suffix(".{}") {
                self.any_tld.entry(stem.to_owned())
            } else if host.is_empty() || host.contains("{}") {
                continue;
            } else if any_subdomain {
                self.with_subdomains.entry(host.to_owned())
            } else if self.with_subdomains.contains_key(host) {
                continue; // an AI assistant or social network, listed first, keeps its host
            } else {
                self.exact.entry(host.to_owned())
            };
            table.or_insert_with(|| site.clone());
        }
        self.by_name
            .entry(name.to_ascii_lowercase())
            .or_insert(site);
    }

    /// The known site of `host` (lowercased), by the rules of [`Referrers`].
    fn site_of_host(&self, host: &str) -> Option<&Site> {
        let bare = host.strip_prefix("www.").unwrap_or(host);
        if let Some(site) = self.exact.get(host).or_else(|| self.exact.get(bare)) {
            return Some(site);
        }
        let mut domain = bare;
        loop {
            if let Some(site) = self.with_subdomains.get(domain) {
                return Some(site);
            }
            match domain.split_once('.') {
                Some((_, parent)) if parent.contains('.') => domain = parent,
                _ => break,
            }
        }
        let labels: Vec<&str> = bare.rsplit('.').collect();
        let country =
            |label: &str| label.len() == 2 && label.bytes().all(|b| b.is_ascii_lowercase());
        let tld_labels = match labels.as_slice() {
            [last, second, ..] if country(last) && SECOND_LEVEL.contains(second) => 2,
            [last, ..] if country(last) || GENERIC_TLDS.contains(last) => 1,
            _ => return None,
        };
        let stem = bare.rsplitn(tld_labels + 1, '.').nth(tld_labels)?;
        self.any_tld.get(stem)
    }

    /// Source and channel of an event that landed on `page` with `campaign`, for a tenant
    /// whose own sites are `own_domains`.
    pub fn classify(
        &self,
        page: &Page,
        campaign: &Campaign,
        own_domains: &[String],
    ) -> Acquisition {
        let landing = url::Url::parse(page.url.trim()).ok();
        let page_host = landing.as_ref().and_then(host_of);
        let referrer_host = url::Url::parse(page.referrer.trim())
            .ok()
            .as_ref()
            .and_then(host_of)
            .filter(|host| !is_own(host, page_host.as_deref(), own_domains));
        let click = landing.as_ref().and_then(ad_click);
        let medium = if campaign.medium.is_empty() {
            click
                .map(|(_, medium)| medium)
                .unwrap_or_default()
                .to_owned()
        } else {
            campaign.medium.to_ascii_lowercase()
        };
        let utm_source = campaign.source.trim();
        let site = if utm_source.is_empty() {
            referrer_host
                .as_deref()
                .and_then(|host| self.site_of_host(host))
                .or_else(|| click.and_then(|(engine, _)| self.by_name.get(engine)))
        } else {
            let lowered = utm_source.to_ascii_lowercase();
            self.by_name
                .get(&lowered)
                .or_else(|| self.site_of_host(&lowered))
        };
        let source = match (site, utm_source, &referrer_host) {
            (Some(site), _, _) => site.name.clone(),
            (None, utm, _) if !utm.is_empty() => utm.to_owned(),
            (None, _, Some(host)) => host.strip_prefix("www.").unwrap_or(host).to_owned(),
            (None, _, None) => String::new(),
        };
        // A referral without UTM tags is GA4's medium `referral`.
        let untagged_referral =
            referrer_host.is_some() && utm_source.is_empty() && medium.is_empty();
        let signals = Signals {
            category: site.map(|site| site.category),
            source: source.to_ascii_lowercase(),
            medium,
            campaign: campaign.name.to_ascii_lowercase(),
            untagged_referral,
        };
        Acquisition {
            source: source.into(),
            channel: signals.channel().into(),
        }
    }
}

/// What the channel rules read, lowercased.
struct Signals {
    category: Option<Category>,
    source: String,
    medium: String,
    campaign: String,
    untagged_referral: bool,
}

impl Signals {
    /// GA4's default channel group, rule by rule in GA4's order.
    fn channel(&self) -> &'static str {
        let medium = self.medium.as_str();
        let paid = medium.contains("cp")
            || medium == "ppc"
            || medium == "retargeting"
            || medium.starts_with("paid");
        let is = |category| self.category == Some(category);
        let shopping_campaign = self.campaign.contains("shopping") || mentions_shop(&self.campaign);
        let either =
            |words: &[&str]| words.contains(&self.source.as_str()) || words.contains(&medium);
        if self.source.is_empty() && medium.is_empty() {
            return "Direct";
        }
        if self.campaign.contains("cross-network") {
            return "Cross-network";
        }
        let rules: [(bool, &'static str); 17] = [
            (shopping_campaign && paid, "Paid Shopping"),
            (is(Category::Search) && paid, "Paid Search"),
            (is(Category::Social) && paid, "Paid Social"),
            (is(Category::Video) && paid, "Paid Video"),
            (
                ["display", "banner", "expandable", "interstitial", "cpm"].contains(&medium),
                "Display",
            ),
            (paid, "Paid Other"),
            (shopping_campaign, "Organic Shopping"),
            (
                is(Category::Social)
                    || [
                        "social",
                        "social-network",
                        "social-media",
                        "sm",
                        "social network",
                        "social media",
                    ]
                    .contains(&medium),
                "Organic Social",
            ),
            (
                is(Category::Video) || medium.contains("video"),
                "Organic Video",
            ),
            (
                is(Category::Search) || medium == "organic",
                "Organic Search",
            ),
            (is(Category::Ai), "AI Assistants"),
            (either(&["email", "e-mail", "e_mail", "e mail"]), "Email"),
            (medium == "affiliate", "Affiliates"),
            (
                ["referral", "app", "link"].contains(&medium) || self.untagged_referral,
                "Referral",
            ),
            (medium == "audio", "Audio"),
            (either(&["sms"]), "SMS"),
            (
                medium.ends_with("push")
                    || medium.contains("mobile")
                    || medium.contains("notification")
                    || self.source == "firebase",
                "Mobile Push Notifications",
            ),
        ];
        rules
            .into_iter()
            .find_map(|(holds, channel)| holds.then_some(channel))
            .unwrap_or("Unassigned")
    }
}

/// GA4's `([^a-df-z]|^)shop`: "shop" at the start or after anything but a letter other
/// than `e` ("eshop" and "e-shop" are shops, "workshop" is not).
fn mentions_shop(campaign: &str) -> bool {
    campaign.match_indices("shop").any(|(at, _)| {
        campaign[..at]
            .chars()
            .next_back()
            .is_none_or(|before| !(before.is_ascii_lowercase() && before != 'e'))
    })
}

/// The lowercased host of a URL; `None` for one without a host.
fn host_of(parsed: &url::Url) -> Option<String> {
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether a referring host is the site itself: the page's host, or one of the tenant's
/// domains or a subdomain of one (`www.` ignored on both sides).
fn is_own(host: &str, page_host: Option<&str>, own_domains: &[String]) -> bool {
    let bare = |h: &str| h.strip_prefix("www.").unwrap_or(h).to_owned();
    let host = bare(host);
    page_host.is_some_and(|page| bare(page) == host)
        || own_domains.iter().any(|domain| {
            let domain = bare(&domain.to_ascii_lowercase());
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// The ad engine (as a list key) and medium of a click id in the landing URL.
fn ad_click(parsed: &url::Url) -> Option<(&'static str, &'static str)> {
    parsed
        .query_pairs()
        .find_map(|(key, _)| match key.as_ref() {
            "gclid" | "gbraid" | "wbraid" => Some(("google", "cpc")),
            "msclkid" => Some(("bing", "cpc")),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(referrer: &str, url: &str, utm: (&str, &str, &str)) -> (String, String) {
        let referrers = Referrers::new().unwrap();
        let page = Page {
            url: url.into(),
            referrer: referrer.into(),
            ..Page::default()
        };
        let campaign = Campaign {
            source: utm.0.into(),
            medium: utm.1.into(),
            name: utm.2.into(),
            ..Campaign::default()
        };
        let found = referrers.classify(&page, &campaign, &["shop.example".into()]);
        (found.source.to_string(), found.channel.to_string())
    }

    /// Real referrers and UTM mixes, each with what GA4 would report.
    #[test]
    fn sources_and_channels() {
        let none = ("", "", "");
        // (referrer, landing URL, (utm_source, utm_medium, utm_campaign), (source, channel))
        type Case<'a> = (
            &'a str,
            &'a str,
            (&'a str, &'a str, &'a str),
            (&'a str, &'a str),
        );
        let cases: [Case<'_>; 26] = [
            ("", "https://shop.example/", none, ("", "Direct")),
            (
                "https://www.google.com/",
                "https://shop.example/",
                none,
                ("Google", "Organic Search"),
            ),
            (
                "https://www.google.co.uk/search?q=shoes",
                "https://shop.example/",
                none,
                ("Google", "Organic Search"),
            ),
            (
                "https://google.de/",
                "https://shop.example/",
                none,
                ("Google", "Organic Search"),
            ),
            (
                "https://www.bing.com/search?q=x",
                "https://shop.example/",
                none,
                ("Bing", "Organic Search"),
            ),
            (
                "https://duckduckgo.com/",
                "https://shop.example/",
                none,
                ("DuckDuckGo", "Organic Search"),
            ),
            (
                "https://l.facebook.com/l.php?u=x",
                "https://shop.example/",
                none,
                ("Facebook", "Organic Social"),
            ),
            (
                "https://t.co/abc",
                "https://shop.example/",
                none,
                ("Twitter", "Organic Social"),
            ),
            (
                "https://www.youtube.com/watch?v=1",
                "https://shop.example/",
                none,
                ("YouTube", "Organic Video"),
            ),
            (
                "https://chatgpt.com/",
                "https://shop.example/",
                none,
                ("ChatGPT", "AI Assistants"),
            ),
            (
                "https://news.ycombinator.com/item?id=1",
                "https://shop.example/",
                none,
                ("Hacker News", "Organic Social"),
            ),
            (
                "https://blog.example.org/post",
                "https://shop.example/",
                none,
                ("blog.example.org", "Referral"),
            ),
            (
                "https://shop.example/pricing",
                "https://shop.example/",
                none,
                ("", "Direct"),
            ),
            (
                "https://www.shop.example/pricing",
                "https://shop.example/",
                none,
                ("", "Direct"),
            ),
            (
                "https://docs.shop.example/",
                "https://app.other.example/",
                none,
                ("", "Direct"),
            ),
            (
                "",
                "https://shop.example/?gclid=abc",
                none,
                ("Google", "Paid Search"),
            ),
            (
                "https://www.google.com/",
                "https://shop.example/",
                ("google", "cpc", "spring"),
                ("Google", "Paid Search"),
            ),
            (
                "",
                "https://shop.example/",
                ("facebook", "paid_social", ""),
                ("Facebook", "Paid Social"),
            ),
            (
                "",
                "https://shop.example/",
                ("newsletter", "email", "nov"),
                ("newsletter", "Email"),
            ),
            (
                "",
                "https://shop.example/",
                ("partner", "", ""),
                ("partner", "Unassigned"),
            ),
            // Gmail and Google Docs are no search engine; Facebook's other link shims are
            // Facebook.
            (
                "https://mail.google.com/",
                "https://shop.example/",
                none,
                ("mail.google.com", "Referral"),
            ),
            (
                "https://docs.google.com/document/d/1",
                "https://shop.example/",
                none,
                ("docs.google.com", "Referral"),
            ),
            (
                "https://lm.facebook.com/l.php?u=x",
                "https://shop.example/",
                none,
                ("Facebook", "Organic Social"),
            ),
            (
                "android-app://com.google.android.gm/",
                "https://shop.example/",
                none,
                ("com.google.android.gm", "Referral"),
            ),
            // Tagged traffic is what its tags say, whatever referred it (GA4: Email before
            // Referral; a source without a medium is Unassigned).
            (
                "https://blog.example.org/",
                "https://shop.example/",
                ("email", "referral", ""),
                ("email", "Email"),
            ),
            (
                "https://blog.example.org/",
                "https://shop.example/",
                ("partner", "", ""),
                ("partner", "Unassigned"),
            ),
        ];
        for (referrer, url, utm, (source, channel)) in cases {
            assert_eq!(
                classify(referrer, url, utm),
                (source.to_owned(), channel.to_owned()),
                "referrer {referrer:?}, url {url:?}, utm {utm:?}"
            );
        }
    }

    #[test]
    fn shop_campaigns_as_ga4_reads_them() {
        assert!(mentions_shop("shop-sale"));
        assert!(mentions_shop("eshop"));
        assert!(mentions_shop("summer_shop"));
        assert!(!mentions_shop("workshop"));
        assert_eq!(
            classify("", "https://x.example/", ("x", "cpc", "Shopping-Q4")).1,
            "Paid Shopping"
        );
        assert_eq!(
            classify("", "https://x.example/", ("x", "", "cross-network-1")).1,
            "Cross-network"
        );
        assert_eq!(
            classify("", "https://x.example/", ("x", "banner", "")).1,
            "Display"
        );
    }
}
