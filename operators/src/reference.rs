//! The whole pipeline, single-threaded, over a complete log, with plain hash maps: the
//! semantics the dataflow must reproduce, and the COST baseline the benchmarks compare the
//! dataflow against.
//!
//! It is written from the rules (the README's identity table, `schemas::definitions`), not
//! from the operators: it calls none of their helpers (no session splitting, activity test,
//! minute or hour rounding, claim extraction or placeholder matching of theirs), so an oracle
//! test that compares the two checks the rules twice, not one implementation against itself.
//! It models no state release: with a complete log it is what the pipeline computes while
//! every state it needs is still held.

use arcstr::ArcStr;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use schemas::{BounceRule, Event, EventKind};

use crate::Decoded;
use crate::model::{
    AggRow, IdKind, Landing, Metric, Node, Person, Session, SharedEvent, Unlink, VisitorHour,
};
use crate::pipeline::AnalyticsSettings;
use crate::placeholders::{IdField, IdWarning};

/// What the pipeline derives for one on-time event.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Outcome {
    /// Tenant.
    pub tenant: String,
    /// The event's message id.
    pub message_id: String,
    /// Its session, empty for events that are not activity.
    pub session_id: String,
    /// Its person's canonical id.
    pub person_id: String,
}

/// An on-time event with its session and person.
type Derived = (SharedEvent, String, String);

/// Final results of the pipeline for a log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Results {
    /// On-time events' sessions and persons.
    pub events: BTreeSet<Outcome>,
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
    /// Placeholder ids removed from events.
    pub warnings: BTreeSet<IdWarning>,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Done by a person: not a bot's events, not the ones a page sends by itself.
fn by_a_person(event: &Event) -> bool {
    !event.is_bot && !event.non_interactive
}

/// A person's page or screen call.
fn is_page_view(event: &Event) -> bool {
    by_a_person(event) && (event.kind == EventKind::Page || event.kind == EventKind::Screen)
}

/// A person's page, screen or track call.
pub(crate) fn is_activity(event: &Event) -> bool {
    is_page_view(event) || (by_a_person(event) && event.kind == EventKind::Track)
}

/// Where a page view happened: the path of a page, the name of a screen.
fn location(event: &Event) -> &str {
    if event.kind == EventKind::Screen {
        &event.name
    } else {
        &event.page.path
    }
}

fn visitor(event: &Event) -> &str {
    if event.anonymous_id.is_empty() {
        &event.user_id
    } else {
        &event.anonymous_id
    }
}

/// Computes the final results for `log` (in any order) and operator `unlinks`.
pub fn analyze(log: &[Decoded], unlinks: &[Unlink], settings: &AnalyticsSettings) -> Results {
    let mut results = Results::default();
    // 1. One event per message id: the one first in its partition's log.
    let first = first_occurrences(log);
    // 2. Placeholder ids removed; an event left without an id gets one of its own.
    let all = without_placeholders(first, settings, &mut results.warnings);
    // 3. Persons, from every event (late ones too: identity claims always apply).
    let mut graph = IdentityGraph::build(&all, unlinks, settings);
    results.identities = graph.identities();
    // 4. Late events are stored and nothing else; the others go to their person's sessions.
    let lateness_ms = settings.sessions.retention.lateness_ms;
    let mut by_person: HashMap<Person, Vec<SharedEvent>> = HashMap::new();
    for event in all {
        if event.received_at_ms - event.timestamp_ms > lateness_ms {
            results.late.insert(event.message_id.clone());
            continue;
        }
        by_person
            .entry(graph.person(&attribution_node(&event)))
            .or_default()
            .push(event);
    }
    let mut derived: Vec<Derived> = Vec::new();
    for (person, events) in &mut by_person {
        let sessions = sessionize(person, events, settings, &mut derived);
        results.sessions.extend(sessions);
    }
    let with_person = || derived.iter().map(|(e, _, person)| (&**e, person.as_str()));
    results.aggregates = aggregates(with_person(), &results.sessions);
    results.visitor_hours = visitor_hours(with_person());
    results.events = derived
        .iter()
        .map(|(event, session_id, person_id)| Outcome {
            tenant: event.tenant.clone(),
            message_id: event.message_id.clone(),
            session_id: session_id.clone(),
            person_id: person_id.clone(),
        })
        .collect();
    results
}

