//! `sessionize`: groups each person's events into sessions.
//!
//! A session ends after `gap` without events (per tenant, default 30 minutes) or once it has
//! lasted `max_session` (24 hours). The operator recomputes a person's sessions whenever the
//! person's events change and emits the difference, so a late event inside a session updates
//! it, a late event bridging two sessions merges them (both retracted, one emitted), and an
//! identity merge (events moving between persons) re-sessionizes both persons.
//!
//! A session is named by its first event's message id, so it keeps its id while that event
//! stays first, and the same input gives the same ids on any worker count.

use std::collections::{BTreeMap, HashMap};

use arcstr::ArcStr;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Arc;
use thin_vec::ThinVec;

use differential_dataflow::{AsCollection, VecCollection};
use schemas::BounceRule;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::OkErr;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::expiry::{Due, DueIndex, Expiry};
use crate::gauges::StateGauges;
use crate::growth::GrowByAQuarter as _;
use crate::model::{
    Activity, Enriched, MessageId, Person, Session, SharedActivity, empty_str, saturating_count,
};
use crate::persons::Retention;
use crate::stash::{Stash, route};

/// Session rules.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Inactivity that ends a session, unless the tenant has its own.
    pub gap_ms: i64,
    /// Per-tenant inactivity gaps.
    pub tenant_gap_ms: Arc<HashMap<String, i64>>,
    /// Longest session; the next event starts a new one.
    pub max_session_ms: i64,
    /// When a person's state is released. Must cover the largest gap.
    pub retention: Retention,
    /// Which sessions are bounces, unless the tenant has its own rule.
    pub bounce: BounceRule,
    /// Per-tenant bounce rules.
    pub tenant_bounce: Arc<HashMap<String, BounceRule>>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            gap_ms: 30 * 60_000,
            tenant_gap_ms: Arc::default(),
            max_session_ms: 24 * 3_600_000,
            retention: Retention::default(),
            bounce: BounceRule::default(),
            tenant_bounce: Arc::default(),
        }
    }
}

impl SessionSettings {
    /// The gap of `tenant`.
    pub fn gap_for(&self, tenant: &str) -> i64 {
        self.tenant_gap_ms
            .get(tenant)
            .copied()
            .unwrap_or(self.gap_ms)
    }

    /// How long after a person's last event (against a worker's clock) sessionize keeps
    /// their events: the retention's keep, plus a margin for workers whose clocks lag the
    /// clock of the worker that assigned the events.
    pub fn events_keep_ms(&self) -> i64 {
        self.retention.keep_ms() + self.retention.margin_ms
    }

    /// How long after its start (Unix ms of event time, against a worker's clock) a rollup
    /// window `window_ms` long is kept: a session starting in it may grow for
    /// `max_session_ms`, and changes arrive up to [`SessionSettings::events_keep_ms`] after
    /// that. Until then the dataflow may write the window again.
    pub fn rollup_keep_ms(&self, window_ms: i64) -> i64 {
        window_ms + self.max_session_ms + self.events_keep_ms()
    }

    /// [`SessionSettings::rollup_keep_ms`] of a minute's window of per-minute rollups.
    pub fn window_keep_ms(&self) -> i64 {
        self.rollup_keep_ms(60_000)
    }

    /// The bounce rule of `tenant`.
    pub fn bounce_for(&self, tenant: &str) -> BounceRule {
        self.tenant_bounce
            .get(tenant)
            .copied()
            .unwrap_or(self.bounce)
    }
}

/// What `sessionize` emits: both outputs travel in one collection and are split afterwards.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
enum Output {
    Session(Session),
    Event(Enriched),
}

/// A session as a person's state holds it: what its opening event does not say already.
/// The rest of a [`Session`] is filled in when it is emitted ([`HeldSession::to_session`]):
/// tenant and person from the person, visitor, id, start and landing from the opener, bounce
/// from the tenant's rule. 40 bytes where a `Session` took 96, for every session the horizon
/// keeps.
#[derive(Debug, Clone)]
struct HeldSession {
    /// The session's first activity event, which names it.
    opener: SharedActivity,
    end_ms: i64,
    /// Activity events.
    events: u32,
    page_views: u32,
    entry_path: ArcStr,
    exit_path: ArcStr,
}

impl HeldSession {
    fn start_ms(&self) -> i64 {
        self.opener.timestamp_ms
    }

    fn session_id(&self) -> &MessageId {
        &self.opener.message_id
    }

    /// Where the session sorts among the person's sessions, and its events among its events.
    fn key(&self) -> (i64, &MessageId) {
        (self.start_ms(), self.session_id())
    }

    /// The session of `person` as emitted, with the tenant's bounce rule.
    fn to_session(&self, person: &Person, rule: BounceRule) -> Session {
        Session {
            tenant: person.tenant().clone(),
            session_id: self.session_id().clone(),
            person_id: person.id.clone(),
            visitor_id: self.opener.visitor().clone(),
            start_ms: self.start_ms(),
            end_ms: self.end_ms,
            events: self.events,
            page_views: self.page_views,
            bounce: rule.is_bounce(self.page_views, self.events),
            entry_path: self.entry_path.clone(),
            exit_path: self.exit_path.clone(),
            landing: self.opener.landing.clone(),
        }
    }
}

/// Equal when the sessions emitted for one person are: everything [`HeldSession::to_session`]
/// reads but the person and the rule, which are the same for all of a person's sessions.
impl PartialEq for HeldSession {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
            && self.end_ms == other.end_ms
            && self.events == other.events
            && self.page_views == other.page_views
            && self.entry_path == other.entry_path
            && self.exit_path == other.exit_path
            && self.opener.visitor() == other.opener.visitor()
            && self.opener.landing == other.opener.landing
    }
}

/// Grows sessions from a person's events taken in (time, message id) order: the one
/// definition of a session, used from scratch by [`sessions_of`] and from a session boundary
/// by the operator.
struct Builder {
    gap_ms: i64,
    max_session_ms: i64,
    sessions: Vec<HeldSession>,
}

