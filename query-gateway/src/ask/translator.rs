//! The offline translator: plain-English questions to SQL over the views, without a model.
//!
//! Deterministic and deliberately narrow. It recognises a period ([`super::period`]), then one
//! of these question shapes, in this order:
//! 1. retention ("retention", "come back"): weekly cohorts of persons;
//! 2. a funnel ("funnel from A to B to C", "conversion from A to B"): persons reaching each
//!    step in order within a day (`windowFunnel`, as the dashboard's funnel);
//! 3. "who did A but not B" (also "but never"): persons counted;
//! 4. one person's activity ("activity of user X", "what did X do");
//! 5. a comparison with the previous period ("compare", "vs", "change");
//! 6. a metric over time ("per day", "daily", "by hour", "weekly", "trend", "over time");
//! 7. a top list ("top", "most", "popular", "which") of pages, landing or exit pages, events,
//!    referrers, UTM sources or campaigns;
//! 8. a total: page views, events, visitors, persons, sessions, bounce rate, average session
//!    duration, or how often a named event or page happened.
//!
//! Names of events and pages are the tenant's own, matched case-insensitively (quoted names
//! and funnel steps also fuzzily). Anything else is [`Unanswerable`], with questions it can
//! answer: it never guesses a number.

use chrono::NaiveDate;
use chrono_tz::Tz;
use schemas::definitions::{activity_sql, page_view_location_sql, page_view_sql};

use super::period::{self, Period};

/// The tenant's names that questions may mention: track event names and page-view locations
/// (paths, or screens' names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    /// Track event names.
    pub events: Vec<String>,
    /// Page-view locations.
    pub pages: Vec<String>,
}

/// A named event or page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A track event of this name.
    Event(String),
    /// A page view of this location.
    Page(String),
}

