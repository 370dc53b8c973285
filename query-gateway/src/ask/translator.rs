//! The offline translator: a question in plain English to a [`TypedQuery`] of the query model,
//! without a model. It writes no SQL: its numbers are the dashboard's by construction.
//!
//! Every word must be accounted for. Recognisers take the tokens they understand, in this
//! order: periods ([`super::dates`]); comparison words; retention; funnel words; compound
//! metrics ("bounce rate", "pages per session"); time buckets ("daily", "per hour");
//! dimensions ("by country", "top 5 pages"); the tenant's names (events by their words,
//! "sign-ups" for `Signed Up`; pages by path or by name, "the pricing page"; sources,
//! channels, devices, browsers, systems, campaigns, cities, regions, property values, all
//! read from the tenant's data; countries by name); plain metrics. A word none of them took
//! and that carries meaning ("new", "revenue", "not" left alone, an unknown name) makes the
//! question [`Unanswerable`], with the word named and the closest names the tenant has: a
//! dropped qualifier would be a confident wrong number.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::dates::{self, Pick};
use super::typed::{FunnelSpec, PersonSpec, RetentionSpec, TypedQuery};
use super::vocabulary::Vocabulary;
use super::words::{Kind, Token, name_stems, stem, tokenize};
use crate::query::model::VisitAttribute;

/// Questions the dashboard offers when one cannot be answered.
pub const SUGGESTIONS: [&str; 6] = [
    "How many unique visitors did we have in the last 7 days?",
    "What were the top pages last month?",
    "Page views per day in the last 14 days",
    "What's our bounce rate this week?",
    "Visitors by country this month compared to the previous period",
    "Weekly retention over the last 8 weeks",
];

/// Where and when a question is asked.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Today in the tenant's time zone.
    pub today: NaiveDate,
    /// The tenant's zone.
    pub tz: Tz,
    /// The tenant's names.
    pub vocabulary: &'a Vocabulary,
}

/// A question understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// What runs.
    pub query: TypedQuery,
    /// How the translator read names it matched loosely, and defaults it applied.
    pub notes: Vec<String>,
}

/// Why a question cannot be answered, in words for the asker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswerable {
    /// The reason, naming the words not understood.
    pub reason: String,
}

fn unanswerable(reason: impl Into<String>) -> Unanswerable {
    Unanswerable {
        reason: reason.into(),
    }
}

/// Words that carry no qualifier: they may be left over.
const FILLERS: &[&str] = &[
    "a",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "cheers",
    "after",
    "combined",
    "contain",
    "contains",
    "containing",
    "build",
    "need",
    "needs",
    "want",
    "wants",
    "tagged",
    "whose",
    "viewing",
    "visiting",
    "row",
    "rows",
    "counting",
    "together",
    "about",
    "across",
    "active",
    "all",
    "also",
    "am",
    "among",
    "amount",
    "an",
    "analytics",
    "and",
    "any",
    "anyone",
    "anything",
    "app",
    "are",
    "arrive",
    "arrived",
    "as",
    "at",
    "be",
    "been",
    "being",
    "breakdown",
    "bring",
    "brings",
    "brought",
    "by",
    "can",
    "came",
    "check",
    "come",
    "complete",
    "completed",
    "could",
    "count",
    "counts",
    "currently",
    "data",
    "did",
    "display",
    "do",
    "does",
    "done",
    "down",
    "drive",
    "drove",
    "driven",
    "during",
    "far",
    "figure",
    "figures",
    "find",
    "for",
    "from",
    "generate",
    "generated",
    "get",
    "getting",
    "give",
    "go",
    "got",
    "had",
    "happen",
    "happened",
    "has",
    "have",
    "having",
    "here",
    "hit",
    "hits",
    "how",
    "i",
    "in",
    "included",
    "includes",
    "into",
    "is",
    "it",
    "its",
    "just",
    "know",
    "land",
    "landed",
    "let",
    "like",
    "list",
    "look",
    "looked",
    "made",
    "make",
    "many",
    "me",
    "metric",
    "metrics",
    "most",
    "much",
    "my",
    "number",
    "numbers",
    "of",
    "on",
    "one",
    "opened",
    "open",
    "or",
    "our",
    "ours",
    "out",
    "over",
    "overall",
    "people",
    "performed",
    "pick",
    "picked",
    "please",
    "pull",
    "reach",
    "reached",
    "read",
    "receive",
    "received",
    "report",
    "saw",
    "see",
    "seen",
    "send",
    "sends",
    "sent",
    "show",
    "site",
    "so",
    "someone",
    "something",
    "stats",
    "statistics",
    "sum",
    "tally",
    "tell",
    "that",
    "the",
    "their",
    "them",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "throughout",
    "times",
    "to",
    "top",
    "total",
    "totals",
    "trigger",
    "triggered",
    "up",
    "us",
    "use",
    "used",
    "users",
    "using",
    "via",
    "view",
    "viewed",
    "visit",
    "visited",
    "visitors",
    "was",
    "we",
    "website",
    "went",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "whole",
    "will",
    "with",
    "within",
    "would",
    "you",
    "your",
];

/// What the question asks for, assembled as recognisers run.
#[derive(Debug, Default)]
struct Ask {
    metrics: Vec<&'static str>,
    dimensions: Vec<String>,
    names: Vec<Named>,
    limit: Option<u32>,
    ascending: bool,
    comparison: Option<Value>,
    /// The comparison was only "A vs B": with two values of one attribute it is a breakdown.
    versus_only: bool,
    retention: bool,
    funnel: bool,
    /// "from A to B" with names: a funnel.
    from_to: bool,
    window_secs: Option<u32>,
    person: Option<String>,
    notes: Vec<String>,
    /// "how many …" with no metric word: a count of what is named.
    counted: bool,
    /// A ranking asks for one row ("which page had the most …").
    wants_one: bool,
    /// "by count": the count of the breakdown's own thing.
    by_count: bool,
    /// "how many times": a count of events or page views, not of people.
    times: bool,
    /// "one row each", "for each": the values named are groups, not one filter.
    each: bool,
}

/// One name matched.
#[derive(Debug, Clone)]
struct Named {
    dimension: String,
    operator: &'static str,
    value: String,
    at: usize,
    /// After "but": "had a sign-up but no completed checkout".
    after_but: bool,
    /// Listed after another of its dimension with "and": for events and pages, "did both".
    joined_by_and: bool,
}

/// Translates `question` at `context`.
///
/// # Errors
/// [`Unanswerable`] naming what was not understood.
pub fn translate(question: &str, context: Context<'_>) -> Result<Translation, Unanswerable> {
    let mut tokens = tokenize(question);
    let mut ask = Ask::default();
    let vocabulary = context.vocabulary;
    let picks = dates::find(&mut tokens, context.today);
    refuse_unsupported(&tokens)?;
    comparison(&mut tokens, &picks, &mut ask)?;
    retention_words(&mut tokens, &mut ask);
    funnel_words(&mut tokens, &mut ask);
    compound_metrics(&mut tokens, &mut ask);
    time_buckets(&mut tokens, &mut ask);
    literal_names(&mut tokens, vocabulary, &mut ask)?;
    property_values(&mut tokens, vocabulary, &mut ask);
    sections(&mut tokens, vocabulary, &mut ask);
    pages_by_words(&mut tokens, vocabulary, &mut ask);
    goals_by_label(&mut tokens, vocabulary, &mut ask);
    dimensions(&mut tokens, vocabulary, &mut ask);
    events_by_words(&mut tokens, vocabulary, &mut ask)?;
    visit_values(&mut tokens, vocabulary, &mut ask);
    countries(&mut tokens, &mut ask);
    qualifiers(&mut tokens, &mut ask);
    if take_any(
        &mut tokens,
        &[
            &["one", "row", "each"],
            &["for", "each"],
            &["each"],
            &["respectively"],
            &["separately"],
        ],
    )
    .is_some()
    {
        ask.each = true;
    }
    person(&mut tokens, &mut ask);
    plain_metrics(&mut tokens, &mut ask);
    negations(&mut tokens, &mut ask)?;
    leftovers(&tokens, vocabulary, &ask.names)?;
    let mains: Vec<&Pick> = picks
        .iter()
        .filter(|pick| !pick.before && !pick.year_ago)
        .collect();
    if mains.len() > 1 && ask.comparison.is_none() {
        return Err(unanswerable(
            "I read two periods and no comparison between them: ask for one period, or compare them (\"… vs …\").",
        ));
    }
    assemble(ask, mains.first().copied(), context)
}

fn take(tokens: &mut [Token], from: usize, length: usize) {
    for token in tokens.iter_mut().skip(from).take(length) {
        token.used = true;
    }
}

/// Whether `pattern` (words, `a|b` alternatives, `*` any word) matches unused tokens at `i`.
fn matches_at(tokens: &[Token], i: usize, pattern: &[&str]) -> bool {
    pattern.iter().enumerate().all(|(k, alternatives)| {
        tokens.get(i + k).is_some_and(|token| {
            !token.used
                && (*alternatives == "*"
                    || alternatives
                        .split('|')
                        .any(|alternative| alternative == token.word))
        })
    })
}

/// The first position `pattern` matches at.
fn find(tokens: &[Token], pattern: &[&str]) -> Option<usize> {
    (0..tokens.len()).find(|i| matches_at(tokens, *i, pattern))
}