impl Builder {
    fn new(person: &Person, settings: &SessionSettings) -> Self {
        Builder {
            gap_ms: settings.gap_for(person.tenant()),
            max_session_ms: settings.max_session_ms,
            sessions: Vec::new(),
        }
    }

    /// Goes on from `open`, a session whose events all come before the ones to be added.
    fn resume(&mut self, open: HeldSession) {
        self.sessions.push(open);
    }

    /// Whether the activity event `event` opens a new session.
    fn starts_new(&self, event: &Activity) -> bool {
        let time = event.timestamp_ms;
        self.sessions.last().is_none_or(|open| {
            time - open.end_ms >= self.gap_ms || time - open.start_ms() >= self.max_session_ms
        })
    }

    /// Adds an activity event to the open session (opening one when [`Builder::starts_new`]
    /// says so); returns the session's id.
    fn add(&mut self, event: &SharedActivity) -> MessageId {
        if self.starts_new(event) {
            self.sessions.push(HeldSession {
                opener: event.clone(),
                end_ms: event.timestamp_ms,
                events: 0,
                page_views: 0,
                entry_path: empty_str(),
                exit_path: empty_str(),
            });
        }
        let Some(open) = self.sessions.last_mut() else {
            return MessageId::empty();
        };
        open.end_ms = event.timestamp_ms;
        open.events += 1;
        if event.is_page_view() {
            let location = event.shared_location();
            if open.page_views == 0 {
                open.entry_path = location.clone();
            }
            open.exit_path = location;
            open.page_views += 1;
        }
        open.session_id().clone()
    }

    fn finish(self) -> Vec<HeldSession> {
        self.sessions
    }
}