impl Target {
    fn condition(&self) -> String {
        match self {
            Target::Event(name) => format!("(type = 'track' AND name = {})", quote(name)),
            Target::Page(location) => format!(
                "({} AND {} = {})",
                page_view_sql(),
                page_view_location_sql(),
                quote(location)
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Event(name) => format!("\"{name}\" events"),
            Target::Page(location) => format!("views of {location}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Target::Event(name) | Target::Page(name) => name,
        }
    }
}

impl Vocabulary {
    /// The name `text` means: an exact case-insensitive match first, then (when `fuzzy`) the
    /// closest name within a normalized edit distance of 0.25.
    pub fn resolve(&self, text: &str, fuzzy: bool) -> Option<Target> {
        let wanted = normalize_name(text);
        if wanted.is_empty() {
            return None;
        }
        let candidates = self
            .events
            .iter()
            .map(|name| Target::Event(name.clone()))
            .chain(self.pages.iter().map(|name| Target::Page(name.clone())));
        let mut best: Option<(f64, Target)> = None;
        for candidate in candidates {
            let have = normalize_name(candidate.name());
            let score = if have == wanted {
                2.0
            } else if fuzzy {
                strsim::normalized_levenshtein(&have, &wanted)
            } else {
                0.0
            };
            if score >= 0.75 && best.as_ref().is_none_or(|(top, _)| score > *top) {
                best = Some((score, candidate));
            }
        }
        best.map(|(_, target)| target)
    }

    /// The longest name that occurs in `question` as whole words (case-insensitive).
    fn mentioned(&self, question: &str) -> Option<Target> {
        let haystack = format!(" {} ", normalize_name(question));
        let candidates = self
            .events
            .iter()
            .map(|name| Target::Event(name.clone()))
            .chain(self.pages.iter().map(|name| Target::Page(name.clone())));
        candidates
            .filter(|target| {
                let needle = normalize_name(target.name());
                needle.len() >= 3 && haystack.contains(&format!(" {needle} "))
            })
            .max_by_key(|target| target.name().len())
    }
}

/// Lowercase, with `_`, `-` and runs of spaces as one space; a leading `/` kept (paths).
fn normalize_name(text: &str) -> String {
    let text = text
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`');
    let mapped: String = text
        .chars()
        .map(|c| match c {
            '_' | '-' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A SQL string literal; quotes are doubled (the guard refuses backslashes).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// How the answer presents a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One row of named numbers.
    Totals,
    /// Rows of `(label, count)`, largest first.
    Top,
    /// Rows of `(bucket, value)`, in time order.
    Series,
    /// One row: this period's value, the previous period's.
    Comparison,
    /// One row: persons reaching each step.
    Funnel(Vec<Target>),
    /// Rows of `(cohort week, weeks later, persons)`.
    Retention,
    /// A person's events, oldest first.
    Activity,
}

/// A question turned into SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// SQL over the views; it still goes through the guard.
    pub sql: String,
    /// How to present the rows.
    pub shape: Shape,
    /// What the rows are, e.g. "page views per day".
    pub title: String,
    /// The period the SQL covers; `None` for all time.
    pub period: Option<Period>,
    /// What the translator assumed, e.g. that a misspelt name meant a known one.
    pub notes: Vec<String>,
}

/// Why the translator cannot answer, and what it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unanswerable {
    /// In plain words.
    pub reason: String,
}

/// Questions the translator answers, offered when it cannot answer one.
pub const SUGGESTIONS: [&str; 6] = [
    "How many unique visitors did we have in the last 7 days?",
    "What were the top pages last month?",
    "Page views per day in the last 14 days",
    "What is the bounce rate this week?",
    "Compare sessions with the previous period",
    "Weekly retention over the last 8 weeks",
];

/// Where and when a question is asked.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Today in the tenant's time zone.
    pub today: NaiveDate,
    /// The tenant's time zone.
    pub tz: Tz,
    /// The tenant's event and page names.
    pub vocabulary: &'a Vocabulary,
}

const VISITOR: &str = "if(anonymous_id != '', anonymous_id, user_id)";

/// Translates `question`.
///
/// # Errors
/// [`Unanswerable`] when the question is outside the shapes above or names an unknown event
/// or page.
pub fn translate(question: &str, context: Context<'_>) -> Result<Translation, Unanswerable> {
    let text = clean(question);
    let found = period::find(&text, context.today, context.tz);
    let named_period = found.as_ref().map(|(period, _)| period.clone());
    let rest = found.map_or(text.clone(), |(_, rest)| rest);
    let (mut translation, names) = shape_of(question, &rest, named_period, context)?;
    let extra: &[&str] = if matches!(translation.shape, Shape::Totals) && but_not(&rest).is_some() {
        &["but", "not", "never", "without", "didn't", "did"]
    } else {
        &[]
    };
    check_understood(&rest, &names, extra)?;
    for name in &names {
        if let Some(target) = context.vocabulary.resolve(name, true)
            && normalize_name(target.name()) != normalize_name(name)
        {
            translation
                .notes
                .push(format!("I took \"{name}\" to mean \"{}\".", target.name()));
        }
    }
    if let Some(id) = names
        .first()
        .filter(|_| translation.shape == Shape::Activity)
    {
        translation
            .notes
            .push(format!("Ids are matched exactly: \"{id}\"."));
    }
    Ok(translation)
}

/// The question's shape, and the names (as typed) it consumed.
fn shape_of(
    question: &str,
    rest: &str,
    named_period: Option<Period>,
    context: Context<'_>,
) -> Result<(Translation, Vec<String>), Unanswerable> {
    let default = |days: u64, name: &str| {
        named_period.clone().unwrap_or_else(|| {
            Period::days(
                context.today - chrono::Days::new(days - 1),
                context.today,
                context.tz,
                name,
            )
        })
    };
    let has = |words: &[&str]| words.iter().any(|word| contains_words(rest, word));
    if has(&[
        "retention",
        "retained",
        "come back",
        "came back",
        "return",
        "returned",
    ]) {
        let period = default(56, "the last 8 weeks");
        return Ok((retention(period, context.tz), Vec::new()));
    }
    if let Some(fragments) = funnel_steps(rest) {
        let steps = join_steps(&fragments, context.vocabulary);
        if !(2..=5).contains(&steps.len()) {
            return Err(unanswerable(
                "A funnel has 2 to 5 steps, e.g. \"funnel from /pricing to Signed Up\".",
            ));
        }
        let targets = resolve_all(&steps, context.vocabulary)?;
        return Ok((funnel(targets, default(7, "the last 7 days")), steps));
    }
    if let Some((did, not)) = but_not(rest) {
        let targets = resolve_all(&[did.clone(), not.clone()], context.vocabulary)?;
        let period = default(7, "the last 7 days");
        let translation = did_but_not(&targets[0], &targets[1], period);
        return Ok((translation, vec![did, not]));
    }
    if let Some(id) = person_mentioned(rest) {
        let id = original_case(question, &id);
        return Ok((activity(&id, named_period), vec![id]));
    }
    metric_shape(question, rest, default(7, "the last 7 days"), context)
}

/// Totals, comparisons, series and top lists: a metric, maybe narrowed to a named event or
/// page, or a dimension.
fn metric_shape(
    question: &str,
    rest: &str,
    period: Period,
    context: Context<'_>,
) -> Result<(Translation, Vec<String>), Unanswerable> {
    let has = |words: &[&str]| words.iter().any(|word| contains_words(rest, word));
    let typed = quoted(rest).or_else(|| path_token(rest));
    let target = typed
        .as_ref()
        .and_then(|name| context.vocabulary.resolve(name, true))
        .or_else(|| context.vocabulary.mentioned(rest));
    let mut names: Vec<String> = typed.into_iter().collect();
    names.extend(target.as_ref().map(|target| target.name().to_owned()));
    if let Some(target) = &target
        && Metric::find(rest, None).is_some_and(|metric| metric.uses_sessions())
    {
        return Err(unanswerable(&format!(
            "Without a language model I can't narrow sessions, bounce rate or session duration to {}; ask about page views, events, visitors or persons with it instead.",
            target.describe()
        )));
    }
    if let Some(dimension) = breakdown(rest) {
        return Err(unanswerable(&format!(
            "Without a language model I break numbers down only as top lists: ask e.g. \"top {dimension} in the last 7 days\"."
        )));
    }
    let metric = Metric::find(rest, target.clone());
    let comparing = has(&[
        "compare",
        "compared",
        "vs",
        "versus",
        "previous period",
        "change",
        "growth",
    ]);
    let listing = has(&["top", "most", "popular", "which", "list", "best", "biggest"]);
    let translation = if comparing {
        let metric = metric.ok_or_else(|| unknown_metric(question))?;
        comparison(metric, period, context.tz)
    } else if let Some(bucket) = Bucket::find(rest) {
        let metric = metric.ok_or_else(|| unknown_metric(question))?;
        series(metric, bucket, period, context.tz)
    } else if let Some(dimension) = Dimension::find(rest).filter(|_| listing || metric.is_none()) {
        if let Some(target) = &target {
            return Err(unanswerable(&format!(
                "Without a language model I can't narrow a top list to {}.",
                target.describe()
            )));
        }
        top(dimension, top_count(rest), period)
    } else if let Some(metric) = metric {
        total(metric, period)
    } else {
        return Err(unknown_metric(question));
    };
    Ok((translation, names))
}

fn unanswerable(reason: &str) -> Unanswerable {
    Unanswerable {
        reason: reason.to_owned(),
    }
}

/// Words the shapes above account for. A question with any other word is refused: a
/// qualifier the translator does not understand ("from Germany", "on mobile") would
/// otherwise be silently dropped, and the answer would be wrong.
const UNDERSTOOD: &[&str] = &[
    "a",
    "active",
    "activity",
    "actions",
    "added",
    "all",
    "an",
    "and",
    "are",
    "average",
    "avg",
    "back",
    "be",
    "been",
    "before",
    "best",
    "biggest",
    "bounce",
    "bounced",
    "breakdown",
    "brought",
    "by",
    "came",
    "campaign",
    "campaigns",
    "change",
    "changed",
    "come",
    "compare",
    "compared",
    "completed",
    "conversion",
    "convert",
    "converted",
    "count",
    "customer",
    "customers",
    "daily",
    "day",
    "days",
    "did",
    "do",
    "does",
    "duration",
    "each",
    "entry",
    "event",
    "events",
    "every",
    "exit",
    "for",
    "from",
    "funnel",
    "get",
    "give",
    "go",
    "got",
    "growth",
    "had",
    "happen",
    "happened",
    "has",
    "have",
    "history",
    "hits",
    "hour",
    "hourly",
    "how",
    "in",
    "is",
    "it",
    "journey",
    "landing",
    "last",
    "length",
    "list",
    "long",
    "many",
    "me",
    "month",
    "monthly",
    "most",
    "much",
    "number",
    "of",
    "on",
    "our",
    "over",
    "page",
    "pages",
    "pageview",
    "pageviews",
    "past",
    "people",
    "per",
    "period",
    "person",
    "persons",
    "popular",
    "previous",
    "rate",
    "referrer",
    "referrers",
    "referring",
    "referer",
    "retained",
    "retention",
    "return",
    "returned",
    "screen",
    "screens",
    "session",
    "sessions",
    "show",
    "site",
    "source",
    "sources",
    "spent",
    "that",
    "the",
    "them",
    "then",
    "there",
    "this",
    "time",
    "timeline",
    "times",
    "to",
    "top",
    "total",
    "traffic",
    "trend",
    "triggered",
    "unique",
    "url",
    "urls",
    "path",
    "paths",
    "user",
    "users",
    "utm",
    "versus",
    "via",
    "view",
    "viewed",
    "views",
    "visit",
    "visited",
    "visitor",
    "visitors",
    "visits",
    "vs",
    "was",
    "we",
    "website",
    "week",
    "weekly",
    "were",
    "what",
    "which",
    "who",
    "with",
    "app",
    "->",
    ">",
    "→",
    "so",
    "far",
    "did",
    "do",
];

fn check_understood(rest: &str, names: &[String], extra: &[&str]) -> Result<(), Unanswerable> {
    let words: Vec<&str> = rest
        .split(' ')
        .map(|word| word.trim_matches(['"', '\'']))
        .collect();
    let mut text = format!(" {} ", normalize_name(&words.join(" ")));
    for name in names {
        let name = normalize_name(name);
        if !name.is_empty() {
            text = text.replace(&format!(" {name} "), " ");
        }
    }
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| word.trim_matches(['"', '\'', '?', '!', ',']))
        .filter(|word| !word.is_empty())
        .collect();
    // A number is understood only as the N of "top N"; periods took theirs already.
    let unknown: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|(i, word)| {
            let top_n = *i > 0 && words[i - 1] == "top" && word.parse::<u32>().is_ok();
            !top_n && !UNDERSTOOD.contains(word) && !extra.contains(word)
        })
        .map(|(_, word)| *word)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Unanswerable {
        reason: format!(
            "I can't answer that without a language model: I don't know what \"{}\" means here. I answer questions about page views, events, visitors, persons, sessions, bounce rate, session duration, top lists, funnels, retention and one person's activity, over a period, for events and pages by their names in your data.",
            unknown.join(" ")
        ),
    })
}

fn unknown_metric(question: &str) -> Unanswerable {
    Unanswerable {
        reason: format!(
            "I can't answer \"{}\" without a language model: I recognise questions about page views, events, visitors, persons, sessions, bounce rate, session duration, top lists, funnels, retention and one person's activity, and events or pages by their names in your data.",
            question.trim()
        ),
    }
}

/// Lowercase; punctuation other than what names and dates use becomes space.
fn clean(question: &str) -> String {
    let mapped: String = question
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "/-_.'\"@:+|".contains(c) {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    mapped
        .split_whitespace()
        .map(|word| word.trim_end_matches(['.', ':']))
        .collect::<Vec<_>>()
        .join(" ")
}

fn contains_words(text: &str, words: &str) -> bool {
    format!(" {text} ").contains(&format!(" {words} "))
}

fn quoted(text: &str) -> Option<String> {
    let start = text.find(['"', '\''])?;
    let quote_char = text[start..].chars().next()?;
    let end = text[start + 1..].find(quote_char)?;
    Some(text[start + 1..start + 1 + end].to_owned())
}

fn path_token(text: &str) -> Option<String> {
    text.split(' ')
        .find(|word| word.starts_with('/'))
        .map(str::to_owned)
}

fn resolve_all(texts: &[String], vocabulary: &Vocabulary) -> Result<Vec<Target>, Unanswerable> {
    texts
        .iter()
        .map(|text| {
            vocabulary.resolve(text, true).ok_or_else(|| {
                let mut known: Vec<&str> = vocabulary
                    .events
                    .iter()
                    .chain(&vocabulary.pages)
                    .map(String::as_str)
                    .take(12)
                    .collect();
                known.sort_unstable();
                Unanswerable {
                    reason: format!(
                        "I found no event or page called \"{text}\" in your data. Some names I know: {}.",
                        known.join(", ")
                    ),
                }
            })
        })
        .collect()
}

/// The fragments of "funnel from A to B to C", "conversion from A to B", "funnel: A > B > C"
/// between separators, with the separator before each (`to` may also be part of a name,
/// as in "Added To Cart"; [`join_steps`] decides).
fn funnel_steps(text: &str) -> Option<Vec<(String, String)>> {
    let start = ["funnel", "conversion", "convert", "converted"]
        .iter()
        .filter_map(|word| text.find(word).map(|at| at + word.len()))
        .min()?;
    let mut steps_text = text[start..].trim();
    for prefix in ["rate", "s", "ed"] {
        steps_text = steps_text.strip_prefix(prefix).unwrap_or(steps_text).trim();
    }
    for prefix in ["from", "between", "of"] {
        steps_text = steps_text.strip_prefix(prefix).unwrap_or(steps_text).trim();
    }
    let mut fragments: Vec<(String, String)> = vec![(String::new(), String::new())];
    for word in steps_text.split(' ') {
        if ["to", "then", "and", ">", "->", "→"].contains(&word) {
            fragments.push((word.to_owned(), String::new()));
        } else if let Some((_, fragment)) = fragments.last_mut() {
            if !fragment.is_empty() {
                fragment.push(' ');
            }
            fragment.push_str(word.trim_matches(['"', '\'']));
        }
    }
    fragments.retain(|(_, fragment)| !fragment.is_empty());
    (fragments.len() >= 2).then_some(fragments)
}

/// Steps from fragments: from each position, the longest run of fragments that is exactly a
/// known name, else the fragment alone (matched fuzzily).
fn join_steps(fragments: &[(String, String)], vocabulary: &Vocabulary) -> Vec<String> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < fragments.len() {
        let joined = |j: usize| {
            let mut text = fragments[i].1.clone();
            for (separator, fragment) in &fragments[i + 1..=j] {
                text.push_str(&format!(" {separator} {fragment}"));
            }
            text
        };
        let end = (i + 1..fragments.len())
            .rev()
            .find(|&j| vocabulary.resolve(&joined(j), false).is_some())
            .unwrap_or(i);
        steps.push(joined(end));
        i = end + 1;
    }
    steps
}

/// "who did A but not B", "A but never B", "A without B".
fn but_not(text: &str) -> Option<(String, String)> {
    for separator in [
        " but not ",
        " but never ",
        " but didn't ",
        " but did not ",
        " without ",
    ] {
        if let Some((left, right)) = text.split_once(separator) {
            let strip = |part: &str, fillers: &[&str]| {
                let mut part = part.trim().to_owned();
                loop {
                    let before = part.clone();
                    for filler in fillers {
                        if let Some(rest) = part.strip_prefix(filler) {
                            part = rest.trim().to_owned();
                        }
                    }
                    if part == before {
                        return part.trim_matches(['"', '\'']).to_owned();
                    }
                }
            };
            let fillers = [
                "how many",
                "people",
                "persons",
                "users",
                "visitors",
                "who",
                "that",
                "did",
                "have",
                "had",
                "viewed",
                "visited",
                "triggered",
                "do",
                "the",
                "page",
                "event",
            ];
            let (left, right) = (strip(left, &fillers), strip(right, &fillers));
            if !left.is_empty() && !right.is_empty() {
                return Some((left, right));
            }
        }
    }
    None
}

/// The id in "activity of user X", "what did X do", "events of person X", "timeline of X".
fn person_mentioned(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let after = |markers: &[&str]| {
        words.windows(2).find_map(|pair| {
            markers
                .contains(&pair[0])
                .then(|| pair[1].trim_matches(['"', '\'']).to_owned())
        })
    };
    let mentions_activity = ["activity", "timeline", "journey", "history"]
        .iter()
        .any(|word| words.contains(word));
    if mentions_activity || text.starts_with("events of ") || text.starts_with("events for ") {
        return after(&["user", "person", "visitor", "customer"])
            .or_else(|| after(&["of", "for", "by"]))
            .filter(|id| {
                !id.is_empty()
                    && !["the", "a", "my", "our", "user", "person"].contains(&id.as_str())
            });
    }
    if let ["what", "did", id, "do", ..] = words.as_slice() {
        return Some(id.trim_matches(['"', '\'']).to_owned());
    }
    None
}

/// A breakdown the translator would otherwise drop: "sessions by referrer", "views per page".
fn breakdown(text: &str) -> Option<&'static str> {
    [
        ("page", "pages"),
        ("pages", "pages"),
        ("url", "pages"),
        ("path", "pages"),
        ("referrer", "referrers"),
        ("referrers", "referrers"),
        ("source", "UTM sources"),
        ("sources", "UTM sources"),
        ("campaign", "UTM campaigns"),
        ("campaigns", "UTM campaigns"),
        ("event", "events"),
        ("events", "events"),
    ]
    .iter()
    .find(|(word, _)| {
        ["by", "per", "for each", "broken down by"]
            .iter()
            .any(|lead| contains_words(text, &format!("{lead} {word}")))
    })
    .map(|(_, top)| *top)
}

/// `id` (found in the lowercased question) as the question spelt it: ids are case-sensitive.
fn original_case(question: &str, id: &str) -> String {
    question
        .split(|c: char| c.is_whitespace() || c == '?' || c == ',')
        .map(|word| word.trim_matches(['"', '\'', '.', '!']))
        .find(|word| word.to_lowercase() == id)
        .map_or_else(|| id.to_owned(), str::to_owned)
}

fn top_count(text: &str) -> u32 {
    text.split(' ')
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|pair| {
            (pair[0] == "top")
                .then(|| pair[1].parse::<u32>().ok())
                .flatten()
        })
        .filter(|n| (1..=100).contains(n))
        .unwrap_or(10)
}

/// What a total, series or comparison counts.
#[derive(Debug, Clone, PartialEq)]
enum Metric {
    PageViews,
    Events,
    Visitors,
    Persons,
    Sessions,
    BounceRate,
    Duration,
    /// A named event or page; `of` the base metric when the question names one too
    /// ("visitors of /pricing"), else its occurrences.
    Named(Target, Option<Box<Metric>>),
}

impl Metric {
    fn find(text: &str, target: Option<Target>) -> Option<Metric> {
        let has = |words: &[&str]| words.iter().any(|word| text.contains(word));
        let base = if has(&["bounce"]) {
            Some(Metric::BounceRate)
        } else if has(&["duration", "how long", "time spent", "session length"]) {
            Some(Metric::Duration)
        } else if has(&["session"]) {
            Some(Metric::Sessions)
        } else if has(&["page view", "pageview", "views", "page hits"]) {
            Some(Metric::PageViews)
        } else if has(&["visitor", "visits", "traffic"]) {
            Some(Metric::Visitors)
        } else if has(&["person", "people", "users", "customers", "persons"]) {
            Some(Metric::Persons)
        } else if has(&["event", "actions", "activity"]) {
            Some(Metric::Events)
        } else {
            None
        };
        match (target, base) {
            (
                Some(target),
                Some(base @ (Metric::Visitors | Metric::Persons | Metric::PageViews)),
            ) => Some(Metric::Named(target, Some(Box::new(base)))),
            (Some(target), Some(Metric::Events) | None) => Some(Metric::Named(target, None)),
            (_, base) => base,
        }
    }

    fn label(&self) -> String {
        match self {
            Metric::PageViews => "page views".into(),
            Metric::Events => "events".into(),
            Metric::Visitors => "unique visitors".into(),
            Metric::Persons => "persons".into(),
            Metric::Sessions => "sessions".into(),
            Metric::BounceRate => "bounce rate (%)".into(),
            Metric::Duration => "average session duration (s)".into(),
            Metric::Named(target, None) => target.describe(),
            Metric::Named(target, Some(base)) => {
                format!("{} with {}", base.label(), target.describe())
            }
        }
    }

    fn uses_sessions(&self) -> bool {
        matches!(
            self,
            Metric::Sessions | Metric::BounceRate | Metric::Duration
        )
    }

    /// The aggregate of the metric over the rows where `condition` holds (all rows: `None`).
    fn aggregate(&self, condition: Option<&str>) -> String {
        let counted = |plain: &str, conditional: &str, argument: &str| match condition {
            None => format!("{plain}({argument})"),
            Some(condition) if argument.is_empty() => format!("{conditional}({condition})"),
            Some(condition) => format!("{conditional}({argument}, {condition})"),
        };
        match self {
            Metric::PageViews => format!("countIf({})", both(&page_view_sql(), condition)),
            Metric::Events | Metric::Sessions => counted("count", "countIf", ""),
            Metric::Visitors => counted("uniqExact", "uniqExactIf", VISITOR),
            Metric::Persons => counted("uniqExact", "uniqExactIf", "person_id"),
            Metric::BounceRate => format!(
                "round(100 * {} / greatest({}, 1), 1)",
                counted("sum", "sumIf", "is_bounce"),
                counted("count", "countIf", "")
            ),
            Metric::Duration => format!(
                "round({} / greatest({}, 1) / 1000, 1)",
                counted("sum", "sumIf", "duration_ms"),
                counted("count", "countIf", "")
            ),
            Metric::Named(target, None) => {
                format!("countIf({})", both(&target.condition(), condition))
            }
            Metric::Named(target, Some(base)) => {
                base.aggregate(Some(&both(&target.condition(), condition)))
            }
        }
    }

    /// `(view, time column, the rows every value of it counts)`.
    fn source(&self) -> (&'static str, &'static str, Option<String>) {
        if self.uses_sessions() {
            ("sessions", "start_time", None)
        } else {
            ("events", "event_time", Some(activity_sql()))
        }
    }
}

/// `a AND b`, or `a` alone.
fn both(a: &str, b: Option<&str>) -> String {
    b.map_or_else(|| a.to_owned(), |b| format!("{a} AND {b}"))
}

fn total(metric: Metric, period: Period) -> Translation {
    let (view, time, rows) = metric.source();
    let alias = "value";
    let sql = format!(
        "SELECT {} AS {alias} FROM {view} WHERE {}",
        metric.aggregate(None),
        both(&period.condition(time), rows.as_deref())
    );
    Translation {
        sql,
        shape: Shape::Totals,
        title: metric.label(),
        period: Some(period),
        notes: Vec::new(),
    }
}

fn comparison(metric: Metric, period: Period, tz: Tz) -> Translation {
    let previous = period.previous(tz);
    let (view, time, rows) = metric.source();
    let sql = format!(
        "SELECT {} AS this_period, {} AS previous_period FROM {view} WHERE {}",
        metric.aggregate(Some(&period.condition(time))),
        metric.aggregate(Some(&previous.condition(time))),
        both(
            &format!(
                "{time} >= toDateTime({}) AND {time} < toDateTime({})",
                previous.from, period.to
            ),
            rows.as_deref()
        ),
    );
    Translation {
        sql,
        shape: Shape::Comparison,
        title: format!(
            "{}: {} against {}",
            metric.label(),
            period.describe(),
            previous.describe()
        ),
        period: Some(period),
        notes: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    fn find(text: &str) -> Option<Bucket> {
        let has = |words: &[&str]| words.iter().any(|word| contains_words(text, word));
        if has(&["per hour", "hourly", "by hour", "each hour", "every hour"]) {
            Some(Bucket::Hour)
        } else if has(&["per week", "weekly", "by week", "each week"]) {
            Some(Bucket::Week)
        } else if has(&["per month", "monthly", "by month", "each month"]) {
            Some(Bucket::Month)
        } else if has(&[
            "per day",
            "daily",
            "by day",
            "each day",
            "every day",
            "over time",
            "trend",
            "a day",
        ]) {
            Some(Bucket::Day)
        } else {
            None
        }
    }

    fn expression(self, column: &str, tz: Tz) -> String {
        let tz = quote(tz.name());
        match self {
            Bucket::Hour => format!("toStartOfHour({column}, {tz})"),
            Bucket::Day => format!("toDate({column}, {tz})"),
            Bucket::Week => format!("toMonday(toDate({column}, {tz}))"),
            Bucket::Month => format!("toStartOfMonth(toDate({column}, {tz}))"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }
}

fn series(metric: Metric, bucket: Bucket, period: Period, tz: Tz) -> Translation {
    let (view, time, rows) = metric.source();
    let name = bucket.name();
    let sql = format!(
        "SELECT {} AS {name}, {} AS value FROM {view} WHERE {} GROUP BY {name} ORDER BY {name}",
        bucket.expression(time, tz),
        metric.aggregate(None),
        both(&period.condition(time), rows.as_deref())
    );
    Translation {
        sql,
        shape: Shape::Series,
        title: format!("{} per {name}", metric.label()),
        period: Some(period),
        notes: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Pages,
    EntryPages,
    ExitPages,
    Events,
    Referrers,
    UtmSources,
    UtmCampaigns,
}

impl Dimension {
    fn find(text: &str) -> Option<Dimension> {
        let has = |words: &[&str]| words.iter().any(|word| text.contains(word));
        if has(&["landing page", "entry page"]) {
            Some(Dimension::EntryPages)
        } else if has(&["exit page"]) {
            Some(Dimension::ExitPages)
        } else if has(&["campaign"]) {
            Some(Dimension::UtmCampaigns)
        } else if has(&["utm", "source"]) {
            Some(Dimension::UtmSources)
        } else if has(&[
            "referrer",
            "referer",
            "referring",
            "where do visitors come from",
        ]) {
            Some(Dimension::Referrers)
        } else if has(&["page", "url", "path", "screen"]) {
            Some(Dimension::Pages)
        } else if has(&["event"]) {
            Some(Dimension::Events)
        } else {
            None
        }
    }

    /// `(view, key, the rows it counts, what the answer calls it)`.
    fn parts(self) -> (&'static str, String, String, &'static str) {
        let session = |key: &str, name| ("sessions", key.to_owned(), format!("{key} != ''"), name);
        match self {
            Dimension::Pages => (
                "events",
                page_view_location_sql().to_owned(),
                page_view_sql(),
                "pages",
            ),
            Dimension::Events => (
                "events",
                "name".to_owned(),
                "type = 'track'".to_owned(),
                "events",
            ),
            Dimension::EntryPages => session("entry_path", "landing pages"),
            Dimension::ExitPages => session("exit_path", "exit pages"),
            Dimension::Referrers => session("entry_referrer", "referrers"),
            Dimension::UtmSources => session("utm_source", "UTM sources"),
            Dimension::UtmCampaigns => session("utm_campaign", "UTM campaigns"),
        }
    }
}

fn top(dimension: Dimension, count: u32, period: Period) -> Translation {
    let (view, key, rows, name) = dimension.parts();
    let time = if view == "sessions" {
        "start_time"
    } else {
        "event_time"
    };
    let unit = if view == "sessions" {
        "session_count"
    } else {
        "count"
    };
    let sql = format!(
        "SELECT {key} AS label, count() AS {unit} FROM {view} WHERE {} AND {rows} GROUP BY label ORDER BY {unit} DESC, label LIMIT {count}",
        period.condition(time)
    );
    Translation {
        sql,
        shape: Shape::Top,
        title: format!("top {count} {name}"),
        period: Some(period),
        notes: Vec::new(),
    }
}

fn funnel(steps: Vec<Target>, period: Period) -> Translation {
    let conditions: Vec<String> = steps.iter().map(Target::condition).collect();
    let reached: Vec<String> = (1..=steps.len())
        .map(|k| format!("countIf(level >= {k}) AS step_{k}"))
        .collect();
    let sql = format!(
        "SELECT {} FROM (SELECT person_id, windowFunnel(86400)(event_time, {}) AS level FROM events WHERE {} AND {} GROUP BY person_id)",
        reached.join(", "),
        conditions.join(", "),
        period.condition("event_time"),
        activity_sql()
    );
    let names: Vec<&str> = steps.iter().map(Target::name).collect();
    Translation {
        sql,
        title: format!("funnel {}", names.join(" → ")),
        shape: Shape::Funnel(steps),
        period: Some(period),
        notes: Vec::new(),
    }
}

fn did_but_not(did: &Target, not: &Target, period: Period) -> Translation {
    let sql = format!(
        "SELECT count() AS persons FROM (SELECT person_id, max({}) AS did_first, max({}) AS did_second FROM events WHERE {} GROUP BY person_id) WHERE did_first = 1 AND did_second = 0",
        did.condition(),
        not.condition(),
        period.condition("event_time")
    );
    Translation {
        sql,
        shape: Shape::Totals,
        title: format!("persons with {} but no {}", did.describe(), not.describe()),
        period: Some(period),
        notes: Vec::new(),
    }
}

fn activity(id: &str, period: Option<Period>) -> Translation {
    let id = quote(id);
    let when = period
        .as_ref()
        .map(|period| format!(" AND {}", period.condition("event_time")))
        .unwrap_or_default();
    let sql = format!(
        "SELECT event_time, type, if(type = 'track', name, {}) AS what, session_id FROM events WHERE person_id IN (SELECT person_id FROM events WHERE user_id = {id} OR anonymous_id = {id} OR person_id = {id}){when} ORDER BY event_time, message_id LIMIT 200",
        page_view_location_sql()
    );
    Translation {
        sql,
        shape: Shape::Activity,
        title: format!("activity of {}", id.trim_matches('\'')),
        period,
        notes: Vec::new(),
    }
}

fn retention(period: Period, tz: Tz) -> Translation {
    let week = Bucket::Week.expression("event_time", tz);
    let sql = format!(
        "SELECT cohort_week, intDiv(toRelativeDayNum(active_week) - toRelativeDayNum(cohort_week), 7) AS weeks_later, count() AS persons \
         FROM (SELECT person_id, {week} AS active_week FROM events WHERE {range} AND {activity} GROUP BY person_id, active_week) AS active \
         JOIN (SELECT person_id, min({week}) AS cohort_week FROM events WHERE {range} AND {activity} GROUP BY person_id) AS cohorts USING (person_id) \
         GROUP BY cohort_week, weeks_later ORDER BY cohort_week, weeks_later",
        range = period.condition("event_time"),
        activity = activity_sql(),
    );
    Translation {
        sql,
        shape: Shape::Retention,
        title: "weekly retention: persons by first active week".into(),
        period: Some(period),
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary {
            events: vec!["Signed Up".into(), "Checkout Completed".into()],
            pages: vec!["/".into(), "/pricing".into(), "Home Screen".into()],
        }
    }

    fn ask(question: &str) -> Result<Translation, Unanswerable> {
        let vocabulary = vocabulary();
        translate(
            question,
            Context {
                today: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
                tz: Tz::UTC,
                vocabulary: &vocabulary,
            },
        )
    }

    #[test]
    fn shapes_are_recognised() {
        let shape = |q: &str| ask(q).unwrap_or_else(|e| panic!("{q}: {e}")).shape;
        assert_eq!(shape("How many page views yesterday?"), Shape::Totals);
        assert_eq!(shape("top 5 pages last month"), Shape::Top);
        assert_eq!(shape("visitors per day in the last 14 days"), Shape::Series);
        assert_eq!(
            shape("compare sessions with the previous period"),
            Shape::Comparison
        );
        assert_eq!(shape("weekly retention"), Shape::Retention);
        assert_eq!(shape("what did alice do"), Shape::Activity);
        assert!(
            matches!(shape("funnel from /pricing to signed up"), Shape::Funnel(steps) if steps.len() == 2)
        );
        assert_eq!(
            shape("how many people signed up but not checkout completed"),
            Shape::Totals
        );
    }

    #[test]
    fn names_resolve_case_insensitively_and_fuzzily() {
        let vocabulary = vocabulary();
        assert_eq!(
            vocabulary.resolve("signed_up", false),
            Some(Target::Event("Signed Up".into()))
        );
        assert_eq!(
            vocabulary.resolve("Sigend Up", true),
            Some(Target::Event("Signed Up".into()))
        );
        assert_eq!(
            vocabulary.resolve("/pricng", true),
            Some(Target::Page("/pricing".into()))
        );
        assert_eq!(vocabulary.resolve("purchase", true), None);
    }

    #[test]
    fn unknown_questions_and_names_are_refused_plainly() {
        assert!(ask("what is the meaning of life").is_err());
        let refusal = ask("funnel from /pricing to purchase").unwrap_err();
        assert!(refusal.reason.contains("\"purchase\""), "{refusal}");
    }
}
