//! Periods named in a question ("yesterday", "last 14 days", "between 2026-01-01 and
//! 2026-01-31"), resolved in the tenant's time zone to a half-open range of UTC seconds.
//!
//! Conventions (stated in every answer): "last N days" is the N calendar days ending today,
//! today included, as Plausible and PostHog count it; "last week" and "last month" are the
//! previous calendar week (Monday to Sunday, ISO 8601) and month; "this week/month/year" run
//! from their first day to the end of today; a date range includes both of its days.

use chrono::{Datelike, Days, Months, NaiveDate, TimeZone};
use chrono_tz::Tz;

/// A half-open range `[from, to)` of UTC seconds and how the answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// First second, UTC.
    pub from: i64,
    /// First second after the range, UTC.
    pub to: i64,
    /// First local day.
    pub first_day: NaiveDate,
    /// Last local day (included).
    pub last_day: NaiveDate,
    /// How the question named it, e.g. "the last 7 days".
    pub name: String,
}

impl Period {
    /// The period of local days `first..=last` in `tz`.
    pub fn days(first: NaiveDate, last: NaiveDate, tz: Tz, name: impl Into<String>) -> Period {
        Period {
            from: local_midnight(first, tz),
            to: local_midnight(last + Days::new(1), tz),
            first_day: first,
            last_day: last,
            name: name.into(),
        }
    }

    /// The period of equal length just before this one.
    pub fn previous(&self, tz: Tz) -> Period {
        let length = (self.last_day - self.first_day).num_days() as u64 + 1;
        let last = self.first_day - Days::new(1);
        Period::days(
            last - Days::new(length - 1),
            last,
            tz,
            "the previous period",
        )
    }

    /// "the last 7 days (2026-11-24 to 2026-11-30)".
    pub fn describe(&self) -> String {
        if self.first_day == self.last_day {
            format!("{} ({})", self.name, self.first_day)
        } else {
            format!("{} ({} to {})", self.name, self.first_day, self.last_day)
        }
    }

    /// The SQL condition on a time column: `col >= toDateTime(from) AND col < toDateTime(to)`.
    pub fn condition(&self, column: &str) -> String {
        format!(
            "{column} >= toDateTime({}) AND {column} < toDateTime({})",
            self.from, self.to
        )
    }
}

/// UTC seconds of local midnight starting `day` (the first valid instant of the day where a
/// DST change skips midnight).
fn local_midnight(day: NaiveDate, tz: Tz) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(time) | chrono::LocalResult::Ambiguous(time, _) => {
            time.timestamp()
        }
        chrono::LocalResult::None => tz
            .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
            .earliest()
            .map_or(midnight.and_utc().timestamp(), |time| time.timestamp()),
    }
}

/// The period a question names, and the question with its words removed; `None` when it
/// names none.
pub fn find(question: &str, today: NaiveDate, tz: Tz) -> Option<(Period, String)> {
    let words: Vec<&str> = question.split_whitespace().collect();
    for start in 0..words.len() {
        for length in (1..=6.min(words.len() - start)).rev() {
            let phrase = words[start..start + length].join(" ");
            if let Some(period) = parse_phrase(&phrase, today, tz) {
                let mut rest: Vec<&str> = words[..start].to_vec();
                rest.extend(&words[start + length..]);
                return Some((period, rest.join(" ")));
            }
        }
    }
    None
}

fn parse_phrase(phrase: &str, today: NaiveDate, tz: Tz) -> Option<Period> {
    let phrase = phrase
        .trim_start_matches("in ")
        .trim_start_matches("during ")
        .trim_start_matches("over ")
        .trim_start_matches("for ")
        .trim_start_matches("the ");
    let words: Vec<&str> = phrase.split(' ').collect();
    let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
    let monday = today - Days::new(u64::from(today.weekday().num_days_from_monday()));
    let month_start = today.with_day(1)?;
    let period = match words.as_slice() {
        ["today"] => Period::days(today, today, tz, "today"),
        ["yesterday"] => {
            let yesterday = today - Days::new(1);
            Period::days(yesterday, yesterday, tz, "yesterday")
        }
        ["this", "week"] => Period::days(monday, today, tz, "this week"),
        ["last", "week"] | ["previous", "week"] => Period::days(
            monday - Days::new(7),
            monday - Days::new(1),
            tz,
            "last week",
        ),
        ["this", "month"] => Period::days(month_start, today, tz, "this month"),
        ["last", "month"] | ["previous", "month"] => {
            let first = month_start.checked_sub_months(Months::new(1))?;
            Period::days(first, month_start - Days::new(1), tz, "last month")
        }
        ["this", "year"] => Period::days(today.with_ordinal(1)?, today, tz, "this year"),
        ["last" | "past", count, unit] => {
            let count: u32 = count.parse().ok().filter(|n| (1..=3660).contains(n))?;
            let first = match unit.trim_end_matches('s') {
                "day" => today - Days::new(u64::from(count) - 1),
                "week" => today - Days::new(u64::from(count) * 7 - 1),
                "month" => today.checked_sub_months(Months::new(count))? + Days::new(1),
                _ => return None,
            };
            Period::days(first, today, tz, format!("the last {count} {unit}"))
        }
        ["on", date] => {
            let date = day(date)?;
            Period::days(date, date, tz, format!("{date}"))
        }
        ["since", date] => {
            let date = day(date).filter(|d| *d <= today)?;
            Period::days(date, today, tz, format!("since {date}"))
        }
        ["between" | "from", first, "and" | "to" | "until", last] => {
            let (first, last) = (day(first)?, day(last)?);
            if first > last {
                return None;
            }
            Period::days(first, last, tz, format!("{first} to {last}"))
        }
        _ => return None,
    };
    Some(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    fn period(question: &str) -> Period {
        find(question, today(), Tz::UTC).unwrap().0
    }

    #[test]
    fn named_periods_are_calendar_ranges() {
        let last_7 = period("page views in the last 7 days");
        assert_eq!(last_7.first_day.to_string(), "2026-11-24");
        assert_eq!(last_7.last_day.to_string(), "2026-11-30");
        assert_eq!(last_7.to - last_7.from, 7 * 86_400);
        let last_month = period("visitors last month");
        assert_eq!(
            (
                last_month.first_day.to_string(),
                last_month.last_day.to_string()
            ),
            ("2026-10-01".into(), "2026-10-31".into())
        );
        let last_week = period("sessions last week");
        assert_eq!(last_week.first_day.to_string(), "2026-11-23");
        assert_eq!(last_week.last_day.to_string(), "2026-11-29");
        let range = period("events between 2026-01-01 and 2026-01-31");
        assert_eq!(range.to - range.from, 31 * 86_400);
        assert_eq!(period("yesterday").first_day.to_string(), "2026-11-29");
        assert_eq!(range.previous(Tz::UTC).last_day.to_string(), "2025-12-31");
        assert!(find("top pages", today(), Tz::UTC).is_none());
    }

    #[test]
    fn days_are_local_to_the_tenant() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let day = find("today", today(), berlin).unwrap().0;
        // 2026-11-30 00:00 in Berlin (UTC+1) is 2026-11-29 23:00 UTC.
        let utc = NaiveDate::from_ymd_opt(2026, 11, 29)
            .unwrap()
            .and_hms_opt(23, 0, 0)
            .unwrap();
        assert_eq!(day.from, utc.and_utc().timestamp());
        assert_eq!(day.to - day.from, 86_400);
    }
}