/// The sessions of one person, computed from scratch: the reference semantics.
pub fn sessions_of<'a>(
    person: &Person,
    events: impl IntoIterator<Item = &'a SharedActivity>,
    settings: &SessionSettings,
) -> (Vec<Session>, Vec<(&'a SharedActivity, MessageId)>) {
    let mut ordered: Vec<&SharedActivity> = events.into_iter().collect();
    ordered.sort_by(|a, b| (a.timestamp_ms, &a.message_id).cmp(&(b.timestamp_ms, &b.message_id)));
    let mut builder = Builder::new(person, settings);
    let mut membership = Vec::with_capacity(ordered.len());
    for event in ordered {
        let session_id = if event.is_activity() {
            builder.add(event)
        } else {
            MessageId::empty()
        };
        membership.push((event, session_id));
    }
    let rule = settings.bounce_for(person.tenant());
    let sessions = builder.finish();
    (
        sessions
            .iter()
            .map(|s| s.to_session(person, rule))
            .collect(),
        membership,
    )
}

/// Where a person's events are kept: by (event time, message id), the order sessions grow in.
type Key = (i64, MessageId);

/// A retained event's [`Key`], read from the event itself (a copy beside it took 24 bytes).
fn key_of(event: &Activity) -> (i64, &MessageId) {
    (event.timestamp_ms, &event.message_id)
}

/// The session id `event` was last emitted with, read from `sessions`, the person's sessions
/// as last emitted: an activity event is in the last of them that starts at or before it,
/// any other event in no session. This holds because every change emits its events and
/// sessions together, a release drops the events of the sessions it drops, and an event of a
/// session kept is never released (see [`PersonState::release_before`]). (A copy of the
/// session id beside each event took 24 bytes.)
fn emitted_in(event: &Activity, sessions: &[HeldSession]) -> MessageId {
    if !event.is_activity() {
        return MessageId::empty();
    }
    let key = key_of(event);
    let after = sessions.partition_point(|s| s.key() <= key);
    after
        .checked_sub(1)
        .map_or_else(MessageId::empty, |at| sessions[at].session_id().clone())
}

/// What one batch did to one event of a person: the person's events are held between
/// batches as bare pointers, each emitted once (its multiplicity 1, or the one
/// [`Sessionizer::multiplicities`] keeps when it is not), and what a batch changes is kept
/// here until the person is re-sessionized. (An entry of the 8-byte pointer with a count and
/// a flag, padded to 8, took 16 bytes an event.)
#[derive(Debug)]
struct Change {
    key: Key,
    /// The batch's diffs; once consolidated ([`consolidate`]), the event's multiplicity
    /// after the batch (see [`saturating_count`]).
    count: i32,
    /// Whether the event was held, and so emitted, before the batch.
    held_before: bool,
}

/// A person's changes in one batch: most persons change once in a batch.
type Changes = SmallVec<[Change; 1]>;

/// Sorts `changes` by key and makes one change of each event's, whose count is its
/// multiplicity after the batch: `count_before` of the event (held before the batch) plus the
/// batch's diffs.
fn consolidate(changes: &mut Changes, count_before: impl Fn(&Key) -> i32) {
    if !changes.is_sorted_by(|a, b| a.key <= b.key) {
        // Stable: of an event's changes, the first made says whether it was held before.
        changes.sort_by(|a, b| a.key.cmp(&b.key));
    }
    changes.dedup_by(|later, earlier| {
        let same = later.key == earlier.key;
        if same {
            earlier.count = earlier.count.saturating_add(later.count);
        }
        same
    });
    for change in changes.iter_mut().filter(|change| change.held_before) {
        change.count = change.count.saturating_add(count_before(&change.key));
    }
}

/// `key` in the form [`key_of`] gives.
fn borrowed(key: &Key) -> (i64, &MessageId) {
    (key.0, &key.1)
}

/// One person's retained events and sessions. Events are a vector sorted by their key, not a
/// B-tree: most persons hold a handful of events, which a B-tree leaf (room for 11) would
/// hold at several times their size, and new events nearly always land at the end. Both are
/// [`ThinVec`]s, one pointer each in the persons' map (a `Vec` takes three words there, for
/// every person, whatever it holds).
#[derive(Debug)]
struct PersonState {
    /// By [`key_of`]; 8 bytes each, the state's largest part after the events themselves.
    events: ThinVec<SharedActivity>,
    sessions: ThinVec<HeldSession>,
    /// When the person is due in [`Sessionizer::due`] (`i64::MAX` when it is not).
    scheduled_ms: i64,
}

impl Due for PersonState {
    fn scheduled_ms(&mut self) -> &mut i64 {
        &mut self.scheduled_ms
    }
}

impl Default for PersonState {
    fn default() -> Self {
        PersonState {
            events: ThinVec::new(),
            sessions: ThinVec::new(),
            scheduled_ms: i64::MAX,
        }
    }
}

impl PersonState {
    /// The position of the first event at or after `key`. Changes nearly always land among
    /// the last few events: those are looked at first, each a pointer away, before a binary
    /// search of the rest.
    fn position(&self, key: &Key) -> usize {
        let key = borrowed(key);
        let tail = self.events.len().saturating_sub(4);
        match self.events[tail..].iter().position(|e| key_of(e) >= key) {
            Some(0) => self.events[..tail].partition_point(|e| key_of(e) < key),
            Some(at) => tail + at,
            None => self.events.len(),
        }
    }

    /// Adds `event` unless it is held; whether it was added. Until the batch's changes are
    /// applied ([`PersonState::resessionize`]), an added event's multiplicity is its
    /// [`Change`]'s.
    fn insert(&mut self, event: SharedActivity) -> bool {
        let key = key_of(&event);
        // Events nearly always arrive after the person's others: no search for those.
        let at = match self.events.last() {
            Some(last) if key_of(last) < key => self.events.len(),
            _ => self.events.partition_point(|e| key_of(e) < key),
        };
        let added = self.events.get(at).is_none_or(|e| key_of(e) != key);
        if added {
            // The person's events are most of this operator's state.
            self.events.make_room_for_one();
            self.events.insert(at, event);
        }
        added
    }

    /// Releases the sessions that ended before `closed_ms` and the events before the first
    /// session kept (or before `closed_ms`, if that comes first); returns how many events it
    /// released. Nothing is emitted: what was written stays.
    ///
    /// A change reaches back at most to the first session that ends a gap before it (see
    /// [`PersonState::resessionize`]), and no change lands before `closed_ms` any more, so the
    /// sessions released are final and the rest compute as before.
    fn release_before(&mut self, closed_ms: i64) -> usize {
        let released = self.sessions.partition_point(|s| s.end_ms < closed_ms);
        let bound: Key = match self.sessions.get(released) {
            Some(s) if s.start_ms() < closed_ms => (s.start_ms(), s.session_id().clone()),
            _ => (closed_ms, MessageId::empty()),
        };
        let dropped = self.position(&bound);
        self.events.drain(..dropped);
        if self.events.capacity() > 2 * self.events.len() + 4 {
            self.events.shrink_to_fit();
        }
        self.sessions.drain(..released);
        dropped
    }

    /// The earliest `closed_ms` past which [`PersonState::release_before`] releases something:
    /// an event before the first session (one that is no activity) or the first session's
    /// end. `None` when nothing is held.
    fn next_release_ms(&self) -> Option<i64> {
        let first_event = self.events.first()?.timestamp_ms;
        Some(match self.sessions.first() {
            Some(session) if first_event >= session.start_ms() => session.end_ms,
            _ => first_event,
        })
    }

    /// Where re-sessionizing from the first changed key `lo` starts: the index of the first
    /// session a change can reach (`gap` is the person's tenant's), and the key of the first
    /// event to walk. The last session that starts before the change, when it also ended
    /// before it (the usual case, an event arriving after the person's others), is unchanged:
    /// `builder` resumes from it as it stands, without walking its events again (each event
    /// of a visit would otherwise cost the whole visit so far).
    fn resume_point(&self, lo: &Key, gap: i64, builder: &mut Builder) -> (usize, Key) {
        let first = self.sessions.partition_point(|s| s.end_ms + gap <= lo.0);
        let starting_before = self.sessions.partition_point(|s| s.key() < (lo.0, &lo.1));
        let resumable = starting_before
            .checked_sub(1)
            .filter(|last| *last >= first && self.sessions[*last].end_ms < lo.0);
        match (resumable, self.sessions.get(first)) {
            (Some(last), _) => {
                builder.resume(self.sessions[last].clone());
                (last, lo.clone())
            }
            (None, Some(s)) if s.key() < (lo.0, &lo.1) => {
                (first, (s.start_ms(), s.session_id().clone()))
            }
            (None, _) => (first, lo.clone()),
        }
    }

    /// Replaces the sessions in `range` by `sessions`, emitting those of `person` that went
    /// and those that came (a session unchanged is neither).
    fn replace_sessions(
        &mut self,
        range: std::ops::Range<usize>,
        sessions: Vec<HeldSession>,
        (person, rule): (&Person, BounceRule),
        mut emit: impl FnMut(Output, isize),
    ) {
        let old = &self.sessions[range.clone()];
        for gone in old.iter().filter(|old| !sessions.contains(old)) {
            emit(Output::Session(gone.to_session(person, rule)), -1);
        }
        for new in sessions.iter().filter(|new| !old.contains(new)) {
            emit(Output::Session(new.to_session(person, rule)), 1);
        }
        self.sessions.splice(range, sessions);
        // A vector's first allocation has room for 4 sessions (160 bytes beside the length
        // and capacity), and most persons hold one.
        if self.sessions.capacity() > self.sessions.len() + 1 {
            self.sessions.shrink_to_fit();
        }
    }

    /// Recomputes the sessions that `changes` (consolidated, see [`consolidate`]; none: nothing
    /// to do) can affect, emits the sessions and event memberships that differ from what was
    /// emitted, and drops the events whose multiplicity fell to zero (returning how many).
    ///
    /// Sessions grow left to right, so the recomputation starts at the first session that
    /// ends less than a gap before the first change (the ones before it keep their events,
    /// and the next starts afresh), or goes on from the last session that starts before the
    /// first change when that one also ended before it (an event that comes after the rest
    /// costs its own session, not a walk over it), and stops at the first event after the
    /// last change where both the old and the new sessions open a session: from there on the
    /// two computations see the same events from the same fresh start. A change costs the
    /// sessions around it, not the person's whole retained timeline, and a visit of k events
    /// arriving in order costs O(k), not O(k^2).
    fn resessionize(
        &mut self,
        person: &Person,
        changes: &[Change],
        settings: &SessionSettings,
        mut emit: impl FnMut(Output, isize),
    ) -> usize {
        let (Some(lo), Some(hi)) = (changes.first(), changes.last()) else {
            return 0;
        };
        let mut builder = Builder::new(person, settings);
        let gap = settings.gap_for(person.tenant());
        let (first, start) = self.resume_point(&lo.key, gap, &mut builder);
        let old_sessions = &self.sessions;
        let mut stop = None;
        let mut pending = changes.iter().peekable();
        let from = self.position(&start);
        for event in &self.events[from..] {
            let key = key_of(event);
            // Every change's event is held, and the walk starts at or before the first.
            let (held_after, held_before) = match pending.next_if(|c| borrowed(&c.key) == key) {
                Some(change) => (change.count > 0, change.held_before),
                None => (true, true),
            };
            let now = if !held_after {
                None
            } else if !event.is_activity() {
                Some(MessageId::empty())
            } else {
                if key > borrowed(&hi.key) && builder.starts_new(event) {
                    let opened_before =
                        old_sessions[first..].binary_search_by(|s| s.key().cmp(&key));
                    if let Ok(index) = opened_before {
                        stop = Some(first + index);
                        break;
                    }
                }
                Some(builder.add(event))
            };
            let before = held_before.then(|| emitted_in(event, old_sessions));
            if before != now {
                let enriched = |session_id: MessageId| {
                    Output::Event(Enriched {
                        event: event.clone(),
                        session_id,
                        person_id: person.id.clone(),
                    })
                };
                if let Some(before) = before {
                    emit(enriched(before), -1);
                }
                if let Some(after) = now {
                    emit(enriched(after), 1);
                }
            }
        }
        debug_assert!(pending.next().is_none(), "a change's event was not walked");
        let end = stop.unwrap_or(self.sessions.len());
        let rule = settings.bounce_for(person.tenant());
        self.replace_sessions(first..end, builder.finish(), (person, rule), &mut emit);
        let mut gone = changes
            .iter()
            .filter(|change| change.count <= 0)
            .map(|change| borrowed(&change.key))
            .peekable();
        if gone.peek().is_none() {
            return 0;
        }
        let before = self.events.len();
        self.events
            .retain(|event| gone.next_if(|key| *key == key_of(event)).is_none());
        before - self.events.len()
    }
}

/// What one worker of the operator keeps: each person's retained events.
struct Sessionizer {
    persons: FxHashMap<Person, PersonState>,
    /// The multiplicities of held events other than 1 (an event given more than once): an
    /// event's multiplicity only says whether it is held, and nearly every one is 1, so
    /// these are kept apart from the events (empty on nearly every stream).
    multiplicities: BTreeMap<(Person, Key), i32>,
    /// Persons by when they may release something.
    due: DueIndex<Person>,
    /// Events held in `persons`.
    retained: usize,
    /// A person's events are kept the retention's keep and a margin behind the clock.
    expiry: Expiry,
    settings: SessionSettings,
}

impl Sessionizer {
    fn new(settings: SessionSettings) -> Sessionizer {
        Sessionizer {
            persons: FxHashMap::default(),
            multiplicities: BTreeMap::new(),
            due: DueIndex::new(settings.events_keep_ms() / 16),
            retained: 0,
            expiry: Expiry::new(settings.events_keep_ms()),
            settings,
        }
    }

    fn report(&self, gauges: &StateGauges) {
        gauges.sessionized_events.set(self.retained);
        gauges.sessionized_persons.set(self.persons.len());
        gauges.session_timers.set(self.due.len());
    }

    /// Applies a batch of attributed events (insertions and retractions), then re-sessionizes
    /// each touched person between the first and the last key the batch changed, emitting
    /// the sessions and events that changed.
    fn apply(
        &mut self,
        updates: impl IntoIterator<Item = (Person, SharedActivity, isize)>,
        mut emit: impl FnMut(Output, isize),
    ) {
        let mut touched: FxHashMap<Person, Changes> = FxHashMap::default();
        for (person, event, diff) in updates {
            self.expiry.observe(event.received_at_ms());
            let key: Key = (event.timestamp_ms, event.message_id.clone());
            let added = self
                .persons
                .entry(person.clone())
                .or_default()
                .insert(event);
            self.retained += usize::from(added);
            touched.entry(person).or_default().push(Change {
                key,
                count: saturating_count(diff),
                held_before: !added,
            });
        }
        for (person, mut changes) in touched {
            let Some(state) = self.persons.get_mut(&person) else {
                continue;
            };
            let multiplicities = &mut self.multiplicities;
            consolidate(&mut changes, |key| {
                if multiplicities.is_empty() {
                    return 1;
                }
                let held = (person.clone(), key.clone());
                multiplicities.get(&held).copied().unwrap_or(1)
            });
            self.retained -= state.resessionize(&person, &changes, &self.settings, &mut emit);
            if !multiplicities.is_empty() || changes.iter().any(|change| change.count > 1) {
                for change in changes {
                    let held = (person.clone(), change.key);
                    if change.count > 1 {
                        multiplicities.insert(held, change.count);
                    } else {
                        multiplicities.remove(&held);
                    }
                }
            }
            match state.next_release_ms() {
                Some(next) => self.due.schedule_before(person, next, state),
                // Every event retracted (moved to another person, or erased): nothing of the
                // person stays, not even its id.
                None => {
                    self.persons.remove(&person);
                }
            }
        }
    }

    /// Releases what no change can reach any more, from the persons due. A person who keeps
    /// coming back keeps only the sessions a change can still reach: one moved in by an
    /// identity change lands at most a gap before the cutoff.
    fn sweep(&mut self) {
        let cutoff = self.expiry.cutoff();
        let closed = cutoff.saturating_sub(self.settings.retention.session_gap_ms);
        let retained = &mut self.retained;
        let multiplicities = &mut self.multiplicities;
        self.due
            .release_due(&mut self.persons, closed, |person, state| {
                *retained -= state.release_before(closed);
                if !multiplicities.is_empty() {
                    forget_released(multiplicities, person, state.events.first());
                }
                state.next_release_ms()
            });
    }
}

/// Drops the multiplicities of `person`'s events released: those before `first_held`, the
/// first event the person still holds (all of them when it holds none).
fn forget_released(
    multiplicities: &mut BTreeMap<(Person, Key), i32>,
    person: &Person,
    first_held: Option<&SharedActivity>,
) {
    let from = (person.clone(), (i64::MIN, MessageId::empty()));
    let released: Vec<(Person, Key)> = multiplicities
        .range(from..)
        .map(|(held, _)| held)
        .take_while(|(held_by, key)| {
            held_by == person && first_held.is_none_or(|first| borrowed(key) < key_of(first))
        })
        .cloned()
        .collect();
    for held in released {
        multiplicities.remove(&held);
    }
}

/// Sessionizes a collection of events attributed to persons.
pub trait Sessionize<'s, T: Timestamp> {
    /// The sessions, and every event with its session and person. It reports the events,
    /// persons and timers it holds on the worker into `gauges`.
    fn sessionize(
        self,
        settings: SessionSettings,
        gauges: StateGauges,
    ) -> (
        VecCollection<'s, T, Session, isize>,
        VecCollection<'s, T, Enriched, isize>,
    );
}

