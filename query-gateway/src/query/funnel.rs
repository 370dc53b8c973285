//! Funnels: how far each person got through ordered steps within a conversion window.
//!
//! ClickHouse returns, per person, the events that match any step or exclusion, and the
//! progress is computed here, exactly: events are ordered by their time in milliseconds, ties
//! by arrival (`received_at_ms`, then `messageId`); each step is a distinct event strictly
//! after the previous step's (so a repeated step needs two events); every step falls within
//! the window from the first. A person's progress is their best attempt over every first
//! step in the range. An exclusion event between an attempt's first step and the last step
//! it reached voids the attempt; a person whose every attempt is void is left out of the
//! funnel and counted as excluded (PostHog's rule). A person who has not completed the funnel
//! and whose best attempt's window is still open at the "complete up to" mark is *in
//! progress*, not dropped off: their next step may still come.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::Deserialize;

use super::compile::funnel_statement;
use super::model::{Filter, Query};
use crate::error::ApiError;

/// A funnel over the query's period, filters and (optional, at most one) dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    /// The steps, in order (2 to 8); each an event filter.
    pub steps: Vec<Filter>,
    /// Events that void an attempt they interrupt.
    pub exclusions: Vec<Filter>,
    /// From the first step to the last, at most, ms.
    pub window_ms: i64,
}

/// One step's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCount {
    /// Persons who reached this step (or further).
    pub persons: u64,
    /// Of those whose furthest step is this one, how many may still go on (their window is
    /// open at the "complete up to" mark).
    pub in_progress: u64,
}

/// The funnel of one breakdown group (or of everyone).
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelGroup {
    /// The dimension's value on the person's first step (empty without a dimension).
    pub label: String,
    /// Per step.
    pub steps: Vec<StepCount>,
    /// Persons left out because an exclusion voided every attempt.
    pub excluded: u64,
}

impl FunnelGroup {
    /// Step `index`'s conversion from the previous step and from the first: shares of
    /// persons (0-1), undefined when nobody reached the step before.
    pub fn conversions(&self, index: usize) -> (Option<f64>, Option<f64>) {
        let persons = |i: usize| self.steps.get(i).map_or(0, |s| s.persons) as f64;
        let share = |part: f64, whole: f64| (whole > 0.0).then(|| part / whole);
        let previous = if index == 0 {
            persons(0)
        } else {
            persons(index - 1)
        };
        (
            share(persons(index), previous),
            share(persons(index), persons(0)),
        )
    }
}

/// A funnel's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelAnswer {
    /// Everyone, then each group of the dimension (most entrants first).
    pub groups: Vec<FunnelGroup>,
    /// "Complete up to", Unix ms, read before the statement ran.
    pub complete_until_ms: Option<i64>,
}

/// One event of a person, as the statement returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FunnelEvent {
    /// Event time, Unix ms.
    pub time_ms: i64,
    /// Receipt, Unix ms (orders events of the same millisecond).
    pub received_ms: i64,
    /// `messageId` (orders the rest).
    pub message_id: String,
    /// Bit `i` set: matches step `i`; bit 63: matches an exclusion.
    pub mask: u64,
    /// Whether it is inside the period (a first step must be).
    pub in_period: bool,
    /// The dimension's value (empty without one).
    pub label: String,
}

/// Bit of the mask that marks an exclusion.
pub const EXCLUSION_BIT: u64 = 1 << 63;

/// A person's best attempt: the steps reached, where it started, its label, and whether an
/// exclusion voided every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Steps reached (1 to the number of steps); 0 when every attempt was void.
    pub reached: usize,
    /// The first step's time, ms.
    pub started_ms: i64,
    /// The dimension's value on the first step.
    pub label: String,
}

/// The best attempt among `events` (any order): see the module's rules.
pub fn progress(events: &mut [FunnelEvent], steps: usize, window_ms: i64) -> Option<Progress> {
    events.sort_by(|a, b| {
        (a.time_ms, a.received_ms, &a.message_id).cmp(&(b.time_ms, b.received_ms, &b.message_id))
    });
    let mut best: Option<Progress> = None;
    let mut first_label = None;
    for (start, first) in events.iter().enumerate() {
        if first.mask & 1 == 0 || !first.in_period {
            continue;
        }
        first_label.get_or_insert_with(|| first.label.clone());
        let mut reached = 1;
        let mut last_step = start;
        let mut exclusions = Vec::new();
        for (index, event) in events.iter().enumerate().skip(start + 1) {
            if event.time_ms - first.time_ms > window_ms || reached == steps {
                break;
            }
            if event.mask & EXCLUSION_BIT != 0 {
                exclusions.push(index);
            } else if event.mask & (1 << reached) != 0 {
                reached += 1;
                last_step = index;
            }
        }
        // Only an exclusion between the first step and the last step reached voids it.
        if exclusions.iter().any(|index| *index < last_step) {
            continue;
        }
        // Of equal attempts the latest counts: its window is the one still open.
        if best.as_ref().is_none_or(|b| {
            reached > b.reached || (reached == b.reached && first.time_ms > b.started_ms)
        }) {
            best = Some(Progress {
                reached,
                started_ms: first.time_ms,
                label: first.label.clone(),
            });
        }
    }
    // Every attempt void: excluded, under the label of its first first step.
    best.or_else(|| {
        first_label.map(|label| Progress {
            reached: 0,
            started_ms: 0,
            label,
        })
    })
}

/// An event as the statement's tuple: time, receipt, id, mask, in the period, label.
type EventTuple = (i64, i64, String, u64, u8, String);

#[derive(Debug, Deserialize)]
struct Output {
    data: Vec<(String, Vec<EventTuple>)>,
}

