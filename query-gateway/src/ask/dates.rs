//! Periods as people write them ("yesterday", "last week", "the past 30 days", "November 1",
//! "since the 1st of September", "between Oct 3 and Oct 9", "in October") read into the
//! query model's date ranges: Plausible's shortcuts where one says the same thing (`day`,
//! `7d`, `month`, `6mo`, `year`, `24h`, `all`), else two local dates, both inclusive.
//!
//! A date without a year is the most recent such day up to today. "Last week" is the
//! previous Monday to Sunday, "this week" Monday to today, "last N days" the N whole days
//! before today (Plausible's `Nd`), "last N months" the N whole months before this one.

use chrono::{Datelike, Days, Months, NaiveDate};
use serde_json::{Value, json};

use super::words::{Kind, Token};

/// A period a question names.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// The v2 `date_range`.
    pub range: Value,
    /// Where its first token is.
    pub at: usize,
    /// "Relative to another" ("the week before", "the previous period"): a comparison's
    /// target, meaningless alone.
    pub before: bool,
    /// "a year ago", "the same period last year".
    pub year_ago: bool,
    /// "the last N weeks": N, for ranges that start on a Monday (retention's weeks).
    pub weeks: Option<u32>,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// The month a word names (`nov`, `Sept.`, `November`), 1-12.
fn month(word: &str) -> Option<u32> {
    let word = word.trim_end_matches('.');
    if word == "sept" {
        return Some(9);
    }
    let index = MONTHS
        .iter()
        .position(|name| *name == word || (word.len() == 3 && name.starts_with(word)))?;
    u32::try_from(index + 1).ok()
}

/// The Monday of `day`'s week.
pub fn monday(day: NaiveDate) -> NaiveDate {
    day - Days::new(u64::from(day.weekday().num_days_from_monday()))
}

fn dates(first: NaiveDate, last: NaiveDate) -> Value {
    json!([first.to_string(), last.to_string()])
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Days from Monday of a weekday's name.
fn weekday(word: &str) -> Option<u32> {
    WEEKDAYS
        .iter()
        .position(|day| *day == word)
        .and_then(|n| u32::try_from(n).ok())
}

/// Reads every period in `tokens` (marking their tokens used), in order.
pub fn find(tokens: &mut [Token], today: NaiveDate) -> Vec<Pick> {
    let mut picks = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].used {
            i += 1;
            continue;
        }
        if let Some((range, length, before, year_ago)) = at(tokens, i, today) {
            let weeks = tokens[i..i + length]
                .iter()
                .any(|t| t.word.starts_with("week"))
                .then(|| {
                    tokens[i..i + length].iter().find_map(|t| match t.kind {
                        Kind::Number(n) => Some(n),
                        _ => None,
                    })
                })
                .flatten();
            for token in &mut tokens[i..i + length] {
                token.used = true;
            }
            picks.push(Pick {
                range,
                at: i,
                before,
                year_ago,
                weeks,
            });
            i += length;
        } else {
            i += 1;
        }
    }
    picks
}

fn word(tokens: &[Token], i: usize) -> &str {
    tokens
        .get(i)
        .filter(|t| !t.used)
        .map_or("", |t| t.word.as_str())
}

/// The number at token `i` ("30", "thirty", "a").
pub(super) fn number(tokens: &[Token], i: usize) -> Option<u32> {
    match tokens.get(i).map(|t| &t.kind) {
        Some(Kind::Number(n)) => Some(*n),
        _ if word(tokens, i) == "a" || word(tokens, i) == "an" => Some(1),
        _ => None,
    }
}

type Found = (Value, usize, bool, bool);

/// The period starting at token `i`, and how many tokens it takes.
fn at(tokens: &[Token], i: usize, today: NaiveDate) -> Option<Found> {
    let plain = |(range, length): (Value, usize)| Some((range, length, false, false));
    if let Some(found) = two_dates(tokens, i, today)
        .or_else(|| since_or_on(tokens, i, today))
        .or_else(|| month_or_quarter(tokens, i, today))
    {
        return plain(found);
    }
    relative(tokens, i, today, monday(today), today.with_day(1)?)
}

