//! The whole pipeline, single-threaded, over a complete log, with plain hash maps: the
//! semantics the dataflow must reproduce, and the COST baseline the benchmarks compare the
//! dataflow against.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use schemas::EventKind;

use crate::Decoded;
use crate::model::{
    AggRow, Enriched, IdentityClaim, Link, Metric, Node, Person, Session, SharedEvent, VisitorHour,
    event_label, minute_of,
};
use crate::pipeline::{AnalyticsSettings, is_late};
use crate::sessionize::{is_activity, sessions_of};
use crate::visitor_hours::hour_of;

/// Final results of the pipeline for a log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Results {
    /// Enriched on-time events.
    pub events: BTreeSet<Enriched>,
    /// Message ids of late events.
    pub late: BTreeSet<String>,
    /// Sessions.
    pub sessions: BTreeSet<Session>,
    /// Person of every linked id.
    pub identities: BTreeSet<(Node, Person)>,
    /// Aggregate rows.
    pub aggregates: BTreeSet<AggRow>,
    /// Activity per visitor and hour.
    pub visitor_hours: BTreeSet<VisitorHour>,
}

/// Computes the final results for `log` (in any order) and operator `unlinks`.
pub fn analyze(log: &[Decoded], unlinks: &[Link], settings: &AnalyticsSettings) -> Results {
    let lateness_ms = settings.sessions.retention.lateness_ms;
    let mut results = Results::default();

    // Deduplicate by first position; late events are then only stored.
    let mut first: HashMap<(&str, &str), &Decoded> = HashMap::new();
    for decoded in log {
        let key = (
            decoded.event.tenant.as_str(),
            decoded.event.message_id.as_str(),
        );
        let kept = first.entry(key).or_insert(decoded);
        if (decoded.partition, decoded.offset) < (kept.partition, kept.offset) {
            *kept = decoded;
        }
    }
    let mut events: Vec<SharedEvent> = Vec::with_capacity(first.len());
    for decoded in first.into_values() {
        if is_late(&decoded.event, lateness_ms) {
            results.late.insert(decoded.event.message_id.clone());
        } else {
            events.push(Arc::new(decoded.event.clone()));
        }
    }

    // Identity: links, then components by union-find.
    let mut first_identify: HashMap<(String, String), (i64, String, String)> = HashMap::new();
    let mut links: HashSet<Link> = HashSet::new();
    for event in &events {
        match IdentityClaim::of_event(event) {
            Some(IdentityClaim::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            }) => {
                if settings.identity.allow_identify_merge.contains(&tenant) {
                    links.insert(Link::between(&tenant, &anonymous_id, &user_id));
                } else {
                    let claim = (time_ms, message_id, user_id);
                    let entry = first_identify
                        .entry((tenant, anonymous_id))
                        .or_insert_with(|| claim.clone());
                    if claim < *entry {
                        *entry = claim;
                    }
                }
            }
            Some(IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            }) => {
                links.insert(Link::between(&tenant, &previous_id, &user_id));
            }
            None => {}
        }
    }
    for ((tenant, anonymous_id), (_, _, user_id)) in first_identify {
        links.insert(Link::between(&tenant, &anonymous_id, &user_id));
    }
    for unlinked in unlinks {
        links.remove(unlinked);
    }
    let mut parent: HashMap<Node, Node> = HashMap::new();
    fn find(parent: &mut HashMap<Node, Node>, node: &Node) -> Node {
        match parent.get(node).cloned() {
            Some(next) if &next != node => {
                let root = find(parent, &next);
                parent.insert(node.clone(), root.clone());
                root
            }
            _ => node.clone(),
        }
    }
    for Link { a, b } in &links {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        if low != high {
            parent.insert(high, low);
        }
    }
    for Link { a, b } in &links {
        for node in [a, b] {
            let person = find(&mut parent, node);
            results.identities.insert((node.clone(), person));
        }
    }

    // Attribution and sessions.
    let mut by_person: HashMap<Person, Vec<SharedEvent>> = HashMap::new();
    for event in events {
        let node = Node::of_event(&event);
        let person = find(&mut parent, &node);
        by_person.entry(person).or_default().push(event);
    }
    for (person, events) in &by_person {
        let (sessions, membership) = sessions_of(person, events.iter(), &settings.sessions);
        for (event, session_id) in membership {
            results.events.insert(Enriched {
                event: event.clone(),
                session_id,
                person_id: person.id.clone(),
            });
        }
        results.sessions.extend(sessions);
    }

    results.aggregates = aggregates(&results.events, &results.sessions);
    results.visitor_hours = visitor_hours(&results.events);
    results
}