/// Runs `funnel` over `query` (its period, filters, zone, bots; its first dimension, if any,
/// breaks the funnel down by the value on each person's first step).
pub async fn run(
    client: &Client,
    query: &Query,
    funnel: &Funnel,
) -> Result<FunnelAnswer, ApiError> {
    let query = &super::run::with_raw_start(client, query).await?;
    query.require_raw("funnels")?;
    let complete_until_ms = crate::queries::progress(client, &query.tenant).await?;
    let output: Output = super::run::fetch_json(client, &funnel_statement(query, funnel)).await?;
    let steps = funnel.steps.len();
    let open_after_ms = complete_until_ms.unwrap_or(i64::MIN);
    let mut all = FunnelGroup {
        label: String::new(),
        steps: vec![StepCount::default(); steps],
        excluded: 0,
    };
    let mut groups: BTreeMap<String, FunnelGroup> = BTreeMap::new();
    for (_person, rows) in output.data {
        let mut events: Vec<FunnelEvent> = rows
            .into_iter()
            .map(
                |(time_ms, received_ms, message_id, mask, in_period, label)| FunnelEvent {
                    time_ms,
                    received_ms,
                    message_id,
                    mask,
                    in_period: in_period != 0,
                    label,
                },
            )
            .collect();
        let Some(progress) = progress(&mut events, steps, funnel.window_ms) else {
            continue;
        };
        let group = groups
            .entry(progress.label.clone())
            .or_insert_with(|| FunnelGroup {
                label: progress.label.clone(),
                steps: vec![StepCount::default(); steps],
                excluded: 0,
            });
        for target in [&mut all, group] {
            if progress.reached == 0 {
                target.excluded += 1;
                continue;
            }
            for step in &mut target.steps[..progress.reached] {
                step.persons += 1;
            }
            if progress.reached < steps && progress.started_ms + funnel.window_ms > open_after_ms {
                target.steps[progress.reached - 1].in_progress += 1;
            }
        }
    }
    let mut breakdown: Vec<FunnelGroup> = if query.dimensions.is_empty() {
        Vec::new()
    } else {
        groups.into_values().collect()
    };
    breakdown.sort_by(|a, b| {
        let entrants = |g: &FunnelGroup| g.steps.first().map_or(0, |s| s.persons);
        entrants(b)
            .cmp(&entrants(a))
            .then_with(|| a.label.cmp(&b.label))
    });
    let mut groups = vec![all];
    groups.extend(breakdown);
    Ok(FunnelAnswer {
        groups,
        complete_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: i64, received_ms: i64, id: &str, mask: u64) -> FunnelEvent {
        FunnelEvent {
            time_ms,
            received_ms,
            message_id: id.into(),
            mask,
            in_period: true,
            label: id.into(),
        }
    }

    fn reached(mut events: Vec<FunnelEvent>, steps: usize, window_ms: i64) -> usize {
        progress(&mut events, steps, window_ms).map_or(usize::MAX, |p| p.reached)
    }

    #[test]
    fn steps_are_ordered_by_milliseconds_and_ties_by_arrival() {
        // Step 2 800 ms before step 1, in the same second: not a conversion.
        assert_eq!(
            reached(
                vec![event(1_000_900, 0, "a", 1), event(1_000_100, 0, "b", 2)],
                2,
                60_000
            ),
            1
        );
        assert_eq!(
            reached(
                vec![event(1_000_100, 0, "a", 1), event(1_000_900, 0, "b", 2)],
                2,
                60_000
            ),
            2
        );
        // The same millisecond: the one that arrived first is first.
        assert_eq!(
            reached(vec![event(5, 2, "a", 1), event(5, 1, "b", 2)], 2, 60_000),
            1
        );
        assert_eq!(
            reached(vec![event(5, 1, "a", 1), event(5, 2, "b", 2)], 2, 60_000),
            2
        );
    }

    #[test]
    fn a_repeated_step_needs_two_events_and_the_window_bounds_the_attempt() {
        // Steps /a, /a: one event matching both is one step.
        assert_eq!(reached(vec![event(1, 1, "a", 0b11)], 2, 10), 1);
        assert_eq!(
            reached(vec![event(1, 1, "a", 0b11), event(2, 2, "b", 0b11)], 2, 10),
            2
        );
        assert_eq!(
            reached(vec![event(0, 0, "a", 1), event(11, 11, "b", 2)], 2, 10),
            1
        );
        // A later first step gives a better attempt.
        assert_eq!(
            reached(
                vec![
                    event(0, 0, "a", 1),
                    event(20, 20, "b", 1),
                    event(25, 25, "c", 2)
                ],
                2,
                10
            ),
            2
        );
    }

    #[test]
    fn an_exclusion_voids_the_attempt_it_interrupts() {
        let x = EXCLUSION_BIT;
        assert_eq!(
            reached(
                vec![
                    event(0, 0, "a", 1),
                    event(1, 1, "x", x),
                    event(2, 2, "b", 2)
                ],
                2,
                10
            ),
            0
        );
        // After the funnel was completed it changes nothing; before the first step neither.
        assert_eq!(
            reached(
                vec![
                    event(0, 0, "a", 1),
                    event(2, 2, "b", 2),
                    event(3, 3, "x", x)
                ],
                2,
                10
            ),
            2
        );
        assert_eq!(
            reached(
                vec![
                    event(0, 0, "x", x),
                    event(1, 1, "a", 1),
                    event(2, 2, "b", 2)
                ],
                2,
                10
            ),
            2
        );
        // No first step in the period: not in the funnel at all.
        let mut outside = event(0, 0, "a", 1);
        outside.in_period = false;
        assert_eq!(reached(vec![outside], 2, 10), usize::MAX);
    }
}