/// Takes the first match of any of `patterns`; its position.
fn take_any(tokens: &mut [Token], patterns: &[&[&str]]) -> Option<usize> {
    for pattern in patterns {
        if let Some(i) = find(tokens, pattern) {
            take(tokens, i, pattern.len());
            return Some(i);
        }
    }
    None
}

fn take_at(tokens: &mut [Token], at: usize, pattern: &[&str]) -> bool {
    let found = matches_at(tokens, at, pattern);
    if found {
        take(tokens, at, pattern.len());
    }
    found
}

/// Questions about what the model does not hold, refused by their words before any of them
/// could be read as something else ("new visitors" is not "visitors").
fn refuse_unsupported(tokens: &[Token]) -> Result<(), Unanswerable> {
    const UNSUPPORTED: &[(&[&str], &str)] = &[
        (
            &[
                "new|returning|repeat|first",
                "visitors|users|people|customers|vs|time",
            ],
            "new and returning visitors",
        ),
        (&["returning"], "returning visitors"),
        (
            &["revenue|sales|spend|spent|cost|costs|price|prices|money|income|ltv|aov"],
            "revenue and costs",
        ),
        (&["order", "value"], "order values"),
        (&["lifetime", "value"], "lifetime value"),
        (&["time", "on", "page"], "time on page"),
        (&["scroll", "depth"], "scroll depth"),
        (&["exit", "rate|rates"], "exit rates"),
        (&["why"], "causes"),
        (
            &["next|will|predict|forecast|projected|expect"],
            "predictions",
        ),
        (
            &["right", "now"],
            "the last minutes (the dashboard's live counter shows them)",
        ),
    ];
    for (pattern, what) in UNSUPPORTED {
        if let Some(i) = find(tokens, pattern) {
            let words: Vec<&str> = tokens[i..i + pattern.len()]
                .iter()
                .map(|t| t.raw.as_str())
                .collect();
            return Err(unanswerable(format!(
                "I can't answer questions about {what} (\"{}\"): the query model does not hold them, and answering without would give a wrong number.",
                words.join(" ")
            )));
        }
    }
    Ok(())
}

fn comparison(tokens: &mut [Token], picks: &[Pick], ask: &mut Ask) -> Result<(), Unanswerable> {
    let yoy = take_any(tokens, &[&["year", "over", "year"], &["yoy"]]).is_some();
    let mut versus = false;
    while take_any(tokens, &[&["versus"], &["vs"]]).is_some() {
        versus = true;
    }
    let connector = take_any(
        tokens,
        &[
            &["compared", "to|with|against"],
            &["in", "comparison", "to|with"],
            &["against"],
            &["compare", "with|to"],
            &["compare"],
            &["than"],
            &["relative", "to"],
        ],
    );
    let change = take_any(
        tokens,
        &[
            &[
                "change|changed|changes|growth|grow|grew|grown|increase|increased|decrease|decreased|drop|dropped|improve|improved|trending|trended|shift|shifted",
            ],
            &["more|less|fewer|higher|lower|better|worse"],
        ],
    );
    if !yoy && !versus && connector.is_none() && change.is_none() {
        if picks.iter().any(|pick| pick.before || pick.year_ago) {
            return Err(unanswerable(
                "I read a period relative to another (\"the week before\", \"a year ago\") but no comparison.",
            ));
        }
        return Ok(());
    }
    let main = picks.iter().find(|pick| !pick.before && !pick.year_ago);
    if let (Some(main), Some(before)) = (main, picks.iter().find(|pick| pick.before))
        && !dates::before_span_fits(&before.range, &main.range)
    {
        return Err(unanswerable(
            "The period to compare with is not as long as the period asked about: ask for the previous period, or give both as dates.",
        ));
    }
    let custom = picks
        .iter()
        .skip(1)
        .find(|pick| !pick.before && !pick.year_ago);
    ask.versus_only = versus && !yoy && connector.is_none() && change.is_none() && picks.len() <= 1;
    ask.comparison = Some(if yoy || picks.iter().any(|p| p.year_ago) {
        json!({"mode": "year_over_year"})
    } else if let Some(target) = custom {
        json!({"mode": "custom", "date_range": target.range})
    } else {
        json!({"mode": "previous_period"})
    });
    Ok(())
}

fn retention_words(tokens: &mut [Token], ask: &mut Ask) {
    ask.retention = take_any(
        tokens,
        &[
            &["come|comes|came|coming", "back"],
            &["retention"],
            &["retain|retained|retaining"],
            &["cohort|cohorts"],
            &["return|returned|returns"],
            &["stick", "around"],
        ],
    )
    .is_some();
    if ask.retention {
        while take_any(
            tokens,
            &[&["cohort|cohorts|weekly|retention"], &["by", "week"]],
        )
        .is_some()
        {}
    }
}

fn funnel_words(tokens: &mut [Token], ask: &mut Ask) {
    if let Some(i) = find(tokens, &["funnel|funnels"]) {
        ask.funnel = true;
        take(tokens, i, 1);
        // "the checkout funnel": a label, not a step.
        if i > 0
            && tokens[i - 1].kind == Kind::Word
            && !FILLERS.contains(&tokens[i - 1].word.as_str())
        {
            tokens[i - 1].used = true;
        }
    }
    if let Some(secs) = window(tokens) {
        ask.window_secs = Some(secs);
    }
    if let Some(from) = find(tokens, &["from"])
        && (from + 2..tokens.len()).any(|k| matches_at(tokens, k, &["to"]))
        && tokens
            .get(from + 1)
            .is_some_and(|t| matches!(t.kind, Kind::Path | Kind::Quoted) || ask.funnel)
    {
        ask.from_to = true;
    }
    while let Some(i) = take_any(
        tokens,
        &[
            &["went", "on", "to"],
            &["go", "on", "to"],
            &["and", "then"],
            &["then"],
            &["followed", "by"],
            &["of", "the", "people|visitors|users|ones"],
            &["of", "those|them"],
        ],
    ) {
        let _ = i;
        ask.funnel = true;
    }
    if ask.funnel {
        take_any(tokens, &[&["->"], &["step|steps"]]);
    }
}

/// "within 2 days", "in an hour", "a 7-day window": the funnel's window, seconds. One too long
/// to count is `u32::MAX`, which the funnel refuses: never a default in its place.
fn window(tokens: &mut [Token]) -> Option<u32> {
    let unit = |tokens: &[Token], k: usize| tokens.get(k).and_then(|t| window_unit(&t.word));
    let (start, number_at) = (0..tokens.len()).find_map(|i| {
        if matches_at(tokens, i, &["within|in"])
            && dates::number(tokens, i + 1).is_some()
            && unit(tokens, i + 2).is_some()
        {
            Some((i, i + 1))
        } else if dates::number(tokens, i).is_some()
            && unit(tokens, i + 1).is_some()
            && matches_at(tokens, i + 2, &["window"])
        {
            Some((i, i))
        } else {
            None
        }
    })?;
    let secs = unit(tokens, number_at + 1)
        .zip(dates::number(tokens, number_at))
        .and_then(|(unit, n)| unit.checked_mul(n))
        .unwrap_or(u32::MAX);
    take(tokens, start, 3);
    if start == number_at && start > 0 {
        take_at(tokens, start - 1, &["a|with|in"]);
    }
    Some(secs)
}

fn window_unit(word: &str) -> Option<u32> {
    match word.trim_end_matches('s') {
        "minute" | "min" => Some(60),
        "hour" => Some(3600),
        "day" => Some(86_400),
        "week" => Some(7 * 86_400),
        _ => None,
    }
}

/// Metrics named in more than one word.
const METRIC_PHRASES: &[(&[&str], &str)] = &[
    (&["bounce|bouncing", "rate|rates|percentage"], "bounce_rate"),
    (&["bouncerate"], "bounce_rate"),
    (
        &[
            "average|avg|mean|typical",
            "session|visit",
            "duration|durations|length|lengths|time",
        ],
        "visit_duration",
    ),
    (
        &["session|visit", "duration|durations|length|lengths"],
        "visit_duration",
    ),
    (&["time", "spent", "on", "site|the"], "visit_duration"),
    (&["time", "on", "site"], "visit_duration"),
    (
        &["views|pageviews|pages", "per", "visit|session"],
        "views_per_visit",
    ),
    (
        &["page", "views", "per", "visit|session"],
        "views_per_visit",
    ),
    (
        &["views|pageviews|pages", "in", "a|each|the", "visit|session"],
        "views_per_visit",
    ),
    (
        &["conversion|conversions", "rate|rates|percentage"],
        "conversion_rate",
    ),
    (&["convert", "rate"], "conversion_rate"),
    (
        &[
            "percentage|share|percent|proportion",
            "of",
            "visitors|users|people|traffic",
        ],
        "percentage",
    ),
];

