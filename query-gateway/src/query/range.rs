//! Date ranges: Plausible's shortcuts, local dates and instants, resolved in the tenant's (or
//! the request's) IANA zone into the half-open UTC interval the SQL reads, plus the periods a
//! comparison reads.
//!
//! A local day runs from its first valid instant to the next day's (23 or 25 hours on DST
//! days; a midnight that falls in a DST gap starts the day at the gap's end).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::model::{CompareMode, Comparison};

/// The longest range a query may read, in days (366 covers a leap year).
pub const MAX_DAYS: i64 = 366;

/// A range as requested, before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateRange {
    /// `day`: today, the whole day.
    Day,
    /// `24h`: the 24 hours up to now.
    Last24Hours,
    /// `<n>d`: the `n` whole days before today (today excluded).
    Days(u32),
    /// `month`: this calendar month, the whole month.
    Month,
    /// `<n>mo`: the `n` whole months before this one (this month excluded).
    Months(u32),
    /// The `n` months that end with this one, whole (v1's `6mo` and `12mo`).
    MonthsThrough(u32),
    /// `year`: this calendar year.
    Year,
    /// `all`: from the day of the tenant's first event to today, at most [`MAX_DAYS`].
    All,
    /// Local dates, both inclusive.
    Dates(NaiveDate, NaiveDate),
    /// Instants, `[from, to)`, Unix seconds.
    Instants(i64, i64),
}

impl DateRange {
    /// Reads a v2 shortcut (`day`, `24h`, `7d`, `28d`, `30d`, `91d`, `month`, `6mo`, `12mo`,
    /// `year`, `all`, and any `<n>d` up to 5000 or `<n>mo` up to 100, as Plausible allows).
    pub fn shortcut(text: &str) -> Option<DateRange> {
        match text {
            "day" => return Some(DateRange::Day),
            "24h" => return Some(DateRange::Last24Hours),
            "month" => return Some(DateRange::Month),
            "year" => return Some(DateRange::Year),
            "all" => return Some(DateRange::All),
            _ => {}
        }
        if let Some(months) = text.strip_suffix("mo") {
            return months
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .map(DateRange::Months);
        }
        text.strip_suffix('d')?
            .parse()
            .ok()
            .filter(|n| (1..=5000).contains(n))
            .map(DateRange::Days)
    }
}

/// Why a range cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The end is not after the start.
    #[error("the range ends before it starts")]
    Reversed,
    /// Longer than [`MAX_DAYS`].
    #[error("the range spans {0} days; at most {MAX_DAYS} can be read in one query")]
    TooLong(i64),
    /// Before 1970 or after 2106 (ClickHouse's `DateTime`).
    #[error("the range is outside 1970-2105")]
    OutOfBounds,
}

/// A resolved period: what the SQL reads and how the answer labels it.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// Start, Unix seconds, inclusive.
    pub from: i64,
    /// End, Unix seconds, exclusive.
    pub to: i64,
    /// Local date of `from`.
    pub first: NaiveDate,
    /// Local date of the period's last instant.
    pub last: NaiveDate,
    /// The zone its days, weeks and months are local to.
    pub zone: Tz,
    /// Shortened: `all` reaching back further than [`MAX_DAYS`].
    pub clamped: bool,
}

/// The first instant of a local date: midnight, or the end of the DST gap that swallowed it.
pub fn start_of_day(zone: Tz, date: NaiveDate) -> i64 {
    let mut local = date.and_time(NaiveTime::MIN);
    // No zone's gap lasts more than a few hours; step until the clock exists.
    for _ in 0..(24 * 4) {
        if let Some(instant) = zone.from_local_datetime(&local).earliest() {
            return instant.timestamp();
        }
        local += Duration::minutes(15);
    }
    zone.from_utc_datetime(&local).timestamp()
}

/// The local date of an instant.
pub fn local_date(zone: Tz, secs: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .with_timezone(&zone)
        .date_naive()
}

fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