/// The first occurrence of each (tenant, message id): lowest (partition, offset).
fn first_occurrences(log: &[Decoded]) -> HashMap<(&str, &str), &Decoded> {
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
    first
}

/// The events with their placeholder ids removed (one warning each); an event left without
/// any id is given one of its own.
fn without_placeholders(
    first: HashMap<(&str, &str), &Decoded>,
    settings: &AnalyticsSettings,
    warnings: &mut BTreeSet<IdWarning>,
) -> Vec<SharedEvent> {
    let placeholders: HashSet<&str> = settings.identity.placeholders.listed().collect();
    let is_placeholder = |id: &str| {
        let id = id.trim();
        id.is_empty() || placeholders.contains(id.to_lowercase().as_str())
    };
    let mut all: Vec<SharedEvent> = Vec::with_capacity(first.len());
    for decoded in first.into_values() {
        let mut event = Event::clone(&decoded.event);
        let mut removed = Vec::new();
        if !event.user_id.is_empty() && is_placeholder(&event.user_id) {
            removed.push((IdField::UserId, std::mem::take(&mut event.user_id)));
        }
        if !event.anonymous_id.is_empty() && is_placeholder(&event.anonymous_id) {
            removed.push((
                IdField::AnonymousId,
                std::mem::take(&mut event.anonymous_id),
            ));
        }
        if !event.previous_id.is_empty() && is_placeholder(&event.previous_id) {
            removed.push((IdField::PreviousId, std::mem::take(&mut event.previous_id)));
        }
        if !removed.is_empty() && event.user_id.is_empty() && event.anonymous_id.is_empty() {
            event.anonymous_id = format!("unidentified:{}", event.message_id);
        }
        for (field, id) in removed {
            warnings.insert(IdWarning {
                tenant: event.tenant.clone(),
                message_id: event.message_id.clone(),
                time_ms: event.timestamp_ms,
                received_at_ms: event.received_at_ms,
                field,
                id,
            });
        }
        all.push(Arc::new(event));
    }
    all
}

/// The node an event is attributed through: its user id when it has one, else its anonymous
/// id (Segment's model).
fn attribution_node(event: &Event) -> Node {
    let tenant = ArcStr::from(event.tenant.as_str());
    if event.user_id.is_empty() {
        Node::new(
            &tenant,
            IdKind::Anonymous,
            event.anonymous_id.as_str().into(),
        )
    } else {
        Node::new(&tenant, IdKind::User, event.user_id.as_str().into())
    }
}

/// Every link the identity rules make of the events, less the unmerged ones: each anonymous
/// id's first identify claim (every claim for tenants that allow identify merges), and every
/// alias, whose previous id is a user id when any event carries it as one.
fn links(
    events: &[SharedEvent],
    unlinks: &[Unlink],
    settings: &AnalyticsSettings,
) -> BTreeSet<(Node, Node)> {
    // Every user id any event carries is a known user id of its tenant.
    let known: HashSet<(&str, &str)> = events
        .iter()
        .filter(|e| !e.user_id.is_empty())
        .map(|e| (e.tenant.as_str(), e.user_id.as_str()))
        .collect();
    // (tenant, anonymous id) -> the earliest claim (time, message id, user id) on it.
    let mut first_claim: HashMap<(&str, &str), (i64, &str, &str)> = HashMap::new();
    // (tenant, from id, kind of from id, user id)
    let mut links: BTreeSet<(String, String, IdKind, String)> = BTreeSet::new();
    for e in events {
        if !e.anonymous_id.is_empty() && !e.user_id.is_empty() {
            if settings.identity.allow_identify_merge.contains(&e.tenant) {
                links.insert((
                    e.tenant.clone(),
                    e.anonymous_id.clone(),
                    IdKind::Anonymous,
                    e.user_id.clone(),
                ));
            } else {
                let claim = (e.timestamp_ms, e.message_id.as_str(), e.user_id.as_str());
                let slot = first_claim
                    .entry((&e.tenant, &e.anonymous_id))
                    .or_insert(claim);
                if claim < *slot {
                    *slot = claim;
                }
            }
        }
        if e.kind == EventKind::Alias && !e.previous_id.is_empty() && !e.user_id.is_empty() {
            let kind = if known.contains(&(e.tenant.as_str(), e.previous_id.as_str())) {
                IdKind::User
            } else {
                IdKind::Anonymous
            };
            links.insert((
                e.tenant.clone(),
                e.previous_id.clone(),
                kind,
                e.user_id.clone(),
            ));
        }
    }
    for ((tenant, anonymous_id), (_, _, user_id)) in first_claim {
        links.insert((
            tenant.to_owned(),
            anonymous_id.to_owned(),
            IdKind::Anonymous,
            user_id.to_owned(),
        ));
    }
    links.retain(|(tenant, from, _, user)| {
        !unlinks
            .iter()
            .any(|u| (&u.tenant, &u.from_id, &u.user_id) == (tenant, from, user))
    });
    links
        .into_iter()
        .map(|(tenant, from, kind, user)| {
            let a = Node::new(&ArcStr::from(tenant.as_str()), kind, from.into());
            let b = Node::new(&ArcStr::from(tenant), IdKind::User, user.into());
            (a, b)
        })
        .collect()
}