/// Metrics of more than one word, and the phrasings of averages.
fn compound_metrics(tokens: &mut [Token], ask: &mut Ask) {
    for (pattern, metric) in METRIC_PHRASES {
        while let Some(i) = find(tokens, pattern) {
            take(tokens, i, pattern.len());
            push_metric(ask, metric);
        }
    }
    take_any(tokens, &[&["paid|pay|payed|paying", "with|by|via|using"]]);
    if take_any(tokens, &[&["percentage|share|percent|proportion"]]).is_some() {
        push_metric(ask, "percentage");
    }
    if take_any(tokens, &[&["event", "count|counts"]]).is_some() {
        push_metric(ask, "events");
    }
    if let Some(i) = find(tokens, &["how", "long"]) {
        take(tokens, i, 2);
        push_metric(ask, "visit_duration");
        take_any(tokens, &[&["stay|stayed|spend|last|lasted|remain|take"]]);
    }
    // "how many pages do people view per session": pages … per session
    if let Some(per) = find(tokens, &["per|each|every", "session|visit"])
        && let Some(pages) = (0..per)
            .rev()
            .find(|i| matches_at(tokens, *i, &["pages|views|pageviews"]))
    {
        take(tokens, per, 2);
        take(tokens, pages, 1);
        push_metric(ask, "views_per_visit");
        take_any(tokens, &[&["view|see|visit|browse|load"]]);
    }
    if ask
        .metrics
        .iter()
        .any(|m| matches!(*m, "visit_duration" | "views_per_visit"))
    {
        take_any(
            tokens,
            &[&["on", "average"], &["average|avg|mean|typical|typically"]],
        );
    }
    // "visits start on them": a visit's entry page.
    if let Some(i) = find(tokens, &["start|started|began|begin|begins|starts", "on"]) {
        take(tokens, i, 2);
        take_any(tokens, &[&["them|it"]]);
        ask.dimensions.retain(|d| d != "event:page");
    }
}

fn push_metric(ask: &mut Ask, metric: &'static str) {
    if !ask.metrics.contains(&metric) {
        ask.metrics.push(metric);
    }
}

fn time_buckets(tokens: &mut [Token], ask: &mut Ask) {
    let table: &[(&[&str], &str)] = &[
        (&["hourly"], "time:hour"),
        (&["daily"], "time:day"),
        (&["weekly"], "time:week"),
        (&["monthly"], "time:month"),
        (&["day", "by", "day"], "time:day"),
        (&["hour", "by", "hour"], "time:hour"),
        (&["week", "by", "week"], "time:week"),
        (&["month", "by", "month"], "time:month"),
        (&["by|per|each|every", "hour"], "time:hour"),
        (&["by|per|each|every", "day|date"], "time:day"),
        (&["by|per|each|every", "week"], "time:week"),
        (&["by|per|each|every", "month"], "time:month"),
        (&["for", "each", "day"], "time:day"),
        (&["over", "time"], "time"),
        (&["trend|trends|timeline|timeseries"], "time"),
        (&["time", "series"], "time"),
    ];
    for (pattern, dimension) in table {
        if let Some(i) = find(tokens, pattern) {
            take(tokens, i, pattern.len());
            if !ask.dimensions.iter().any(|d| d.starts_with("time")) {
                ask.dimensions.push((*dimension).to_owned());
            }
        }
    }
}

/// Paths and quoted names: exact (case-insensitive), a quoted one also within a typo.
fn literal_names(
    tokens: &mut [Token],
    vocabulary: &Vocabulary,
    ask: &mut Ask,
) -> Result<(), Unanswerable> {
    for i in 0..tokens.len() {
        if tokens[i].used {
            continue;
        }
        let named = match tokens[i].kind {
            Kind::Path => path(tokens, i, vocabulary)?,
            Kind::Quoted => quoted(tokens, i, vocabulary, &mut ask.notes)?,
            _ => continue,
        };
        tokens[i].used = true;
        take_at(tokens, i + 1, &["page|screen"]);
        ask.names.push(named);
    }
    Ok(())
}

fn named(dimension: impl Into<String>, value: impl Into<String>, at: usize) -> Named {
    Named {
        dimension: dimension.into(),
        operator: "is",
        value: value.into(),
        at,
        after_but: false,
        joined_by_and: false,
    }
}

fn path(tokens: &mut [Token], i: usize, vocabulary: &Vocabulary) -> Result<Named, Unanswerable> {
    let wanted = tokens[i].raw.clone();
    let before = |k: usize| {
        i.checked_sub(k)
            .map_or(String::new(), |k| tokens[k].word.clone())
    };
    let (one, two) = (before(1), before(2));
    let entry = matches!(one.as_str(), "landed" | "entered" | "landing" | "entering")
        || one == "on" && matches!(two.as_str(), "landed" | "landing" | "entered" | "started");
    let dimension = if entry {
        "visit:entry_page"
    } else {
        "event:page"
    };
    let under_word = matches!(
        one.as_str(),
        "under" | "within" | "below" | "inside" | "contains" | "containing"
    );
    let under = under_word || matches_at(tokens, i + 1, &["section|pages|subpages"]);
    if under {
        if !vocabulary
            .pages
            .iter()
            .any(|page| page.starts_with(&wanted))
        {
            return Err(no_such("page", &wanted, vocabulary));
        }
        take_at(tokens, i + 1, &["section|pages|subpages"]);
        if under_word {
            tokens[i - 1].used = true;
            if i > 1 && matches!(tokens[i - 2].word.as_str(), "path" | "url") {
                tokens[i - 2].used = true;
            }
        }
        let mut section = named(dimension, wanted, i);
        section.operator = "contains";
        return Ok(section);
    }
    vocabulary
        .pages
        .iter()
        .find(|page| page.eq_ignore_ascii_case(&wanted))
        .map(|page| named(dimension, page.clone(), i))
        .ok_or_else(|| no_such("page", &wanted, vocabulary))
}

fn quoted(
    tokens: &[Token],
    i: usize,
    vocabulary: &Vocabulary,
    notes: &mut Vec<String>,
) -> Result<Named, Unanswerable> {
    let wanted = tokens[i].raw.clone();
    if let Some(name) = vocabulary
        .events
        .iter()
        .find(|n| n.eq_ignore_ascii_case(&wanted))
    {
        return Ok(named("event:name", name.clone(), i));
    }
    if let Some(page) = vocabulary
        .pages
        .iter()
        .find(|n| n.eq_ignore_ascii_case(&wanted))
    {
        return Ok(named("event:page", page.clone(), i));
    }
    for (attribute, values) in &vocabulary.visits {
        if let Some(value) = values.iter().find(|v| v.eq_ignore_ascii_case(&wanted)) {
            return Ok(named(
                format!("visit:{}", attribute.name()),
                value.clone(),
                i,
            ));
        }
    }
    let closest = vocabulary
        .events
        .iter()
        .map(|name| ("event:name", name))
        .chain(vocabulary.pages.iter().map(|page| ("event:page", page)))
        .map(|(dimension, name)| {
            let score =
                strsim::normalized_levenshtein(&name.to_lowercase(), &wanted.to_lowercase());
            (score, dimension, name)
        })
        .filter(|(score, _, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, dimension, name)) => {
            notes.push(format!("I read \"{wanted}\" as \"{name}\"."));
            Ok(named(dimension, name.clone(), i))
        }
        None => Err(no_such("event, page or value", &wanted, vocabulary)),
    }
}