fn shift_months(date: NaiveDate, months: i32) -> NaiveDate {
    let shifted = if months >= 0 {
        date.checked_add_months(chrono::Months::new(months.unsigned_abs()))
    } else {
        date.checked_sub_months(chrono::Months::new(months.unsigned_abs()))
    };
    shifted.unwrap_or(date)
}

impl Period {
    /// The period of local dates `first..=last`.
    pub fn dates(zone: Tz, first: NaiveDate, last: NaiveDate) -> Result<Period, RangeError> {
        // ClickHouse's `DateTime` spans 1970 to 2106; checked first, so that no date
        // arithmetic below can overflow on a date a client made up.
        if !(1970..=2105).contains(&first.year()) || !(1970..=2105).contains(&last.year()) {
            return Err(RangeError::OutOfBounds);
        }
        if last < first {
            return Err(RangeError::Reversed);
        }
        let days = (last - first).num_days() + 1;
        if days > MAX_DAYS {
            return Err(RangeError::TooLong(days));
        }
        Period::bounded(Period {
            from: start_of_day(zone, first),
            to: start_of_day(zone, last + Duration::days(1)),
            first,
            last,
            zone,
            clamped: false,
        })
    }

    /// The period `[from, to)` of instants.
    pub fn instants(zone: Tz, from: i64, to: i64) -> Result<Period, RangeError> {
        if to <= from {
            return Err(RangeError::Reversed);
        }
        let days = (to - from + 86_399) / 86_400;
        if days > MAX_DAYS {
            return Err(RangeError::TooLong(days));
        }
        Period::bounded(Period {
            from,
            to,
            first: local_date(zone, from),
            last: local_date(zone, to - 1),
            zone,
            clamped: false,
        })
    }

    fn bounded(period: Period) -> Result<Period, RangeError> {
        if period.from < 0 || period.to > i64::from(u32::MAX) {
            return Err(RangeError::OutOfBounds);
        }
        Ok(period)
    }

    /// Resolves `range` at `now` (Unix seconds) in `zone`; `first_event` is the tenant's
    /// first event (Unix seconds), which only `all` reads.
    pub fn resolve(
        range: &DateRange,
        zone: Tz,
        now: i64,
        first_event: Option<i64>,
    ) -> Result<Period, RangeError> {
        Period::resolve_on(range, zone, local_date(zone, now), now, first_event)
    }

    /// As [`Period::resolve`], with `today` given (v1's `date` moves it).
    pub fn resolve_on(
        range: &DateRange,
        zone: Tz,
        today: NaiveDate,
        now: i64,
        first_event: Option<i64>,
    ) -> Result<Period, RangeError> {
        if !(1970..=2105).contains(&today.year()) {
            return Err(RangeError::OutOfBounds);
        }
        let day = Duration::days(1);
        match *range {
            DateRange::Day => Period::dates(zone, today, today),
            DateRange::Last24Hours => Period::instants(zone, now - 86_400, now),
            DateRange::Days(n) => {
                Period::dates(zone, today - Duration::days(i64::from(n)), today - day)
            }
            DateRange::Month => {
                let first = month_start(today);
                Period::dates(zone, first, shift_months(first, 1) - day)
            }
            DateRange::Months(n) => {
                let this_month = month_start(today);
                Period::dates(
                    zone,
                    shift_months(this_month, -(n as i32)),
                    this_month - day,
                )
            }
            DateRange::MonthsThrough(n) => {
                let this_month = month_start(today);
                Period::dates(
                    zone,
                    shift_months(this_month, 1 - n as i32),
                    shift_months(this_month, 1) - day,
                )
            }
            DateRange::Year => {
                let first = today.with_ordinal(1).unwrap_or(today);
                let next = NaiveDate::from_ymd_opt(today.year() + 1, 1, 1).unwrap_or(today);
                Period::dates(zone, first, next - day)
            }
            DateRange::All => {
                let earliest = today - Duration::days(MAX_DAYS - 1);
                let first = first_event.map_or(today, |secs| local_date(zone, secs));
                let mut period = Period::dates(zone, first.max(earliest).min(today), today)?;
                period.clamped = first < earliest;
                Ok(period)
            }
            DateRange::Dates(first, last) => Period::dates(zone, first, last),
            DateRange::Instants(from, to) => Period::instants(zone, from, to),
        }
    }