/// "between A and B", "from A to B", "A to B" (A not after B).
fn two_dates(tokens: &[Token], i: usize, today: NaiveDate) -> Option<(Value, usize)> {
    let w = |k: usize| word(tokens, i + k);
    let lead = usize::from(matches!(w(0), "between" | "from"));
    let (first, n) = date(tokens, i + lead, today)?;
    let joins: &[&str] = if lead == 1 {
        &["and", "to", "until", "till", "through", "thru"]
    } else {
        &["to", "until", "till", "through", "thru"]
    };
    if !joins.contains(&w(lead + n)) {
        return None;
    }
    let (last, m) = date_after(tokens, i + lead + n + 1, first)?;
    // An end that only comes after the start in a year still to come ("between Nov 10 and
    // Nov 5") is a slip, not a range.
    if last > today && last.year() > first.year() {
        return None;
    }
    (first <= last).then(|| (dates(first, last), lead + n + 1 + m))
}

/// "since Monday", "on Monday", "since Nov 1", "since May", "since launch", "on Nov 3rd", a
/// bare date.
fn since_or_on(tokens: &[Token], i: usize, today: NaiveDate) -> Option<(Value, usize)> {
    let w = |k: usize| word(tokens, i + k);
    if matches!(w(0), "since" | "on")
        && let Some(weekday) = weekday(w(1))
        && date(tokens, i + 2, today).is_none()
    {
        let back = (7 + today.weekday().num_days_from_monday() - weekday) % 7;
        let day = today - Days::new(u64::from(back));
        let last = if w(0) == "since" { today } else { day };
        return Some((dates(day, last), 2));
    }
    if w(0) == "since" {
        if let Some((first, n)) = date(tokens, i + 1, today) {
            return Some((dates(first, today), 1 + n));
        }
        if let Some(m) = month(w(1)) {
            return Some((dates(latest_month_start(m, None, today)?, today), 2));
        }
        if matches!(w(1), "launch" | "ever") || (w(1) == "the" && w(2) == "beginning") {
            return Some((json!("all"), if w(1) == "the" { 3 } else { 2 }));
        }
    }
    let lead = usize::from(w(0) == "on");
    let (day, n) = date(tokens, i + lead, today)?;
    (lead == 1 || !matches!(w(0), "today" | "yesterday")).then(|| (dates(day, day), lead + n))
}

/// "in October", "October 2026", "during Sept", "Q3".
fn month_or_quarter(tokens: &[Token], i: usize, today: NaiveDate) -> Option<(Value, usize)> {
    let w = |k: usize| word(tokens, i + k);
    let skip = usize::from(matches!(w(0), "in" | "during" | "for" | "throughout"));
    if let Some(m) = month(w(skip))
        && (skip == 1 || w(0) != "may")
    {
        let year = match tokens.get(i + skip + 1).map(|t| &t.kind) {
            Some(Kind::Number(y)) if (2000..=2100).contains(y) => i32::try_from(*y).ok(),
            _ => None,
        };
        let first = latest_month_start(m, year, today)?;
        let last = first.checked_add_months(Months::new(1))? - Days::new(1);
        return Some((dates(first, last), skip + 1 + usize::from(year.is_some())));
    }
    let quarter = tokens
        .get(i + skip)
        .filter(|t| !t.used)
        .and_then(|t| t.word.strip_prefix('q'))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=4).contains(n))?;
    let mut first = NaiveDate::from_ymd_opt(today.year(), quarter * 3 - 2, 1)?;
    if first > today {
        first = NaiveDate::from_ymd_opt(today.year() - 1, quarter * 3 - 2, 1)?;
    }
    let last = first.checked_add_months(Months::new(3))? - Days::new(1);
    Some((dates(first, last), skip + 1))
}

/// The first day of month `m` of `year`, or, without a year, of the latest such month that
/// has begun by `today`.
fn latest_month_start(m: u32, year: Option<i32>, today: NaiveDate) -> Option<NaiveDate> {
    let year = year.unwrap_or(if m > today.month() {
        today.year() - 1
    } else {
        today.year()
    });
    NaiveDate::from_ymd_opt(year, m, 1)
}