/// The identity rules over a whole log: links, then components by union-find.
struct IdentityGraph {
    links: BTreeSet<(Node, Node)>,
    parent: HashMap<Node, Node>,
}

impl IdentityGraph {
    fn build(events: &[SharedEvent], unlinks: &[Unlink], settings: &AnalyticsSettings) -> Self {
        let links = links(events, unlinks, settings);
        let mut graph = IdentityGraph {
            links: BTreeSet::new(),
            parent: HashMap::new(),
        };
        // The canonical person of a component: its least user id, else its least anonymous id.
        let rank = |node: &Node| (node.kind() != IdKind::User, node.id.clone());
        for (a, b) in &links {
            let (ra, rb) = (graph.person(a), graph.person(b));
            let (low, high) = if rank(&ra) <= rank(&rb) {
                (ra, rb)
            } else {
                (rb, ra)
            };
            if low != high {
                graph.parent.insert(high, low);
            }
        }
        graph.links = links;
        graph
    }

    /// The person of `node`: the root of its component (itself when it is in no link).
    fn person(&mut self, node: &Node) -> Person {
        match self.parent.get(node).cloned() {
            Some(next) if &next != node => {
                let root = self.person(&next);
                self.parent.insert(node.clone(), root.clone());
                root
            }
            _ => node.clone(),
        }
    }

    fn identities(&mut self) -> BTreeSet<(Node, Person)> {
        let nodes: Vec<Node> = self
            .links
            .iter()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        nodes
            .into_iter()
            .map(|node| {
                let person = self.person(&node);
                (node, person)
            })
            .collect()
    }
}