/// The refusal for a name the tenant does not have, with the closest names it has.
fn no_such(kind: &str, wanted: &str, vocabulary: &Vocabulary) -> Unanswerable {
    let mut scored: Vec<(f64, &String)> = vocabulary
        .all_names()
        .map(|name| {
            (
                strsim::jaro_winkler(&name.to_lowercase(), &wanted.to_lowercase()),
                name,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut closest: Vec<&String> = Vec::new();
    for (_, name) in scored {
        if !closest.contains(&name) && closest.len() < 3 {
            closest.push(name);
        }
    }
    let hint = if closest.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = closest.iter().map(|n| format!("\"{n}\"")).collect();
        format!(" The closest names you have: {}.", names.join(", "))
    };
    unanswerable(format!(
        "I found no {kind} called \"{wanted}\" in your data.{hint}"
    ))
}

/// Whether unused word tokens at `at` have exactly these stems.
fn words_match(tokens: &[Token], at: usize, stems: &[String]) -> bool {
    !stems.is_empty()
        && stems.iter().enumerate().all(|(k, stem)| {
            tokens.get(at + k).is_some_and(|t| {
                !t.used
                    && matches!(t.kind, Kind::Word | Kind::Number(_) | Kind::Id)
                    && (t.stem == *stem || t.word == *stem)
            })
        })
}

/// "on the pro plan", "plan team", "paid by card": a property's value, next to its key or
/// (when no other key has it) alone.
fn property_values(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    for (key, values) in &vocabulary.properties {
        let key_stem = stem(key);
        for value in values {
            let stems = name_stems(value);
            let unique = vocabulary
                .properties
                .iter()
                .filter(|(_, others)| others.contains(value))
                .count()
                == 1
                && value.len() >= 3;
            for i in 0..tokens.len() {
                if !words_match(tokens, i, &stems) {
                    continue;
                }
                let after = i + stems.len();
                if tokens
                    .get(after)
                    .is_some_and(|t| !t.used && t.stem == key_stem)
                {
                    take(tokens, i, stems.len() + 1);
                } else if i > 0 && !tokens[i - 1].used && tokens[i - 1].stem == key_stem {
                    take(tokens, i - 1, stems.len() + 1);
                } else if unique {
                    take(tokens, i, stems.len());
                } else {
                    continue;
                }
                ask.names
                    .push(named(format!("event:props:{key}"), value.clone(), i));
            }
        }
    }
}

/// "blog pages", "any docs page", "outside the blog": every page under a first path segment
/// that several pages share.
fn sections(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    let mut prefixes: Vec<String> = vocabulary
        .pages
        .iter()
        .filter_map(|page| page.strip_prefix('/'))
        .filter_map(|rest| rest.split('/').next())
        .filter(|segment| !segment.is_empty())
        .map(|segment| format!("/{segment}"))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes.retain(|prefix| {
        vocabulary
            .pages
            .iter()
            .filter(|page| page.starts_with(&format!("{prefix}/")) || *page == prefix)
            .count()
            >= 2
    });
    for prefix in prefixes {
        let stems = name_stems(&prefix);
        for i in 0..tokens.len() {
            if !words_match(tokens, i, &stems) {
                continue;
            }
            let after = i + stems.len();
            let outside = i > 0 && matches!(tokens[i - 1].word.as_str(), "outside")
                || i > 1 && tokens[i - 1].word == "the" && tokens[i - 2].word == "outside";
            let plural = matches_at(tokens, after, &["pages|posts|section|articles"]);
            let any = i > 0 && matches!(tokens[i - 1].word.as_str(), "any" | "all");
            if !(outside || plural || any && matches_at(tokens, after, &["page|post"])) {
                continue;
            }
            let ranked =
                (i.saturating_sub(3)..i).any(|k| RANKING_LEADS.contains(&tokens[k].word.as_str()));
            take(tokens, i, stems.len());
            if !ranked {
                take_at(tokens, after, &["pages|posts|section|articles|page|post"]);
            }
            if outside {
                let k = if tokens[i - 1].word == "outside" {
                    i - 1
                } else {
                    i - 2
                };
                take(tokens, k, i - k);
            }
            let mut section = named("event:page", prefix.clone(), i);
            section.operator = if outside { "contains_not" } else { "contains" };
            ask.names.push(section);
        }
    }
}

/// "the pricing page", "the home page", "Settings Screen": a page by its name's words, next to
/// "page" (or a screen by its whole name).
fn pages_by_words(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    for i in 0..tokens.len() {
        if tokens[i].used {
            continue;
        }
        let home = if matches_at(tokens, i, &["homepage|frontpage"]) {
            1
        } else if matches_at(tokens, i, &["home|front|main", "page"]) {
            2
        } else {
            0
        };
        if home > 0 && vocabulary.pages.iter().any(|page| page == "/") {
            take(tokens, i, home);
            ask.names.push(named("event:page", "/", i));
            continue;
        }
        for page in &vocabulary.pages {
            let whole = name_stems(page);
            if !page.starts_with('/') && whole.len() >= 2 && words_match(tokens, i, &whole) {
                take(tokens, i, whole.len());
                ask.names.push(named("event:page", page.clone(), i));
                break;
            }
            let last_segment = name_stems(page.rsplit('/').next().unwrap_or(page));
            if page.starts_with('/')
                && words_match(tokens, i, &last_segment)
                && matches_at(tokens, i + last_segment.len(), &["page|screen"])
            {
                take(tokens, i, last_segment.len() + 1);
                ask.names.push(named("event:page", page.clone(), i));
                break;
            }
        }
    }
}

/// A goal by its label's words ("the Visited pricing goal"), when the label is not simply an
/// event's name (those are read as the event, then as its goal).
fn goals_by_label(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    for goal in &vocabulary.goals {
        let label = goal.label();
        if goal.event.as_deref() == Some(label.as_str()) {
            continue;
        }
        let stems = name_stems(&label);
        while let Some(i) = (0..tokens.len()).find(|i| words_match(tokens, *i, &stems)) {
            take(tokens, i, stems.len());
            take_at(tokens, i + stems.len(), &["goal|goals"]);
            ask.names.push(named("event:goal", label.clone(), i));
        }
    }
}

/// Words that name a dimension, longest first.
const DIMENSION_WORDS: &[(&[&str], &str)] = &[
    (
        &["landing|entry", "page|pages|point|points|url|urls"],
        "visit:entry_page",
    ),
    (&["exit", "page|pages|url|urls"], "visit:exit_page"),
    (&["browser", "version|versions"], "visit:browser_version"),
    (&["os|system", "version|versions"], "visit:os_version"),
    (&["operating", "system|systems"], "visit:os"),
    (
        &["referrer|referral|referring", "url|urls|link|links"],
        "visit:referrer",
    ),
    (&["full", "referrer|referrers"], "visit:referrer"),
    (&["utm", "source|sources"], "visit:utm_source"),
    (&["utm", "medium|mediums|media"], "visit:utm_medium"),
    (&["utm", "campaign|campaigns"], "visit:utm_campaign"),
    (&["utm", "content|contents"], "visit:utm_content"),
    (&["utm", "term|terms"], "visit:utm_term"),
    (&["search", "term|terms|keyword|keywords"], "visit:utm_term"),
    (
        &["traffic|referral|acquisition", "source|sources"],
        "visit:source",
    ),
    (
        &["referring", "site|sites|domain|domains|website|websites"],
        "visit:source",
    ),
    (
        &["marketing|acquisition|traffic", "channel|channels"],
        "visit:channel",
    ),
    (
        &["device", "type|types|category|categories"],
        "visit:device",
    ),
    (&["custom", "event|events"], "event:name"),
    (&["event", "name|names"], "event:name"),
    (
        &["page|pages|url|urls|path|paths|screen|screens"],
        "event:page",
    ),
    (
        &["country|countries|location|locations|geography|nation|nations"],
        "visit:country",
    ),
    (
        &["region|regions|state|states|province|provinces"],
        "visit:region",
    ),
    (&["city|cities|town|towns"], "visit:city"),
    (&["device|devices"], "visit:device"),
    (&["browser|browsers"], "visit:browser"),
    (&["os|platform|platforms"], "visit:os"),
    (&["source|sources"], "visit:source"),
    (&["referrer|referrers"], "visit:referrer"),
    (&["channel|channels"], "visit:channel"),
    (&["campaign|campaigns"], "visit:utm_campaign"),
    (&["medium|mediums"], "visit:utm_medium"),
    (&["keyword|keywords"], "visit:utm_term"),
    (&["event|events"], "event:name"),
    (&["goal|goals"], "event:goal"),
    (
        &["hostname|hostnames|host|hosts|domain|domains|subdomain|subdomains"],
        "event:hostname",
    ),
];

/// Words before a dimension that make it a breakdown.
const BREAKDOWN_LEADS: &[&[&str]] = &[
    &["broken|break", "down", "by|per"],
    &["breakdown", "by|per|of"],
    &["split|grouped|segmented|sorted", "by"],
    &["for", "each|every"],
    &["by|per|each|every|across"],
];

/// Words before a dimension that make it a ranking ("top 5 pages", "which country").
const RANKING_LEADS: &[&str] = &[
    "top", "which", "what", "most", "best", "busiest", "leading", "biggest", "popular", "least",
    "fewest", "worst", "bottom", "lowest", "highest", "largest", "ranked", "rank", "list",
    "common",
];

/// Words that make a ranking ask for the first row only, with a singular dimension.
const SUPERLATIVES: &[&str] = &[
    "most", "top", "best", "busiest", "leading", "biggest", "highest", "largest", "least",
    "fewest", "worst", "lowest",
];

fn dimensions(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    take_any(tokens, &[&["break|broken|breaking", "down"]]);
    let keys: Vec<&String> = vocabulary.properties.iter().map(|(key, _)| key).collect();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].used {
            i += 1;
            continue;
        }
        let lead = BREAKDOWN_LEADS
            .iter()
            .find(|lead| matches_at(tokens, i, lead))
            .map_or(0, |lead| lead.len());
        let at = i + lead;
        let Some((skip, length, dimension)) = dimension_at(tokens, at, &keys) else {
            i += 1;
            continue;
        };
        let end = at + skip + length;
        // "every page whose path contains /docs" describes a filter, not a breakdown.
        // Its words say which filter follows; the condition's own words must still be read.
        let described =
            lead > 0 || i > 0 && matches!(tokens[i - 1].word.as_str(), "every" | "all" | "any");
        if described && matches_at(tokens, end, &["whose|that|which|where"]) {
            take(tokens, i, end + 1 - i);
            i = end + 1;
            continue;
        }
        let ranked = ranking(tokens, i, ask);
        let trailing = matches_at(tokens, end, &["breakdown|split|distribution|mix|wise"]);
        // A dimension word is a breakdown after "by" or a ranking word or before "breakdown":
        // "pages" in "views of blog pages" is not one.
        if lead == 0 && !ranked && !trailing {
            i += 1;
            continue;
        }
        take(tokens, i, lead);
        take(tokens, at, skip + length + usize::from(trailing));
        let last = &tokens[end - 1].word;
        if ranked && ask.limit.is_none() && (!last.ends_with('s') || last == "os") {
            ask.wants_one = tokens
                .iter()
                .any(|t| SUPERLATIVES.contains(&t.word.as_str()));
        }
        if !ask.dimensions.contains(&dimension) {
            ask.dimensions.push(dimension);
        }
        take_at(tokens, end, &["by", "count|number"]).then(|| ask.by_count = true);
        i = end;
    }
}