    /// Whether the period was given as whole local days.
    pub fn is_whole_days(&self) -> bool {
        self.from == start_of_day(self.zone, self.first)
            && self.to == start_of_day(self.zone, self.last + Duration::days(1))
    }

    /// The period `comparison` compares this one (resolved at `now`) with.
    pub fn compared(&self, comparison: &Comparison, now: i64) -> Result<Period, RangeError> {
        let zone = self.zone;
        if comparison.mode == CompareMode::SameLengthBefore {
            let length = self.to - self.from;
            return Period::instants(zone, self.from - length, self.from);
        }
        if !self.is_whole_days() {
            // Instants (24h, exact times): shifted by their length, or by a year.
            let length = self.to - self.from;
            return match comparison.mode {
                CompareMode::PreviousPeriod | CompareMode::SameLengthBefore => {
                    let shift = if comparison.match_day_of_week {
                        length.div_euclid(7 * 86_400).max(1) * 7 * 86_400
                    } else {
                        length
                    };
                    Period::instants(zone, self.from - shift, self.to - shift)
                }
                CompareMode::YearOverYear => {
                    let year_ago = |secs: i64| {
                        DateTime::<Utc>::from_timestamp(secs, 0)
                            .and_then(|t| t.checked_sub_months(chrono::Months::new(12)))
                            .map_or(secs, |t| t.timestamp())
                    };
                    Period::instants(zone, year_ago(self.from), year_ago(self.to))
                }
                CompareMode::Custom => self.custom(comparison),
            };
        }
        let today = local_date(zone, now);
        let (first, last) = match comparison.mode {
            CompareMode::PreviousPeriod | CompareMode::SameLengthBefore => {
                // A range that ends in the future is compared as far as it has happened.
                let last = self.last.min(today.max(self.first));
                let days = (last - self.first).num_days() + 1;
                let first = self.first - Duration::days(days);
                (first, first + Duration::days(days - 1))
            }
            CompareMode::YearOverYear => {
                (shift_months(self.first, -12), shift_months(self.last, -12))
            }
            CompareMode::Custom => return self.custom(comparison),
        };
        let (first, last) = if comparison.match_day_of_week {
            match_day_of_week(self.first, first, last)
        } else {
            (first, last)
        };
        Period::dates(zone, first, last)
    }

    fn custom(&self, comparison: &Comparison) -> Result<Period, RangeError> {
        let (first, last) = comparison.range.ok_or(RangeError::Reversed)?;
        Period::dates(self.zone, first, last)
    }
}