/// Activity events and page views per tenant, hour, visitor and person. Repeated items count
/// repeatedly.
pub fn visitor_hours<'a>(events: impl IntoIterator<Item = &'a Enriched>) -> BTreeSet<VisitorHour> {
    let mut counts: BTreeMap<(String, i64, String, String), (i64, i64)> = BTreeMap::new();
    for Enriched {
        event, person_id, ..
    } in events
    {
        if !is_activity(event.kind) {
            continue;
        }
        let key = (
            event.tenant.clone(),
            hour_of(event.timestamp_ms),
            event.visitor_id().to_owned(),
            person_id.clone(),
        );
        let entry = counts.entry(key).or_default();
        entry.0 += 1;
        entry.1 += i64::from(event.kind == EventKind::Page);
    }
    counts
        .into_iter()
        .map(
            |((tenant, hour_ms, visitor_id, person_id), (events, page_views))| VisitorHour {
                tenant,
                hour_ms,
                visitor_id,
                person_id,
                events,
                page_views,
            },
        )
        .collect()
}

/// Per-minute aggregates of enriched events and sessions, counted the obvious way. Repeated
/// items count repeatedly.
pub fn aggregates<'a>(
    events: impl IntoIterator<Item = &'a Enriched>,
    sessions: impl IntoIterator<Item = &'a Session>,
) -> BTreeSet<AggRow> {
    let mut sums: BTreeMap<(String, i64, Metric, String), i64> = BTreeMap::new();
    let mut distinct: BTreeMap<(String, i64, Metric), HashSet<String>> = BTreeMap::new();
    for Enriched {
        event, person_id, ..
    } in events
    {
        let (tenant, minute) = (event.tenant.clone(), minute_of(event.timestamp_ms));
        *sums
            .entry((tenant.clone(), minute, Metric::Events, event_label(event)))
            .or_default() += 1;
        if event.kind == EventKind::Page {
            *sums
                .entry((
                    tenant.clone(),
                    minute,
                    Metric::PageViews,
                    event.page.path.clone(),
                ))
                .or_default() += 1;
        }
        if is_activity(event.kind) {
            distinct
                .entry((tenant.clone(), minute, Metric::UniqueVisitors))
                .or_default()
                .insert(event.visitor_id().to_owned());
            distinct
                .entry((tenant, minute, Metric::UniquePersons))
                .or_default()
                .insert(person_id.clone());
        }
    }
    for session in sessions {
        let key = |metric| {
            (
                session.tenant.clone(),
                minute_of(session.start_ms),
                metric,
                String::new(),
            )
        };
        *sums.entry(key(Metric::SessionsStarted)).or_default() += 1;
        if session.is_bounce() {
            *sums.entry(key(Metric::Bounces)).or_default() += 1;
        }
        *sums.entry(key(Metric::SessionDurationMs)).or_default() += session.duration_ms();
    }
    let mut rows: BTreeSet<AggRow> = sums
        .into_iter()
        .filter(|(_, value)| *value != 0)
        .map(|((tenant, minute_ms, metric, dimension), value)| AggRow {
            tenant,
            minute_ms,
            metric,
            dimension,
            value,
        })
        .collect();
    for ((tenant, minute_ms, metric), members) in distinct {
        rows.insert(AggRow {
            tenant,
            minute_ms,
            metric,
            dimension: String::new(),
            value: members.len() as i64,
        });
    }
    rows
}