impl<'s, T: Timestamp + TotalOrder> Sessionize<'s, T>
    for VecCollection<'s, T, (Person, SharedActivity), isize>
{
    fn sessionize(
        self,
        settings: SessionSettings,
        gauges: StateGauges,
    ) -> (
        VecCollection<'s, T, Session, isize>,
        VecCollection<'s, T, Enriched, isize>,
    ) {
        let by_person = Exchange::new(
            |((person, _), _, _): &((Person, SharedActivity), T, isize)| route(person),
        );
        let output: StreamVec<'s, T, (Output, T, isize)> =
            self.inner
                .unary_frontier(by_person, "Sessionize", move |_capability, _info| {
                    let mut stash: Stash<T, (Person, SharedActivity, isize)> = Stash::default();
                    let mut state = Sessionizer::new(settings);
                    move |(input, frontier), output| {
                        input.for_each(|capability, data| {
                            for ((person, event), time, diff) in data.drain(..) {
                                stash.push(&capability, time, (person, event, diff));
                            }
                        });
                        for (capability, updates) in stash.complete(&[frontier]) {
                            let time = capability.time().clone();
                            let mut session = output.session(&capability);
                            state.apply(updates.into_iter().flatten(), |output, diff| {
                                session.give((output, time.clone(), diff))
                            });
                            state.sweep();
                            state.report(&gauges);
                        }
                    }
                });
        let (sessions, events) = output.ok_err(|(output, time, diff)| match output {
            Output::Session(session) => Ok((session, time, diff)),
            Output::Event(enriched) => Err((enriched, time, diff)),
        });
        (sessions.as_collection(), events.as_collection())
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::model::SharedEvent;
    use crate::model::{IdKind, Landing, Node};
    use crate::testing::{activity, event, run_collection};
    use proptest::prelude::*;
    use schemas::EventKind;
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    /// The oracle's own reading of the definitions (not the shared module's helpers): a
    /// person's page, screen or track call; a bot's events, and those a page sends by itself,
    /// are nothing.
    fn oracle_is_activity(event: &SharedEvent) -> bool {
        !event.is_bot
            && !event.non_interactive
            && matches!(
                event.kind,
                EventKind::Page | EventKind::Screen | EventKind::Track
            )
    }

    fn oracle_location(event: &SharedEvent) -> String {
        match event.kind {
            EventKind::Screen => event.name.clone(),
            _ => event.page.path.clone(),
        }
    }

    const MINUTE: i64 = 60_000;

    fn person(id: u8) -> Person {
        Node::new(&ArcStr::from("t"), IdKind::User, format!("u{id}").into())
    }

    fn page(message_id: &str, visitor: &str, time_ms: i64, path: &str) -> SharedEvent {
        let mut e = event("t", message_id, visitor, time_ms);
        e.page.path = path.into();
        Arc::new(e)
    }

    /// An event's outcome: (message id, session id, person id).
    type Membership = (String, String, String);

    fn acts(events: &[SharedEvent]) -> Vec<SharedActivity> {
        events.iter().map(|e| activity(e)).collect()
    }

    fn both(
        settings: SessionSettings,
    ) -> impl for<'s> Fn(
        VecCollection<'s, u64, (Person, SharedEvent), isize>,
    ) -> VecCollection<'s, u64, Result<Session, Membership>, isize>
    + Send
    + Sync
    + 'static {
        move |input| {
            let (sessions, events) = input
                .map(|(person, event)| (person, activity(&event)))
                .sessionize(settings.clone(), StateGauges::default());
            sessions.map(Ok).concat(events.map(|e: Enriched| {
                Err((
                    e.event.message_id.to_string(),
                    e.session_id.to_string(),
                    e.person_id.to_string(),
                ))
            }))
        }
    }

    /// The oracle: the final attribution, grouped by person, sessionized from scratch.
    fn oracle(
        input: &[((Person, SharedEvent), isize)],
        settings: &SessionSettings,
    ) -> BTreeMap<Result<Session, Membership>, isize> {
        let mut counts: BTreeMap<(Person, SharedEvent), isize> = BTreeMap::new();
        for (update, diff) in input {
            *counts.entry(update.clone()).or_default() += diff;
        }
        let mut by_person: BTreeMap<Person, Vec<SharedEvent>> = BTreeMap::new();
        for ((person, event), count) in counts {
            if count > 0 {
                by_person.entry(person).or_default().push(event);
            }
        }
        let mut expected = BTreeMap::new();
        for (person, events) in &by_person {
            let mut sorted = events.clone();
            sorted.sort_by_key(|e| (e.timestamp_ms, e.message_id.clone()));
            // Split by hand, independently of `sessions_of`.
            let mut groups: Vec<Vec<SharedEvent>> = Vec::new();
            for event in sorted.iter().filter(|e| oracle_is_activity(e)) {
                let new = match groups.last() {
                    None => true,
                    Some(group) => {
                        event.timestamp_ms - group[group.len() - 1].timestamp_ms
                            >= settings.gap_for(person.tenant())
                            || event.timestamp_ms - group[0].timestamp_ms >= settings.max_session_ms
                    }
                };
                if new {
                    groups.push(vec![event.clone()]);
                } else if let Some(group) = groups.last_mut() {
                    group.push(event.clone());
                }
            }
            for group in &groups {
                let views: Vec<&SharedEvent> = group
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::Page | EventKind::Screen))
                    .collect();
                let session = Session {
                    tenant: person.tenant().clone(),
                    session_id: group[0].message_id.as_str().into(),
                    person_id: person.id.clone(),
                    visitor_id: group[0].visitor_id().into(),
                    start_ms: group[0].timestamp_ms,
                    end_ms: group[group.len() - 1].timestamp_ms,
                    events: group.len() as u32,
                    page_views: views.len() as u32,
                    bounce: views.len() == 1
                        && (group.len() == 1
                            || settings
                                .tenant_bounce
                                .get(person.tenant().as_str())
                                .unwrap_or(&settings.bounce)
                                == &BounceRule::OnePageView),
                    entry_path: views
                        .first()
                        .map(|e| oracle_location(e).into())
                        .unwrap_or_else(|| "".into()),
                    exit_path: views
                        .last()
                        .map(|e| oracle_location(e).into())
                        .unwrap_or_else(|| "".into()),
                    landing: triomphe::Arc::new(Landing {
                        referrer: arcstr::ArcStr::from(group[0].page.referrer.as_str()),
                        campaign: Arc::new(group[0].campaign.clone()),
                        acquisition: Arc::new(group[0].acquisition.clone()),
                        client: Arc::new(group[0].client.clone()),
                        location: Arc::new(group[0].location.clone()),
                    }),
                };
                for event in group {
                    let membership = (
                        event.message_id.clone(),
                        session.session_id.to_string(),
                        person.id.to_string(),
                    );
                    expected.insert(Err(membership), 1);
                }
                expected.insert(Ok(session), 1);
            }
            for event in sorted.iter().filter(|e| !oracle_is_activity(e)) {
                expected.insert(
                    Err((
                        event.message_id.clone(),
                        String::new(),
                        person.id.to_string(),
                    )),
                    1,
                );
            }
        }
        expected
    }

    /// Events of a few visitors over ~3 hours in random order, attributed to persons, with
    /// some moved to another person later (what an identity merge does).
    fn arb_input() -> impl Strategy<Value = Vec<((Person, SharedEvent), isize)>> {
        let kinds = prop_oneof![
            5 => Just(EventKind::Page),
            2 => Just(EventKind::Screen),
            2 => Just(EventKind::Track),
            1 => Just(EventKind::Identify),
            1 => Just(EventKind::Alias),
            1 => Just(EventKind::Group),
        ];
        let items = proptest::collection::vec(
            (
                0u8..4,
                0i64..180,
                kinds,
                0u8..3,
                proptest::option::of(0u8..4),
            ),
            0..60,
        );
        // Half the logs put a minute's events on two milliseconds, so that events share a
        // time and only the message id orders them (a session may end on the very
        // millisecond of the next change).
        (items, any::<bool>()).prop_map(|(items, same_milliseconds)| {
            let mut updates = Vec::new();
            let mut moves = Vec::new();
            for (index, (visitor, minute, kind, path, moved_to)) in items.into_iter().enumerate() {
                let within = if same_milliseconds { index % 2 } else { index };
                let mut e = event(
                    "t",
                    &format!("m{index:03}"),
                    &format!("a{visitor}"),
                    minute * MINUTE + within as i64,
                );
                e.kind = kind;
                e.page.path = format!("/p{path}");
                e.name = format!("Screen {path}");
                if index % 5 == 0 {
                    e.page.referrer = "https://ref.example/".into();
                    e.campaign.source = "news".into();
                    e.acquisition.channel = "Referral".into();
                    e.client.browser = "Firefox".into();
                    e.location.country = "DE".into();
                }
                // A crawler's events and a page's own pings: stored, never part of a session.
                e.is_bot = index % 7 == 3;
                e.non_interactive = index % 11 == 5;
                let event = Arc::new(e);
                let owner = person(visitor);
                updates.push(((owner.clone(), event.clone()), 1));
                // An event given twice (held once, its multiplicity kept apart), and some of
                // those withdrawn once again: still held.
                if index % 9 == 4 {
                    updates.push(((owner.clone(), event.clone()), 1));
                    if index % 18 == 4 {
                        moves.push(((owner.clone(), event.clone()), -1));
                    }
                }
                if let Some(target) = moved_to {
                    moves.push(((owner, event.clone()), -1));
                    moves.push(((person(target), event), 1));
                }
            }
            updates.extend(moves);
            updates
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_sessionizing_from_scratch(
            mut input in arb_input(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..12,
            seed in any::<u64>(),
            one_page_view_rule in any::<bool>(),
            short_sessions in any::<bool>(),
            in_time_order in any::<bool>(),
        ) {
            // The insertions arrive in event-time order (each visit grows from its open
            // session) or shuffled (late events bridge and split sessions); moves stay after
            // what they move.
            let split = input.iter().position(|(_, diff)| *diff < 0).unwrap_or(input.len());
            if in_time_order {
                input[..split].sort_by_key(|((_, event), _)| event.timestamp_ms);
            } else {
                let mut rng = seed;
                for i in (1..split).rev() {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    input.swap(i, (rng >> 33) as usize % (i + 1));
                }
            }
            let mut settings = SessionSettings::default();
            if short_sessions {
                // Sessions cut by length as well as by inactivity: a change early in a long
                // visit moves every later boundary.
                settings.max_session_ms = 40 * MINUTE;
            }
            if one_page_view_rule {
                settings.bounce = BounceRule::OnePageView;
            } else if seed % 2 == 0 {
                settings.tenant_bounce = Arc::new(HashMap::from([("t".to_owned(), BounceRule::OnePageView)]));
            }
            let expected = oracle(&input, &settings);
            prop_assert_eq!(run_collection(workers, epoch_len, input, both(settings)), expected);
        }
    }

    #[test]
    fn a_late_event_bridging_two_sessions_merges_them() {
        let p = person(1);
        let early = page("m1", "a", 0, "/a");
        let later = page("m2", "a", 45 * MINUTE, "/b");
        let bridge = page("m3", "a", 25 * MINUTE, "/c");
        // Before the bridge: two sessions.
        let before = run_collection(
            1,
            1,
            vec![
                ((p.clone(), early.clone()), 1),
                ((p.clone(), later.clone()), 1),
            ],
            both(SessionSettings::default()),
        );
        let ids = |state: &BTreeMap<Result<Session, Membership>, isize>| {
            state
                .keys()
                .filter_map(|k| k.as_ref().ok().map(|s| s.session_id.to_string()))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            ids(&before),
            BTreeSet::from(["m1".to_owned(), "m2".to_owned()])
        );
        // The late bridge arrives last: one session remains, named by its first event.
        let after = run_collection(
            1,
            1,
            vec![
                ((p.clone(), early), 1),
                ((p.clone(), later), 1),
                ((p, bridge), 1),
            ],
            both(SessionSettings::default()),
        );
        assert_eq!(ids(&after), BTreeSet::from(["m1".to_owned()]));
        let session = after.keys().find_map(|k| k.as_ref().ok()).unwrap();
        assert_eq!(
            (
                session.events,
                session.page_views,
                &*session.entry_path,
                &*session.exit_path
            ),
            (3, 3, "/a", "/b")
        );
        assert_eq!(session.duration_ms(), 45 * MINUTE);
        assert!(
            after
                .keys()
                .filter_map(|k| k.as_ref().err())
                .all(|(_, session_id, _)| session_id == "m1")
        );
    }

    #[test]
    fn per_tenant_gap_and_the_24_hour_cap() {
        let settings = SessionSettings {
            tenant_gap_ms: Arc::new(HashMap::from([("t".to_owned(), 5 * MINUTE)])),
            ..SessionSettings::default()
        };
        let p = person(1);
        let events: Vec<_> = [0, 4, 10]
            .iter()
            .enumerate()
            .map(|(i, m)| page(&format!("m{i}"), "a", m * MINUTE, "/"))
            .collect();
        let (sessions, _) = sessions_of(&p, acts(&events).iter(), &settings);
        assert_eq!(sessions.len(), 2, "10 - 4 >= 5 minute gap: {sessions:?}");
        // One event every 20 minutes for 30 hours: split at 24 h.
        let steady: Vec<_> = (0..90)
            .map(|i| page(&format!("s{i:03}"), "a", i * 20 * MINUTE, "/"))
            .collect();
        let (sessions, _) = sessions_of(&p, acts(&steady).iter(), &SessionSettings::default());
        assert_eq!(sessions.len(), 2);
        assert!(sessions[0].duration_ms() < 24 * 60 * MINUTE);
        assert!(!sessions[0].bounce && sessions[0].page_views == 72);
    }

    /// The bytes per retained event that the state budget counts on.
    #[test]
    fn a_retained_event_takes_8_bytes_beside_its_activity() {
        let mut person = PersonState::default();
        let events = [page("a", "v", 0, "/"), page("b", "v", MINUTE, "/")];
        for event in acts(&events) {
            assert!(person.insert(event));
        }
        assert_eq!(std::mem::size_of_val(&person.events[..]), 16);
    }

    /// The bytes per held session, against those of the session it emits.
    #[test]
    fn a_held_session_takes_40_bytes_where_a_session_takes_96() {
        assert_eq!(std::mem::size_of::<HeldSession>(), 40);
        assert_eq!(std::mem::size_of::<Session>(), 96);
    }

    /// An event given more than once is held once, its multiplicity kept apart until it
    /// is 1 again, and withdrawn only with its last copy; a multiplicity left goes with its
    /// event's release.
    #[test]
    fn an_event_given_twice_is_held_until_withdrawn_twice_and_its_count_goes_with_it() {
        let p = person(1);
        let mut state = Sessionizer::new(SessionSettings::default());
        let events = acts(&[page("m1", "a", 0, "/"), page("m2", "a", MINUTE, "/")]);
        let mut emitted = 0;
        let mut apply = |state: &mut Sessionizer, event: &SharedActivity, diff| {
            state.apply([(p.clone(), event.clone(), diff)], |_, diff| {
                emitted += diff
            });
            emitted
        };
        // Twice in one batch, then once more in another: a multiplicity of 3.
        state.apply(
            [
                (p.clone(), events[0].clone(), 1),
                (p.clone(), events[0].clone(), 1),
            ],
            |_, _| {},
        );
        assert_eq!(
            apply(&mut state, &events[0], 1),
            0,
            "a held event emitted again"
        );
        assert_eq!(state.multiplicities.len(), 1);
        assert_eq!(
            apply(&mut state, &events[0], -2),
            0,
            "withdrawn while held once"
        );
        assert!(state.multiplicities.is_empty(), "a count of 1 kept apart");
        assert_eq!(state.retained, 1);
        // Withdrawn the last time: the event and its session go.
        assert_eq!(apply(&mut state, &events[0], -1), -2);
        assert_eq!(state.retained, 0);
        // A count left at 2 goes when its event is released.
        state.apply(
            [
                (p.clone(), events[1].clone(), 2),
                (p.clone(), events[0].clone(), 1),
            ],
            |_, _| {},
        );
        assert_eq!(state.multiplicities.len(), 1);
        let mut now = page("now", "c", 200 * 60 * MINUTE, "/");
        Arc::make_mut(&mut now).received_at_ms = 200 * 60 * MINUTE;
        state.apply([(person(3), acts(&[now])[0].clone(), 1)], |_, _| {});
        state.sweep();
        assert!(!state.persons.contains_key(&p));
        assert!(
            state.multiplicities.is_empty(),
            "a released event's count stays"
        );
    }

    /// A person whose every event moves to another person (a merge) or is erased leaves
    /// nothing behind, not even its id; and late events that make a person due earlier leave
    /// stale copies in the due index that its releases drop.
    #[test]
    fn a_person_emptied_by_retractions_is_forgotten_and_stale_due_copies_are_dropped() {
        let (moved, stays) = (person(1), person(2));
        let mut state = Sessionizer::new(SessionSettings::default());
        let events = acts(&[
            page("m1", "a", 0, "/"),
            page("m2", "a", MINUTE, "/"),
            page("m3", "b", 2 * MINUTE, "/"),
        ]);
        let updates = |person: &Person, events: &[SharedActivity], diff| {
            events
                .iter()
                .map(|e| (person.clone(), e.clone(), diff))
                .collect::<Vec<_>>()
        };
        state.apply(updates(&moved, &events[..2], 1), |_, _| {});
        state.apply(updates(&stays, &events[2..], 1), |_, _| {});
        state.apply(updates(&moved, &events[..2], -1), |_, _| {});
        assert!(
            !state.persons.contains_key(&moved),
            "an emptied person stays"
        );
        assert_eq!(state.retained, 1);
        // Events arriving ever earlier (an app that was offline) make the person due earlier
        // each time; the index holds a copy per arrival until the releases pass them.
        let late = acts(
            &(1..=5)
                .map(|i| page(&format!("late{i}"), "b", -i * 60 * MINUTE, "/"))
                .collect::<Vec<_>>(),
        );
        for event in &late {
            state.apply(updates(&stays, std::slice::from_ref(event), 1), |_, _| {});
        }
        assert_eq!(
            state.due.len(),
            7,
            "one copy per time the person became due earlier"
        );
        // The clock moves on past every horizon: the person is released in full, each copy
        // visited once.
        let mut now = page("now", "c", 200 * 60 * MINUTE, "/");
        Arc::make_mut(&mut now).received_at_ms = 200 * 60 * MINUTE;
        state.apply(updates(&person(3), &acts(&[now]), 1), |_, _| {});
        state.sweep();
        assert!(!state.persons.contains_key(&stays));
        assert_eq!(
            state.due.len(),
            1,
            "only the newest person's own entry is left"
        );
    }

    fn of_kind(message_id: &str, kind: EventKind, time_ms: i64) -> SharedEvent {
        let mut e = event("t", message_id, "a", time_ms);
        e.kind = kind;
        e.page.path = format!("/{message_id}");
        e.name = format!("{message_id} name");
        Arc::new(e)
    }

    /// Issue 13, item 5: a screen is a page view; identify, alias and group are not visits.
    #[test]
    fn screens_are_page_views_and_identify_neither_extends_nor_bridges_a_session() {
        let p = person(1);
        let events = [
            of_kind("s1", EventKind::Screen, 0),
            // 25 and 50 minutes: an identify would bridge two visits an hour apart.
            of_kind("i1", EventKind::Identify, 25 * MINUTE),
            of_kind("g1", EventKind::Group, 50 * MINUTE),
            of_kind("p2", EventKind::Page, 60 * MINUTE),
        ];
        let events = acts(&events);
        let (sessions, membership) = sessions_of(&p, events.iter(), &SessionSettings::default());
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_eq!(
            (
                sessions[0].page_views,
                sessions[0].events,
                sessions[0].end_ms
            ),
            (1, 1, 0),
            "the identify did not extend the first session"
        );
        assert_eq!(
            &*sessions[0].entry_path, "s1 name",
            "a screen is located by its name"
        );
        let unsessioned: Vec<String> = membership
            .iter()
            .filter(|(_, id)| id.is_empty())
            .map(|(e, _)| e.message_id.to_string())
            .collect();
        assert_eq!(unsessioned, ["i1", "g1"]);
        // A nightly CRM sync (identify only) makes no session at all.
        let sync = [of_kind("i2", EventKind::Identify, 0)];
        assert!(
            sessions_of(&p, acts(&sync).iter(), &SessionSettings::default())
                .0
                .is_empty()
        );
    }

    /// Issue 13, item 6: one page view then a track is an engaged visit, not a bounce, unless
    /// the tenant asks for the one-page-view rule.
    #[test]
    fn a_page_view_followed_by_a_track_is_not_a_bounce() {
        let p = person(1);
        let engaged = [
            of_kind("p1", EventKind::Page, 0),
            of_kind("t1", EventKind::Track, MINUTE),
        ];
        let lone = [of_kind("p2", EventKind::Page, 0)];
        let default = SessionSettings::default();
        assert!(!sessions_of(&p, acts(&engaged).iter(), &default).0[0].bounce);
        assert!(sessions_of(&p, acts(&lone).iter(), &default).0[0].bounce);
        let per_tenant = SessionSettings {
            tenant_bounce: Arc::new(HashMap::from([("t".to_owned(), BounceRule::OnePageView)])),
            ..SessionSettings::default()
        };
        assert!(sessions_of(&p, acts(&engaged).iter(), &per_tenant).0[0].bounce);
    }
}