/// A person's sessions, adding every event with its session to `enriched`.
fn sessionize(
    person: &Person,
    events: &mut [SharedEvent],
    settings: &AnalyticsSettings,
    enriched: &mut Vec<Derived>,
) -> Vec<Session> {
    let sessions_settings = &settings.sessions;
    let gap = *sessions_settings
        .tenant_gap_ms
        .get(person.tenant().as_str())
        .unwrap_or(&sessions_settings.gap_ms);
    let rule = *sessions_settings
        .tenant_bounce
        .get(person.tenant().as_str())
        .unwrap_or(&sessions_settings.bounce);
    events.sort_by(|a, b| (a.timestamp_ms, &a.message_id).cmp(&(b.timestamp_ms, &b.message_id)));
    let mut sessions: Vec<Session> = Vec::new();
    for event in events.iter() {
        if !is_activity(event) {
            enriched.push((event.clone(), String::new(), person.id.to_string()));
            continue;
        }
        let continues = sessions.last().is_some_and(|s| {
            event.timestamp_ms - s.end_ms < gap
                && event.timestamp_ms - s.start_ms < sessions_settings.max_session_ms
        });
        if !continues {
            sessions.push(Session {
                tenant: person.tenant().clone(),
                session_id: event.message_id.as_str().into(),
                person_id: person.id.clone(),
                visitor_id: visitor(event).into(),
                start_ms: event.timestamp_ms,
                end_ms: event.timestamp_ms,
                events: 0,
                page_views: 0,
                bounce: false,
                entry_path: "".into(),
                exit_path: "".into(),
                landing: triomphe::Arc::new(Landing {
                    referrer: ArcStr::from(event.page.referrer.as_str()),
                    campaign: Arc::new(event.campaign.clone()),
                    acquisition: Arc::new(event.acquisition.clone()),
                    client: Arc::new(event.client.clone()),
                    location: Arc::new(event.location.clone()),
                }),
            });
        }
        let Some(session) = sessions.last_mut() else {
            continue; // unreachable: a session was just opened
        };
        session.end_ms = event.timestamp_ms;
        session.events += 1;
        if is_page_view(event) {
            if session.page_views == 0 {
                session.entry_path = location(event).into();
            }
            session.exit_path = location(event).into();
            session.page_views += 1;
        }
        enriched.push((
            event.clone(),
            session.session_id.to_string(),
            person.id.to_string(),
        ));
    }
    for session in &mut sessions {
        session.bounce =
            session.page_views == 1 && (session.events == 1 || rule == BounceRule::OnePageView);
    }
    sessions
}

/// Activity events and page views per tenant, hour, visitor and person, from (event, person)
/// pairs. Repeated items count repeatedly.
pub fn visitor_hours<'a>(
    events: impl IntoIterator<Item = (&'a Event, &'a str)>,
) -> BTreeSet<VisitorHour> {
    let mut counts: BTreeMap<(String, i64, String, String), (i64, i64)> = BTreeMap::new();
    for (event, person_id) in events {
        if !is_activity(event) {
            continue;
        }
        let key = (
            event.tenant.clone(),
            event.timestamp_ms.div_euclid(HOUR_MS) * HOUR_MS,
            visitor(event).to_owned(),
            person_id.to_owned(),
        );
        let entry = counts.entry(key).or_default();
        entry.0 += 1;
        entry.1 += i64::from(is_page_view(event));
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

/// Per-minute aggregates of (event, person) pairs and sessions, counted the obvious way.
/// Repeated items count repeatedly.
pub fn aggregates<'a>(
    events: impl IntoIterator<Item = (&'a Event, &'a str)>,
    sessions: impl IntoIterator<Item = &'a Session>,
) -> BTreeSet<AggRow> {
    let mut sums: BTreeMap<(String, i64, Metric, String), i64> = BTreeMap::new();
    let mut distinct: BTreeMap<(String, i64, Metric), HashSet<String>> = BTreeMap::new();
    for (event, person_id) in events {
        if !by_a_person(event) {
            continue;
        }
        let tenant = event.tenant.clone();
        let minute = event.timestamp_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let label = match event.kind {
            EventKind::Track => event.name.clone(),
            EventKind::Page => "$pageview".to_owned(),
            other => format!("${}", other.as_str()),
        };
        *sums
            .entry((tenant.clone(), minute, Metric::Events, label))
            .or_default() += 1;
        if is_page_view(event) {
            let key = (
                tenant.clone(),
                minute,
                Metric::PageViews,
                location(event).to_owned(),
            );
            *sums.entry(key).or_default() += 1;
        }
        if is_activity(event) {
            distinct
                .entry((tenant.clone(), minute, Metric::UniqueVisitors))
                .or_default()
                .insert(visitor(event).to_owned());
            distinct
                .entry((tenant, minute, Metric::UniquePersons))
                .or_default()
                .insert(person_id.to_owned());
        }
    }
    for session in sessions {
        let minute = session.start_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let key = |metric| (session.tenant.to_string(), minute, metric, String::new());
        *sums.entry(key(Metric::SessionsStarted)).or_default() += 1;
        if session.bounce {
            *sums.entry(key(Metric::Bounces)).or_default() += 1;
        }
        *sums.entry(key(Metric::SessionDurationMs)).or_default() +=
            session.end_ms - session.start_ms;
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