/// The dimension named at `at`: (words skipped before it, its length, its name).
fn dimension_at(tokens: &[Token], at: usize, keys: &[&String]) -> Option<(usize, usize, String)> {
    if let Some((pattern, dimension)) = DIMENSION_WORDS
        .iter()
        .find(|(pattern, _)| matches_at(tokens, at, pattern))
    {
        // "page views" and "pages per visit" are metrics, not pages.
        if matches!(tokens[at].word.as_str(), "page" | "pages")
            && tokens.get(at + 1).is_some_and(|t| {
                matches!(t.word.as_str(), "views" | "view" | "per" | "hits" | "loads")
            })
        {
            return None;
        }
        return Some((0, pattern.len(), (*dimension).to_owned()));
    }
    // A property key, maybe after one word of its own ("payment method").
    for skip in 0..=1 {
        if let Some(key) = keys.iter().find(|key| {
            tokens
                .get(at + skip)
                .is_some_and(|t| !t.used && t.kind == Kind::Word && stem(key) == t.stem)
                && (skip == 0
                    || tokens
                        .get(at)
                        .is_some_and(|t| !t.used && t.kind == Kind::Word))
        }) {
            return Some((skip, 1, format!("event:props:{key}")));
        }
    }
    None
}

/// Reads a ranking just before `end` ("top 5", "which", "the 3 most popular"), taking its
/// words; whether there was one.
fn ranking(tokens: &mut [Token], end: usize, ask: &mut Ask) -> bool {
    let mut ranked = false;
    for k in end.saturating_sub(4)..end {
        if tokens[k].used {
            continue;
        }
        let word = tokens[k].word.clone();
        if RANKING_LEADS.contains(&word.as_str()) {
            ranked = true;
            if matches!(
                word.as_str(),
                "least" | "fewest" | "worst" | "bottom" | "lowest"
            ) {
                ask.ascending = true;
            }
            tokens[k].used = true;
        } else if let Kind::Number(n) = tokens[k].kind
            && (k > 0
                && matches!(
                    tokens[k - 1].word.as_str(),
                    "top" | "the" | "bottom" | "which" | "what"
                )
                || tokens
                    .get(k + 1)
                    .is_some_and(|next| RANKING_LEADS.contains(&next.word.as_str())))
        {
            ask.limit = Some(n);
            tokens[k].used = true;
            ranked = true;
        }
    }
    ranked
}

/// Events by their words: every stem of the span is one of the name's ("sign-ups",
/// "people who signed up", "checkouts", "added something to their cart"), or one word is
/// the name's first stems joined ("signups"). A span of words other than the name's first
/// must be long enough not to be a common verb ("started", "sent"), and must point at one
/// event only.
fn events_by_words(
    tokens: &mut [Token],
    vocabulary: &Vocabulary,
    ask: &mut Ask,
) -> Result<(), Unanswerable> {
    let events: Vec<(&String, Vec<String>)> = vocabulary
        .events
        .iter()
        .map(|name| (name, name_stems(name)))
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let starts = !tokens[i].used
            && tokens[i].kind == Kind::Word
            && (!FILLERS.contains(&tokens[i].word.as_str())
                || events
                    .iter()
                    .any(|(_, stems)| stems.first() == Some(&tokens[i].stem)));
        if !starts {
            i += 1;
            continue;
        }
        let matched = (1..=5)
            .rev()
            .find_map(|length| event_span(tokens, i, length, &events).map(|names| (length, names)));
        match matched {
            Some((length, candidates)) if candidates.len() == 1 => {
                take(tokens, i, length);
                let stems = name_stems(candidates[0]);
                // The name's other words nearby: "started a team plan trial".
                for k in i.saturating_sub(5)..(i + length + 4).min(tokens.len()) {
                    if !tokens[k].used
                        && tokens[k].kind == Kind::Word
                        && stems.contains(&tokens[k].stem)
                    {
                        tokens[k].used = true;
                    }
                }
                take_at(tokens, i + length, &["event|goal|goals"]);
                ask.names
                    .push(named("event:name", candidates[0].clone(), i));
                i += length;
            }
            Some((_, candidates)) => {
                let names: Vec<String> = candidates.iter().map(|n| format!("\"{n}\"")).collect();
                return Err(unanswerable(format!(
                    "\"{}\" could be any of {}: name one.",
                    tokens[i].raw,
                    names.join(", ")
                )));
            }
            None => i += 1,
        }
    }
    Ok(())
}

/// The events the `length` words at `i` can name: every content word's stem is one of the
/// name's, and one is its first (or all are long: "upgraded"); or one word is the name's
/// first stems joined ("signups").
fn event_span<'a>(
    tokens: &[Token],
    i: usize,
    length: usize,
    events: &'a [(&'a String, Vec<String>)],
) -> Option<Vec<&'a String>> {
    let span: Vec<&Token> = tokens.iter().skip(i).take(length).collect();
    if span.len() < length || span.iter().any(|t| t.used || t.kind != Kind::Word) {
        return None;
    }
    let content: Vec<&&Token> = span
        .iter()
        .filter(|t| {
            !matches!(
                t.word.as_str(),
                "to" | "the" | "a" | "an" | "their" | "something" | "our"
            )
        })
        .collect();
    // A span ends on a word of the name, never on a filler.
    if content.is_empty()
        || span
            .last()
            .is_some_and(|t| !content.iter().any(|c| c.word == t.word))
    {
        return None;
    }
    let joined: String = span.iter().map(|t| t.stem.as_str()).collect();
    let candidates: Vec<&String> = events
        .iter()
        .filter(|(_, stems)| {
            let all_known = content.iter().all(|t| stems.contains(&t.stem));
            let leads = content.iter().any(|t| stems.first() == Some(&t.stem))
                || content.iter().all(|t| t.stem.len() >= 6);
            all_known && leads
                || length == 1
                    && joined.len() >= 5
                    && (2..=stems.len()).any(|n| stems[..n].concat() == joined)
        })
        .map(|(name, _)| *name)
        .collect();
    (!candidates.is_empty()).then_some(candidates)
}

/// Words people use for values every analytics tool has, mapped onto the tenant's own
/// values (only when the tenant has the value).
const VALUE_SYNONYMS: &[(&[&str], VisitAttribute, &str)] = &[
    (
        &["phone|phones|smartphone|smartphones|mobiles"],
        VisitAttribute::Device,
        "Mobile",
    ),
    (
        &["computer|computers|pc|pcs|laptop|laptops|desktops"],
        VisitAttribute::Device,
        "Desktop",
    ),
    (&["tablets|ipad|ipads"], VisitAttribute::Device, "Tablet"),
    (
        &["mac|macs|macos|osx|macbook|macbooks"],
        VisitAttribute::Os,
        "Mac OS X",
    ),
    (&["iphone|iphones"], VisitAttribute::Os, "iOS"),
    (
        &["organic", "search"],
        VisitAttribute::Channel,
        "Organic Search",
    ),
    (
        &["search", "engine|engines"],
        VisitAttribute::Channel,
        "Organic Search",
    ),
    (&["seo"], VisitAttribute::Channel, "Organic Search"),
    (
        &["paid", "search|ads|ad"],
        VisitAttribute::Channel,
        "Paid Search",
    ),
    (&["ppc"], VisitAttribute::Channel, "Paid Search"),
    (
        &["organic", "social"],
        VisitAttribute::Channel,
        "Organic Social",
    ),
    (
        &["social", "media|networks|network"],
        VisitAttribute::Channel,
        "Organic Social",
    ),
    (&["social"], VisitAttribute::Channel, "Organic Social"),
    (&["emails"], VisitAttribute::Channel, "Email"),
    (&["e", "mail|mails"], VisitAttribute::Channel, "Email"),
    (&["referrals"], VisitAttribute::Channel, "Referral"),
    (&["hn"], VisitAttribute::Source, "Hacker News"),
];

/// Words after a value that say what it is ("Chrome users", "the black_friday campaign").
const VALUE_NOUNS: &[&str] = &[
    "users|visitors|traffic|people|devices|campaign|city|region|state|browser|source|medium|channel|device|os",
];