/// Moves a comparison `first..=last` to the nearest start on the source's weekday, never onto
/// the source's own start (Plausible's `comparisons.ex`).
fn match_day_of_week(
    source: NaiveDate,
    first: NaiveDate,
    last: NaiveDate,
) -> (NaiveDate, NaiveDate) {
    let ahead = i64::from(
        (source.weekday().num_days_from_monday() + 7 - first.weekday().num_days_from_monday()) % 7,
    );
    let mut shift = if ahead <= 3 { ahead } else { ahead - 7 };
    if first + Duration::days(shift) >= source {
        shift -= 7;
    }
    (first + Duration::days(shift), last + Duration::days(shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp()
    }

    #[test]
    fn shortcuts_resolve_as_plausible_documents_them() {
        let zone: Tz = "Asia/Kolkata".parse().unwrap();
        // 2026-03-10 02:00 in Kolkata.
        let now = utc("2026-03-09T20:30:00Z");
        let resolve = |range| Period::resolve(&range, zone, now, None).unwrap();
        let day = resolve(DateRange::Day);
        assert_eq!(
            (day.first, day.last),
            (date("2026-03-10"), date("2026-03-10"))
        );
        assert_eq!(day.from, utc("2026-03-09T18:30:00Z"));
        assert_eq!(day.to - day.from, 86_400);
        let week = resolve(DateRange::Days(7));
        assert_eq!(
            (week.first, week.last),
            (date("2026-03-03"), date("2026-03-09"))
        );
        let months = resolve(DateRange::Months(6));
        assert_eq!(
            (months.first, months.last),
            (date("2025-09-01"), date("2026-02-28"))
        );
        let year = resolve(DateRange::Year);
        assert_eq!(
            (year.first, year.last),
            (date("2026-01-01"), date("2026-12-31"))
        );
        assert_eq!(resolve(DateRange::Last24Hours).to, now);
        assert_eq!(DateRange::shortcut("91d"), Some(DateRange::Days(91)));
        assert_eq!(DateRange::shortcut("12mo"), Some(DateRange::Months(12)));
        assert_eq!(DateRange::shortcut("7days"), None);
        assert_eq!(DateRange::shortcut("0d"), None);
    }

    #[test]
    fn dst_days_last_23_and_25_hours() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let spring = Period::dates(berlin, date("2026-03-29"), date("2026-03-29")).unwrap();
        assert_eq!(spring.to - spring.from, 23 * 3600);
        let autumn = Period::dates(berlin, date("2026-10-25"), date("2026-10-25")).unwrap();
        assert_eq!(autumn.to - autumn.from, 25 * 3600);
        // Santiago's clocks skip midnight: the day starts at 01:00 local.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let start = start_of_day(santiago, date("2026-09-06"));
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn all_is_cut_at_the_cap_and_says_so() {
        let now = utc("2026-12-03T12:00:00Z");
        let all = Period::resolve(
            &DateRange::All,
            Tz::UTC,
            now,
            Some(utc("2020-01-01T00:00:00Z")),
        )
        .unwrap();
        assert!(all.clamped);
        assert_eq!((all.last - all.first).num_days() + 1, MAX_DAYS);
        let young = Period::resolve(
            &DateRange::All,
            Tz::UTC,
            now,
            Some(utc("2026-11-30T08:00:00Z")),
        )
        .unwrap();
        assert_eq!((young.first, young.clamped), (date("2026-11-30"), false));
        assert_eq!(
            Period::dates(Tz::UTC, date("2025-01-01"), date("2026-01-02")),
            Err(RangeError::TooLong(367))
        );
    }

    #[test]
    fn comparisons() {
        let now = utc("2026-12-03T12:00:00Z");
        let this_month = Period::resolve(&DateRange::Month, Tz::UTC, now, None).unwrap();
        let compare = |mode, match_day_of_week| {
            let comparison = Comparison {
                mode,
                range: None,
                match_day_of_week,
            };
            let period = this_month.compared(&comparison, now).unwrap();
            (period.first, period.last)
        };
        // December so far (3 days) against the 3 days before it.
        assert_eq!(
            compare(CompareMode::PreviousPeriod, false),
            (date("2026-11-28"), date("2026-11-30"))
        );
        assert_eq!(
            compare(CompareMode::YearOverYear, false),
            (date("2025-12-01"), date("2025-12-31"))
        );
        // 2026-12-01 is a Tuesday; 2025-12-01 a Monday: matched to the nearest Tuesday.
        assert_eq!(
            compare(CompareMode::YearOverYear, true),
            (date("2025-12-02"), date("2026-01-01"))
        );
        // The same length before, not cut at today (the dashboard's previous range).
        assert_eq!(
            compare(CompareMode::SameLengthBefore, false),
            (date("2026-10-31"), date("2026-11-30"))
        );
        assert_eq!(
            Period::dates(Tz::UTC, NaiveDate::MAX, NaiveDate::MAX),
            Err(RangeError::OutOfBounds)
        );
        let leap = Period::dates(Tz::UTC, date("2024-02-29"), date("2024-02-29")).unwrap();
        let comparison = Comparison {
            mode: CompareMode::YearOverYear,
            range: None,
            match_day_of_week: false,
        };
        assert_eq!(
            leap.compared(&comparison, now).unwrap().first,
            date("2023-02-28")
        );
    }
}