/// "today", "last week", "the past 30 days", "the week before", "a year ago", …
fn relative(
    tokens: &[Token],
    i: usize,
    today: NaiveDate,
    monday: NaiveDate,
    month_start: NaiveDate,
) -> Option<Found> {
    let w = |k: usize| word(tokens, i + k);
    let plain = |range: Value, length: usize| Some((range, length, false, false));
    let before = |length: usize| Some((Value::Null, length, true, false));
    let yesterday = today - Days::new(1);
    let quarter_start = NaiveDate::from_ymd_opt(today.year(), (today.month0() / 3) * 3 + 1, 1)?;
    match (w(0), w(1), w(2)) {
        ("today" | "tonight", _, _) => plain(json!("day"), 1),
        ("the" | "a", "day", "before") if w(3) == "yesterday" => {
            let day = today - Days::new(2);
            plain(dates(day, day), 4)
        }
        ("day", "before", "yesterday") => {
            let day = today - Days::new(2);
            plain(dates(day, day), 3)
        }
        ("last" | "past", "weekend", _) => {
            // The last whole weekend: on a Sunday, the day before; else the one before Monday.
            let saturday = if today.weekday() == chrono::Weekday::Sun {
                today - Days::new(8)
            } else {
                monday - Days::new(2)
            };
            plain(dates(saturday, saturday + Days::new(1)), 2)
        }
        ("this", "weekend", _) if today.weekday().num_days_from_monday() >= 5 => {
            plain(dates(monday + Days::new(5), today), 2)
        }
        ("yesterday", _, _) => plain(dates(yesterday, yesterday), 1),
        ("this" | "current", "week", _) => plain(dates(monday, today), 2),
        ("week", "to", "date") => plain(dates(monday, today), 3),
        ("last" | "previous", "week", _) => {
            plain(dates(monday - Days::new(7), monday - Days::new(1)), 2)
        }
        ("past", "week", _) => plain(json!("7d"), 2),
        ("this" | "current", "month", _) | ("month", "to", "date") => {
            plain(json!("month"), if w(0) == "month" { 3 } else { 2 })
        }
        ("mtd", _, _) => plain(json!("month"), 1),
        ("last" | "previous", "month", _) => {
            let first = month_start.checked_sub_months(Months::new(1))?;
            plain(dates(first, month_start - Days::new(1)), 2)
        }
        ("past", "month", _) => plain(json!("30d"), 2),
        ("this" | "current", "year", _) | ("year", "to", "date") => {
            plain(json!("year"), if w(0) == "year" { 3 } else { 2 })
        }
        ("ytd", _, _) => plain(json!("year"), 1),
        ("last" | "previous", "year", _) => {
            let first = NaiveDate::from_ymd_opt(today.year() - 1, 1, 1)?;
            let last = NaiveDate::from_ymd_opt(today.year() - 1, 12, 31)?;
            plain(dates(first, last), 2)
        }
        ("past", "year", _) => plain(json!("12mo"), 2),
        ("this" | "current", "quarter", _) => plain(dates(quarter_start, today), 2),
        ("last" | "previous", "quarter", _) => {
            let first = quarter_start.checked_sub_months(Months::new(3))?;
            plain(dates(first, quarter_start - Days::new(1)), 2)
        }
        ("all", "time", _) => plain(json!("all"), 2),
        ("ever", _, _) => plain(json!("all"), 1),
        ("last" | "past", "day", _) | ("last" | "past", "24", "hours") => {
            plain(json!("24h"), if w(1) == "day" { 2 } else { 3 })
        }
        ("a" | "one", "year", "ago") => Some((Value::Null, 3, true, true)),
        ("same", "period", "last") if w(3) == "year" => Some((Value::Null, 4, true, true)),
        ("the" | "a", "week" | "month" | "day" | "period" | "year", "before") => before(3),
        ("previous" | "prior" | "preceding", "period" | "week" | "month" | "day", _) => before(2),
        ("the" | "a", "previous" | "prior" | "preceding", "period" | "week" | "month" | "day") => {
            before(3)
        }
        ("period", "before", _) => before(2),
        _ => last_n(tokens, i),
    }
}