/// Visit values by their words (`Hacker News`, `black_friday`, `Organic Search`, `Chrome`),
/// per attribute in the order a reader expects ("Google" is a source before it is a UTM
/// source); a word naming the attribute next to it ("campaign", "utm_medium") picks that one.
fn visit_values(tokens: &mut [Token], vocabulary: &Vocabulary, ask: &mut Ask) {
    let mut candidates: Vec<(VisitAttribute, &String, Vec<String>)> = Vec::new();
    for (attribute, values) in &vocabulary.visits {
        if matches!(
            attribute,
            VisitAttribute::EntryPage | VisitAttribute::Country
        ) {
            continue;
        }
        for value in values {
            candidates.push((*attribute, value, name_stems(value)));
        }
    }
    for i in 0..tokens.len() {
        let hints = attribute_hints(tokens, i);
        let choice = candidates
            .iter()
            .filter(|(_, _, stems)| words_match(tokens, i, stems))
            .max_by_key(|(attribute, _, stems)| {
                let hinted = hints
                    .iter()
                    .filter(|(h, _)| h == attribute)
                    .map(|(_, (_, length))| *length)
                    .max()
                    .unwrap_or(0);
                (stems.len(), hinted, std::cmp::Reverse(order(*attribute)))
            });
        let Some((attribute, value, stems)) = choice else {
            continue;
        };
        take(tokens, i, stems.len());
        let version = match attribute {
            VisitAttribute::Os => Some("visit:os_version"),
            VisitAttribute::Browser => Some("visit:browser_version"),
            _ => None,
        };
        if let Some(version) = version
            && take_at(tokens, i + stems.len(), &["version|versions"])
        {
            ask.dimensions.push(version.to_owned());
            if i > 0 {
                take_at(tokens, i - 1, &["per|by|each|across"]);
            }
        }
        take_at(tokens, i + stems.len(), VALUE_NOUNS);
        for (hinted, at) in hints {
            if hinted == *attribute {
                take(tokens, at.0, at.1);
            }
        }
        ask.names.push(named(
            format!("visit:{}", attribute.name()),
            (*value).clone(),
            i,
        ));
    }
    for (pattern, attribute, value) in VALUE_SYNONYMS {
        if !vocabulary
            .visit_values(*attribute)
            .iter()
            .any(|v| v == value)
        {
            continue;
        }
        while let Some(i) = find(tokens, pattern) {
            take(tokens, i, pattern.len());
            take_at(tokens, i + pattern.len(), VALUE_NOUNS);
            ask.names
                .push(named(format!("visit:{}", attribute.name()), *value, i));
        }
    }
}

/// Reading order among attributes that share a value.
fn order(attribute: VisitAttribute) -> usize {
    super::vocabulary::NAMED_ATTRIBUTES
        .iter()
        .position(|known| *known == attribute)
        .unwrap_or(usize::MAX)
}

/// Attributes that words around position `i` name, with the words' (position, length):
/// "utm_source google", "the black_friday campaign", "the city of Berlin".
fn attribute_hints(tokens: &[Token], i: usize) -> Vec<(VisitAttribute, (usize, usize))> {
    let patterns: &[(&[&str], VisitAttribute)] = &[
        (&["utm", "source"], VisitAttribute::UtmSource),
        (&["utm", "medium"], VisitAttribute::UtmMedium),
        (&["utm", "campaign"], VisitAttribute::UtmCampaign),
        (&["utm", "content"], VisitAttribute::UtmContent),
        (&["utm", "term"], VisitAttribute::UtmTerm),
        (&["campaign"], VisitAttribute::UtmCampaign),
        (&["medium"], VisitAttribute::UtmMedium),
        (&["city"], VisitAttribute::City),
        (&["region"], VisitAttribute::Region),
        (&["state"], VisitAttribute::Region),
        (&["channel"], VisitAttribute::Channel),
        (&["browser"], VisitAttribute::Browser),
        (&["source"], VisitAttribute::Source),
    ];
    let mut hints = Vec::new();
    for (pattern, attribute) in patterns {
        for start in i.saturating_sub(3)..(i + 4).min(tokens.len()) {
            if start != i && matches_at(tokens, start, pattern) {
                hints.push((*attribute, (start, pattern.len())));
            }
        }
    }
    hints
}

/// Demonyms people use ("German visitors"); country names and aliases come from `celes`
/// (ISO 3166-1).
const DEMONYMS: &[(&str, &str)] = &[
    ("american", "US"),
    ("german", "DE"),
    ("british", "GB"),
    ("french", "FR"),
    ("indian", "IN"),
    ("brazilian", "BR"),
    ("japanese", "JP"),
    ("canadian", "CA"),
    ("spanish", "ES"),
    ("italian", "IT"),
    ("dutch", "NL"),
    ("australian", "AU"),
    ("chinese", "CN"),
    ("mexican", "MX"),
    ("swiss", "CH"),
    ("austrian", "AT"),
    ("polish", "PL"),
    ("swedish", "SE"),
    ("irish", "IE"),
    ("korean", "KR"),
];

fn countries(tokens: &mut [Token], ask: &mut Ask) {
    for i in 0..tokens.len() {
        for length in (1..=4).rev() {
            let span: Vec<&Token> = tokens.iter().skip(i).take(length).collect();
            if span.len() < length || span.iter().any(|t| t.used || t.kind != Kind::Word) {
                continue;
            }
            if let Some(code) = country_code(&span) {
                take(tokens, i, length);
                take_at(tokens, i + length, VALUE_NOUNS);
                ask.names.push(named("visit:country", code, i));
                break;
            }
        }
    }
}

fn country_code(span: &[&Token]) -> Option<String> {
    use std::str::FromStr;
    if let [token] = span {
        match token.raw.as_str() {
            "US" | "USA" | "U.S." | "usa" => return Some("US".into()),
            "UK" | "uk" => return Some("GB".into()),
            _ => {}
        }
        if let Some((_, code)) = DEMONYMS.iter().find(|(demonym, _)| *demonym == token.word) {
            return Some((*code).into());
        }
        // Short words are English more often than country codes ("in", "us").
        if token.word.len() < 4 {
            return None;
        }
    }
    let joined: String = span.iter().map(|t| t.word.as_str()).collect();
    if matches!(
        joined.as_str(),
        "thestates" | "america" | "theus" | "theusa"
    ) {
        return Some("US".into());
    }
    if joined == "theuk" {
        return Some("GB".into());
    }
    celes::Country::from_name(&joined)
        .or_else(|_| celes::Country::from_alias(&joined))
        .or_else(|_| {
            if span.len() > 1 {
                celes::Country::from_str(&joined)
            } else {
                Err("")
            }
        })
        .ok()
        .map(|country| country.alpha2.to_owned())
}

/// "for visitors from Google", "of visits that viewed /docs": with a rate metric named, these
/// nouns say whose rate it is, not another metric.
fn qualifiers(tokens: &mut [Token], ask: &mut Ask) {
    let rates = [
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
        "conversion_rate",
        "percentage",
    ];
    if !ask.metrics.iter().any(|m| rates.contains(m)) {
        return;
    }
    let percentage = ask.metrics.contains(&"percentage");
    for i in 0..tokens.len() {
        if !matches_at(
            tokens,
            i,
            &["visitors|users|people|visits|sessions|visitor|user|traffic"],
        ) {
            continue;
        }
        let word = |k: Option<usize>| {
            k.and_then(|k| tokens.get(k))
                .map_or("", |t| t.word.as_str())
        };
        let (before, before_of) = (word(i.checked_sub(1)), word(i.checked_sub(2)));
        let after = word(Some(i + 1));
        // "number of visits and their bounce rate" lists a metric; "bounce rate of visits
        // that …" says whose rate it is.
        let listed = after == "and"
            || before == "and"
            || before == "of" && matches!(before_of, "number" | "count" | "total" | "amount");
        let qualifies = matches!(before, "for" | "of" | "among" | "from")
            || matches!(
                after,
                "from" | "who" | "that" | "on" | "using" | "with" | "whose"
            );
        // A percentage is a share of visitors: "percentage of last week's visitors".
        let shared = percentage
            && matches!(
                tokens[i].word.as_str(),
                "visitors" | "users" | "people" | "traffic"
            );
        if (qualifies || shared) && !listed {
            tokens[i].used = true;
        }
    }
}