/// "last 30 days", "past two weeks", "previous 3 months", "the 7 days before".
fn last_n(tokens: &[Token], i: usize) -> Option<Found> {
    let w = |k: usize| word(tokens, i + k);
    let lead = matches!(
        w(0),
        "last" | "past" | "previous" | "prior" | "trailing" | "preceding"
    );
    let (n, unit_at) = match (lead, number(tokens, i + usize::from(lead))) {
        (_, Some(n)) => (n, i + usize::from(lead) + 1),
        _ => return None,
    };
    let unit = word(tokens, unit_at).trim_end_matches('s');
    if lead && !matches!(unit, "day" | "week" | "month" | "year" | "hour") {
        // "vs the previous 30": relative to the main period, its unit implied; the span is
        // checked against the main period's ([`before_span`]).
        return matches!(w(0), "previous" | "prior" | "preceding").then_some((
            json!({ "before": n.to_string() }),
            unit_at - i,
            true,
            false,
        ));
    }
    let after_before = word(tokens, unit_at + 1) == "before";
    if !lead && !after_before {
        return None;
    }
    let length = unit_at + 1 - i + usize::from(after_before);
    if n == 0 {
        return None;
    }
    let range = match unit {
        "day" => json!(format!("{n}d")),
        "week" => json!(format!("{}d", n.checked_mul(7)?)),
        "month" => json!(format!("{n}mo")),
        "year" => json!(format!("{}mo", n.checked_mul(12)?)),
        "hour" if n == 24 => json!("24h"),
        _ => return None,
    };
    if after_before {
        // "the 7 days before": a comparison's target, as long as it says.
        return Some((json!({ "before": range }), length, true, false));
    }
    Some((range, length, false, false))
}

/// Whether a "before" period ("the 7 days before", "the previous 30") spans as long as the
/// `main` period it is compared with; one without a span ("the week before") always does.
pub fn before_span_fits(before: &Value, main: &Value) -> bool {
    match before.get("before") {
        None => true,
        Some(Value::String(span)) if span.chars().all(|c| c.is_ascii_digit()) => main
            .as_str()
            .is_some_and(|main| *main == format!("{span}d") || *main == format!("{span}mo")),
        Some(span) => span == main,
    }
}

/// A date at token `i` and its length: `2026-11-01`, `November 1`, `Nov 3rd, 2026`,
/// `1 November`, `the 1st of September`, `today`, `yesterday`.
fn date(tokens: &[Token], i: usize, today: NaiveDate) -> Option<(NaiveDate, usize)> {
    date_near(tokens, i, today, None)
}

/// A range's second date: a bare day number takes the first date's month ("Oct 3 to 9").
fn date_after(tokens: &[Token], i: usize, first: NaiveDate) -> Option<(NaiveDate, usize)> {
    if let Some(found) = date_near(tokens, i, first, Some(first)) {
        return Some(found);
    }
    let day = match tokens.get(i).map(|t| &t.kind) {
        Some(Kind::Number(d) | Kind::Ordinal(d)) => *d,
        _ => return None,
    };
    Some((first.with_day(day)?, 1))
}

fn date_near(
    tokens: &[Token],
    i: usize,
    today: NaiveDate,
    after: Option<NaiveDate>,
) -> Option<(NaiveDate, usize)> {
    let token = tokens.get(i).filter(|t| !t.used)?;
    if weekday(&token.word).is_some() {
        return date_near(tokens, i + 1, today, after).map(|(day, n)| (day, n + 1));
    }
    if let Kind::Date(day) = token.kind {
        return Some((day, 1));
    }
    match token.word.as_str() {
        "today" if after.is_none() => return Some((today, 1)),
        "yesterday" if after.is_none() => return Some((today - Days::new(1), 1)),
        _ => {}
    }
    let day_at = |k: usize| match tokens.get(k).map(|t| &t.kind) {
        Some(Kind::Number(d) | Kind::Ordinal(d)) if (1..=31).contains(d) => Some(*d),
        _ => None,
    };
    let year_at = |k: usize| match tokens.get(k).map(|t| &t.kind) {
        Some(Kind::Number(y)) if (2000..=2100).contains(y) => Some(*y as i32),
        _ => None,
    };
    // "the 1st of September", "1 November", "3rd of Nov" (not "top 10 October pages")
    let lead = usize::from(token.word == "the");
    let ranked = i > 0
        && tokens
            .get(i - 1)
            .is_some_and(|t| matches!(t.word.as_str(), "top" | "bottom" | "first" | "best"));
    if let Some(day) = day_at(i + lead).filter(|_| !ranked) {
        let of = usize::from(word(tokens, i + lead + 1) == "of");
        if let Some(m) = month(word(tokens, i + lead + 1 + of)) {
            let at = i + lead + 2 + of;
            return resolve(day, m, year_at(at), today, after)
                .map(|d| (d, at - i + usize::from(year_at(at).is_some())));
        }
    }
    // "November 1", "Nov 3rd, 2026", "Nov. the 3rd"
    let m = month(&token.word)?;
    let the = usize::from(word(tokens, i + 1) == "the");
    let day = day_at(i + 1 + the)?;
    let at = i + 2 + the;
    resolve(day, m, year_at(at), today, after)
        .map(|d| (d, at - i + usize::from(year_at(at).is_some())))
}

/// A day of a month: in the year given, else the latest such day up to `today` (or, for a
/// range's end, the first one on or after `after`).
fn resolve(
    day: u32,
    month: u32,
    year: Option<i32>,
    today: NaiveDate,
    after: Option<NaiveDate>,
) -> Option<NaiveDate> {
    if let Some(year) = year {
        return NaiveDate::from_ymd_opt(year, month, day);
    }
    if let Some(start) = after {
        let this = NaiveDate::from_ymd_opt(start.year(), month, day)?;
        return if this >= start {
            Some(this)
        } else {
            NaiveDate::from_ymd_opt(start.year() + 1, month, day)
        };
    }
    let this = NaiveDate::from_ymd_opt(today.year(), month, day)?;
    if this <= today {
        Some(this)
    } else {
        NaiveDate::from_ymd_opt(today.year() - 1, month, day)
    }
}

#[cfg(test)]
mod tests {
    use super::super::words::tokenize;
    use super::*;

    fn pick(question: &str) -> Value {
        let today = NaiveDate::from_ymd_opt(2026, 11, 18).unwrap();
        let mut tokens = tokenize(question);
        let picks = find(&mut tokens, today);
        picks.first().map_or(Value::Null, |p| p.range.clone())
    }

    #[test]
    fn periods_as_people_write_them() {
        assert_eq!(pick("yesterday"), json!(["2026-11-17", "2026-11-17"]));
        assert_eq!(pick("last week"), json!(["2026-11-09", "2026-11-15"]));
        assert_eq!(pick("this week"), json!(["2026-11-16", "2026-11-18"]));
        assert_eq!(pick("in the past thirty days"), json!("30d"));
        assert_eq!(pick("last two weeks"), json!("14d"));
        assert_eq!(pick("last 6 months"), json!("6mo"));
        assert_eq!(pick("on November 1"), json!(["2026-11-01", "2026-11-01"]));
        assert_eq!(pick("on Nov 3rd"), json!(["2026-11-03", "2026-11-03"]));
        assert_eq!(
            pick("since the 1st of September"),
            json!(["2026-09-01", "2026-11-18"])
        );
        assert_eq!(pick("in October"), json!(["2026-10-01", "2026-10-31"]));
        assert_eq!(pick("since May"), json!(["2026-05-01", "2026-11-18"]));
        assert_eq!(pick("since monday"), json!(["2026-11-16", "2026-11-18"]));
        assert_eq!(pick("last weekend"), json!(["2026-11-14", "2026-11-15"]));
        assert_eq!(
            pick("top 10 October pages"),
            json!(["2026-10-01", "2026-10-31"])
        );
        assert_eq!(pick("last 613566757 weeks"), Value::Null);
        assert_eq!(
            pick("since Monday, September 21"),
            json!(["2026-09-21", "2026-11-18"])
        );
        assert_eq!(pick("in December"), json!(["2025-12-01", "2025-12-31"]));
        assert_eq!(
            pick("between Oct 3 and Oct 9"),
            json!(["2026-10-03", "2026-10-09"])
        );
        assert_eq!(
            pick("from 2026-10-01 to 2026-10-15"),
            json!(["2026-10-01", "2026-10-15"])
        );
        assert_eq!(pick("last month"), json!(["2026-10-01", "2026-10-31"]));
        assert_eq!(pick("this month"), json!("month"));
        assert_eq!(pick("today"), json!("day"));
    }
}