fn plain_metrics(tokens: &mut [Token], ask: &mut Ask) {
    let table: &[(&[&str], &'static str)] = &[
        (&["unique|distinct", "visitors|users|visits"], "visitors"),
        (&["uniques"], "visitors"),
        (&["unique|distinct", "persons|people"], "persons"),
        (&["unique", "conversions"], "visitors"),
        (&["persons"], "persons"),
        (&["page", "views|view|hits|loads"], "pageviews"),
        (&["pageviews|pageview|views|impressions"], "pageviews"),
        (&["visits"], "visits"),
        (&["sessions"], "sessions"),
        (&["events|actions|conversions"], "events"),
        (&["traffic"], "visitors"),
        (&["visitors|users|people|customers"], "visitors"),
    ];
    for (pattern, metric) in table {
        while let Some(i) = find(tokens, pattern) {
            take(tokens, i, pattern.len());
            push_metric(ask, metric);
        }
    }
    if ask.metrics.contains(&"persons") {
        take_any(
            tokens,
            &[
                &["after|with|by", "identity", "stitching|resolution|merging"],
                &["stitched|identified|merged"],
            ],
        );
    }
    if let Some(i) = find(tokens, &["how", "many|often"]) {
        take(tokens, i, 2);
        ask.counted = true;
        ask.times = tokens[i + 1].word == "often" || matches_at(tokens, i + 2, &["times"]);
    }
    if find(tokens, &["number", "of"]).is_some() || find(tokens, &["how"]).is_some() {
        ask.counted = true;
    }
}

/// "activity of demo-user-2", "what did anon-0001 do": one person's sessions.
fn person(tokens: &mut [Token], ask: &mut Ask) {
    let Some(i) = tokens.iter().position(|t| !t.used && t.kind == Kind::Id) else {
        return;
    };
    ask.person = Some(tokens[i].raw.clone());
    tokens[i].used = true;
    take_any(
        tokens,
        &[&["activity|activities|journey|history|timeline|doing|sessions|session|visits"]],
    );
    take_any(tokens, &[&["user|visitor|person|customer|id"]]);
}

/// Negation words ("not", "excluding", "but no") turn the name after them into `is_not`
/// (a visit attribute, or what an event metric counts) or, for visit metrics, `has_not_done`.
fn negations(tokens: &mut [Token], ask: &mut Ask) -> Result<(), Unanswerable> {
    ask.names.sort_by_key(|named| named.at);
    let but = tokens.iter().position(|t| t.word == "but");
    let mut previous: Option<(String, &'static str, usize)> = None;
    for named in &mut ask.names {
        named.after_but = but.is_some_and(|but| named.at > but);
        let at = named.at;
        // A name listed after another of its dimension ("excluding mobile and tablet", "not
        // from Germany or France") takes that one's operator; the joining word is kept.
        if let Some((dimension, operator, end)) = &previous
            && *dimension == named.dimension
            && (end + 1..at).all(|k| matches!(tokens[k].word.as_str(), "and" | "or" | "nor"))
        {
            named.joined_by_and = (end + 1..at).any(|k| tokens[k].word == "and");
            named.operator = operator;
            previous = Some((
                named.dimension.clone(),
                named.operator,
                name_end(tokens, at),
            ));
            continue;
        }
        for k in (at.saturating_sub(4)..at).rev() {
            let word = tokens[k].word.clone();
            let negation = matches!(
                word.as_str(),
                "not"
                    | "excluding"
                    | "except"
                    | "without"
                    | "non"
                    | "exclude"
                    | "excluded"
                    | "no"
                    | "never"
            ) || word == "other"
                && tokens.get(k + 1).is_some_and(|t| t.word == "than");
            if negation && !tokens[k].used {
                take(tokens, k, if word == "other" { 2 } else { 1 });
                named.operator = match named.operator {
                    "contains" => "contains_not",
                    _ => "is_not",
                };
                break;
            }
            if tokens[k].used && !FILLERS.contains(&word.as_str()) {
                break;
            }
        }
        previous = Some((
            named.dimension.clone(),
            named.operator,
            name_end(tokens, at),
        ));
    }
    if let Some(but) = but {
        tokens[but].used = true;
    }
    Ok(())
}

/// The last token of the name at `at`: the run of taken tokens it starts (a list's "and" and
/// "or" are never taken before this pass).
fn name_end(tokens: &[Token], at: usize) -> usize {
    let mut end = at;
    while tokens
        .get(end + 1)
        .is_some_and(|t| t.used && !matches!(t.word.as_str(), "and" | "or" | "nor"))
    {
        end += 1;
    }
    end
}

fn leftovers(
    tokens: &[Token],
    vocabulary: &Vocabulary,
    names: &[Named],
) -> Result<(), Unanswerable> {
    // A word that restates a named value ("the blog (every page under /blog)") adds nothing.
    let named_stems: Vec<String> = names.iter().flat_map(|n| name_stems(&n.value)).collect();
    let unknown: Vec<&Token> = tokens
        .iter()
        .filter(|t| !t.used && !FILLERS.contains(&t.word.as_str()))
        .filter(|t| !(t.kind == Kind::Word && named_stems.contains(&t.stem)))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let phrase = unknown
        .iter()
        .map(|t| t.raw.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let name_like = unknown.iter().any(|t| {
        matches!(t.kind, Kind::Path | Kind::Quoted)
            || t.raw.chars().next().is_some_and(char::is_uppercase) && t.word.len() > 2
    });
    if name_like {
        return Err(no_such("event, page or value", &phrase, vocabulary));
    }
    Err(unanswerable(format!(
        "I can't answer that without a language model: I don't know what \"{phrase}\" means here, and leaving it out would give a wrong number. I answer questions about visitors, page views, visits, bounce rate, visit duration, pages per visit, events and conversion rates over a period, broken down or filtered by page, event, source, channel, campaign, country, region, city, device, browser or operating system; comparisons, funnels, retention and one person's activity."
    )))
}

const VISIT_METRICS: [&str; 5] = [
    "visits",
    "sessions",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
];

fn assemble(
    mut ask: Ask,
    main: Option<&Pick>,
    context: Context<'_>,
) -> Result<Translation, Unanswerable> {
    let mut notes = std::mem::take(&mut ask.notes);
    let date_range = match main {
        Some(pick) if ask.retention && pick.weeks.is_some() => {
            let weeks = u64::from(pick.weeks.unwrap_or(8));
            json!([
                (dates::monday(context.today) - chrono::Days::new(7 * weeks)).to_string(),
                context.today.to_string()
            ])
        }
        Some(pick) => pick.range.clone(),
        None if ask.retention => {
            notes.push("No period given: the last 8 weeks and this one.".into());
            json!([
                (dates::monday(context.today) - chrono::Days::new(56)).to_string(),
                context.today.to_string()
            ])
        }
        None => {
            notes.push("No period given: the last 7 days (today not included).".into());
            json!("7d")
        }
    };
    if let Some(id) = ask.person {
        // One person's sessions, over a period, is all the translator shows of a person.
        if !ask.names.is_empty()
            || !ask.dimensions.is_empty()
            || !ask.metrics.is_empty()
            || ask.comparison.is_some()
            || ask.funnel
            || ask.retention
        {
            return Err(unanswerable(format!(
                "About {id} I can show the sessions over a period (\"activity of {id} last week\"), nothing more without a language model."
            )));
        }
        return Ok(Translation {
            query: TypedQuery::Person(PersonSpec { id, date_range }),
            notes,
        });
    }
    if ask.retention {
        ask.dimensions.retain(|d| !d.starts_with("time"));
        if !ask.names.is_empty() || !ask.dimensions.is_empty() || ask.comparison.is_some() {
            return Err(unanswerable(
                "Retention cohorts can't be filtered, broken down or compared offline.",
            ));
        }
        return Ok(Translation {
            query: TypedQuery::Retention(RetentionSpec { date_range }),
            notes,
        });
    }
    let steps: Vec<&Named> = ask.names.iter().filter(|n| is_step(n)).collect();
    if ask.funnel || ask.from_to && steps.len() >= 2 {
        return funnel(ask, date_range, notes);
    }
    stats(ask, date_range, notes, context.vocabulary)
}

fn is_step(named: &Named) -> bool {
    named.operator == "is" && matches!(named.dimension.as_str(), "event:page" | "event:name")
}

fn stats(
    mut ask: Ask,
    date_range: Value,
    notes: Vec<String>,
    vocabulary: &Vocabulary,
) -> Result<Translation, Unanswerable> {
    let mut metrics = ask.metrics.clone();
    let names_event = ask
        .names
        .iter()
        .any(|n| n.dimension == "event:name" && n.operator == "is");
    let names_page = ask
        .names
        .iter()
        .any(|n| n.dimension == "event:page" && n.operator == "is");
    if ask.by_count || metrics.is_empty() && (names_event || ask.times && names_page) {
        let counted =
            if names_event || ask.dimensions.iter().all(|d| d != "event:page") && !names_page {
                "events"
            } else {
                "pageviews"
            };
        push_metric(&mut ask, counted);
        metrics = ask.metrics.clone();
    }
    if metrics.is_empty() {
        if !ask.dimensions.is_empty() || ask.counted || !ask.names.is_empty() {
            metrics.push("visitors");
        } else {
            return Err(unanswerable(
                "Which number do you want: visitors, page views, visits, bounce rate, visit duration, events or a conversion rate?",
            ));
        }
    }
    let visit_scoped = metrics.iter().all(|m| VISIT_METRICS.contains(m));
    let mut dimensions = ask.dimensions.clone();
    if visit_scoped {
        // A visit metric reads `event:page` as the visit's entry page (Plausible's rule).
        for dimension in &mut dimensions {
            if dimension == "visit:entry_page" {
                *dimension = "event:page".into();
            }
        }
    }
    let mut filters = filters_of(&ask, visit_scoped)?;
    if metrics.contains(&"conversion_rate") {
        goal_filters(&mut filters, &mut dimensions, vocabulary)?;
    }
    let per_value = ask.versus_only || ask.each;
    if per_value
        && let Some(index) = filters
            .iter()
            .position(|f| f[0] == "is" && f[2].as_array().is_some_and(|v| v.len() >= 2))
    {
        let dimension = filters[index][1].as_str().unwrap_or_default().to_owned();
        if !dimensions.contains(&dimension) {
            dimensions.push(dimension);
        }
        ask.comparison = None;
    }
    let body = v2_body(&ask, &metrics, &dimensions, &filters, date_range);
    Ok(Translation {
        query: TypedQuery::Query(body),
        notes,
    })
}

/// The Stats API v2 body of a question read.
fn v2_body(
    ask: &Ask,
    metrics: &[&str],
    dimensions: &[String],
    filters: &[Value],
    date_range: Value,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("metrics".into(), json!(metrics));
    body.insert("date_range".into(), date_range);
    if !dimensions.is_empty() {
        body.insert("dimensions".into(), json!(dimensions));
    }
    if !filters.is_empty() {
        body.insert("filters".into(), json!(filters));
    }
    if let Some(comparison) = &ask.comparison {
        body.insert("include".into(), json!({"comparisons": comparison}));
    }
    let limit = ask.limit.or(ask.wants_one.then_some(1));
    if let Some(limit) = limit.filter(|_| dimensions.iter().any(|d| !d.starts_with("time"))) {
        body.insert("pagination".into(), json!({"limit": limit}));
    }
    if let Some(first) = metrics
        .first()
        .filter(|_| ask.ascending && !dimensions.is_empty())
    {
        body.insert("order_by".into(), json!([[first, "asc"]]));
    }
    body
}

/// The names as v2 filters: one per dimension and operator (values of one dimension are
/// alternatives). A negated event or page under a visit metric is `has_not_done` ("visits
/// with a sign-up but no checkout"); under a count of visitors it is refused, since "people
/// who did not" is not a filter of the model.
fn filters_of(ask: &Ask, visit_scoped: bool) -> Result<Vec<Value>, Unanswerable> {
    let event_counts = ask
        .metrics
        .iter()
        .all(|m| matches!(*m, "events" | "pageviews"));
    // Events or pages joined by "and" count either one when events are counted ("Signed Up
    // and Trial Started events"), but mean both for visits and people ("who signed up and
    // started a trial"): visits that did each, or, for people, a refusal.
    if !event_counts
        && let Some(both) = ask.names.iter().find(|n| {
            n.joined_by_and
                && n.operator == "is"
                && matches!(n.dimension.as_str(), "event:name" | "event:page")
        })
    {
        if !visit_scoped {
            return Err(unanswerable(format!(
                "I can't count people who did both (\"… and {}\") offline: ask for visits that did both, or for each one.",
                both.value
            )));
        }
        return Ok(ask
            .names
            .iter()
            .map(|n| match (n.operator, n.dimension.starts_with("event:")) {
                ("is", true) => json!(["has_done", ["is", n.dimension, [n.value]]]),
                ("is_not", true) => json!(["has_not_done", ["is", n.dimension, [n.value]]]),
                _ => json!([n.operator, n.dimension, [n.value]]),
            })
            .collect());
    }
    let mut grouped: Vec<(String, &'static str, Vec<String>)> = Vec::new();
    for named in &ask.names {
        match grouped.iter_mut().find(|(dimension, operator, _)| {
            *dimension == named.dimension && *operator == named.operator
        }) {
            Some((_, _, values)) if !values.contains(&named.value) => {
                values.push(named.value.clone())
            }
            Some(_) => {}
            None => grouped.push((
                named.dimension.clone(),
                named.operator,
                vec![named.value.clone()],
            )),
        }
    }
    // "visits with a sign-up but no checkout", "visits that viewed /features without
    // /pricing": a negated event condition on visits is "has not done", and the positive
    // ones beside it "has done".
    let has_but = visit_scoped
        && ask
            .names
            .iter()
            .any(|n| n.dimension.starts_with("event:") && n.operator.ends_with("_not"));
    let mut filters = Vec::new();
    for (dimension, operator, values) in grouped {
        let on_events = dimension.starts_with("event:");
        let negative = operator.ends_with("_not");
        if on_events && visit_scoped && has_but {
            let positive = if negative {
                operator.trim_end_matches("_not")
            } else {
                operator
            };
            let inner = json!([
                if positive.is_empty() { "is" } else { positive },
                dimension,
                values
            ]);
            filters.push(json!([
                if negative { "has_not_done" } else { "has_done" },
                inner
            ]));
        } else if on_events && negative && !event_counts && !visit_scoped {
            return Err(unanswerable(format!(
                "I can't count people who did not do something (\"not {}\") offline: ask for visits without it, or for page views or events other than it.",
                values.join(", ")
            )));
        } else {
            filters.push(json!([operator, dimension, values]));
        }
    }
    Ok(filters)
}

/// `conversion_rate` needs a goal: an event or page the question named becomes the goal that
/// counts it; without one, the rate is broken down by every goal.
fn goal_filters(
    filters: &mut Vec<Value>,
    dimensions: &mut Vec<String>,
    vocabulary: &Vocabulary,
) -> Result<(), Unanswerable> {
    let mut goals = Vec::new();
    let mut kept = Vec::new();
    for filter in filters.drain(..) {
        let dimension = filter[1].as_str().unwrap_or_default();
        let values: Vec<&str> = filter[2]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let goal = vocabulary.goals.iter().find(|goal| {
            values.len() == 1
                && filter[0] == "is"
                && match dimension {
                    "event:name" => goal.event.as_deref() == values.first().copied(),
                    "event:page" => goal.page.as_deref() == values.first().copied(),
                    _ => false,
                }
        });
        match goal {
            Some(goal) => goals.push(goal.label()),
            None if matches!(dimension, "event:name" | "event:page") => {
                let labels: Vec<String> = vocabulary
                    .goals
                    .iter()
                    .map(|g| format!("\"{}\"", g.label()))
                    .collect();
                return Err(unanswerable(format!(
                    "\"{}\" is not one of your goals, and a conversion rate needs one. Your goals: {}.",
                    values.join(", "),
                    labels.join(", ")
                )));
            }
            None => kept.push(filter),
        }
    }
    let goal_filtered = kept.iter().any(|f| f[1] == "event:goal");
    *filters = kept;
    if goals.is_empty() {
        if !goal_filtered && !dimensions.iter().any(|d| d == "event:goal") {
            dimensions.push("event:goal".into());
        }
    } else {
        filters.insert(0, json!(["is", "event:goal", goals]));
    }
    Ok(())
}

fn funnel(ask: Ask, date_range: Value, notes: Vec<String>) -> Result<Translation, Unanswerable> {
    let mut steps: Vec<&Named> = ask.names.iter().filter(|n| is_step(n)).collect();
    steps.sort_by_key(|named| named.at);
    let steps: Vec<String> = steps
        .iter()
        .map(|named| match named.dimension.as_str() {
            "event:page" => format!("page:{}", named.value),
            _ => format!("event:{}", named.value),
        })
        .collect();
    if !(2..=8).contains(&steps.len()) {
        return Err(unanswerable(format!(
            "A funnel needs 2 to 8 steps (pages or events of yours, in order); I found {}.",
            steps.len()
        )));
    }
    if ask.names.iter().any(|n| !is_step(n))
        || !ask.dimensions.is_empty()
        || ask.comparison.is_some()
    {
        return Err(unanswerable(
            "Funnels can't be filtered, broken down or compared offline yet.",
        ));
    }
    Ok(Translation {
        query: TypedQuery::Funnel(FunnelSpec {
            steps,
            window: Some(ask.window_secs.unwrap_or(86_400)),
            date_range,
            exclude: Vec::new(),
        }),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Vocabulary {
            events: strings(&["Signed Up", "Trial Started", "Checkout Completed"]),
            pages: strings(&["/", "/pricing", "/blog", "/blog/launch"]),
            properties: Vec::new(),
            visits: vec![
                (
                    VisitAttribute::Device,
                    strings(&["Desktop", "Mobile", "Tablet"]),
                ),
                (VisitAttribute::Source, strings(&["Google", "newsletter"])),
            ],
            goals: Vec::new(),
        }
    }

    fn ask(question: &str) -> Result<Value, String> {
        let vocabulary = vocabulary();
        let context = Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap_or_default(),
            tz: chrono_tz::UTC,
            vocabulary: &vocabulary,
        };
        translate(question, context)
            .map(|t| serde_json::to_value(t.query).unwrap_or_default())
            .map_err(|u| u.reason)
    }

    #[test]
    fn a_negation_covers_the_whole_list() {
        let query = ask("visitors excluding mobile and tablet last week").unwrap_or_default();
        assert_eq!(
            query["query"]["filters"],
            json!([["is_not", "visit:device", ["Mobile", "Tablet"]]])
        );
        let query =
            ask("visitors from Google or the newsletter, not on desktop").unwrap_or_default();
        assert_eq!(
            query["query"]["filters"],
            json!([
                ["is", "visit:source", ["Google", "newsletter"]],
                ["is_not", "visit:device", ["Desktop"]]
            ])
        );
    }

    #[test]
    fn and_between_actions_means_both() {
        assert!(ask("how many people signed up and started a trial last week").is_err());
        let visits = ask("visits that signed up and started a trial last week").unwrap_or_default();
        assert_eq!(
            visits["query"]["filters"],
            json!([
                ["has_done", ["is", "event:name", ["Signed Up"]]],
                ["has_done", ["is", "event:name", ["Trial Started"]]]
            ])
        );
        let counted =
            ask("how many Signed Up and Trial Started events last week").unwrap_or_default();
        assert_eq!(
            counted["query"]["filters"],
            json!([["is", "event:name", ["Signed Up", "Trial Started"]]])
        );
    }

    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        for question in [
            "visitors in October last year",
            "visitors between Nov 10 and Nov 5",
            "visitors in the last 30 days vs the 7 days before",
            "bounce rate of demo-user-2 last week",
            "visitors in the last 613566757 weeks",
            "funnel from /pricing to Signed Up within 99999999999 days",
        ] {
            let answer = ask(question);
            let funnel_too_long = answer
                .as_ref()
                .is_ok_and(|q| q["funnel"]["window"] == json!(u32::MAX));
            assert!(answer.is_err() || funnel_too_long, "{question}: {answer:?}");
        }
    }

    #[test]
    fn a_ranking_number_is_no_day() {
        let query = ask("Top 10 October pages").unwrap_or_default();
        assert_eq!(query["query"]["pagination"]["limit"], 10);
        assert_eq!(
            query["query"]["date_range"],
            json!(["2026-10-01", "2026-10-31"])
        );
    }
}
