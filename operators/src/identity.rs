//! `stitch_identities`: which person each id belongs to.
//!
//! Identity claims become links between ids; a person is a connected component of linked ids.
//! A new link merges components and a retracted link (an unmerge, a superseded or erased
//! claim) splits them again, and downstream operators receive exactly the corrections:
//! retractions of the old person, insertions of the new.
//!
//! Rules (Segment's identity model; the README has them as a table):
//! - An identify claim (an `identify`, or any event carrying both ids) links an anonymous id
//!   to a user id, but an anonymous id belongs to the user of its *first* claim (by event
//!   time, then message id): a later claim to a different user would merge two known users
//!   through a shared browser, which is almost always a shared computer, not one person.
//!   Tenants may opt out of that refusal.
//! - `alias` always links. Its `previousId` is whatever id the user had before: when the
//!   tenant knows it as a user id (any claim names it as one), the alias merges the two users;
//!   otherwise it is an anonymous id. This is re-decided as claims arrive, so a user id first
//!   seen after the alias still gets the merge.
//! - An unmerge removes the link between two ids, whichever kind the first resolved to.
//!
//! The canonical person is the least node of the component, and user ids sort before
//! anonymous ids, so it is the smallest user id when the person has one: the same input gives
//! the same person ids on any number of workers.
//!
//! The identity map is kept for good (a user may come back after a year), so its cost per id
//! is what bounds the engine's memory under a stream of ever-new visitors. Each tenant's graph
//! lives on one worker, its ids interned once and its links held as integer pairs; a change
//! re-derives the links of the ids it names and relabels only the components they touch (a
//! breadth-first walk of the new graph from every node whose links changed reaches every node
//! whose person may have changed). Differential's label propagation did the same spread over
//! the workers, but held each id in about ten arrangements of owned strings: about 2.7 kB per
//! linked id, the part of the engine's memory that kept growing (`bench memory`).

use arcstr::ArcStr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::model::{IdKind, IdentityClaim, MessageId, Node, Person, Unlink, saturating_count};
use crate::placeholders::PlaceholderIds;
use crate::settling::Settling;
use crate::stash::{Stash, route};

/// Who may be linked to whom.
#[derive(Debug, Clone, Default)]
pub struct IdentityPolicy {
    /// Tenants for which every identify links, not only the first of each anonymous id.
    pub allow_identify_merge: Arc<BTreeSet<String>>,
    /// Ids that never link anything (removed from events before identity sees them).
    pub placeholders: PlaceholderIds,
}

/// Computes persons from identity claims.
pub trait StitchIdentities<'s, T: Timestamp> {
    /// Maps every id that takes part in a link to its person. Ids in no link are their own
    /// person and do not appear. `unlinks` are links removed by an operator (unmerge).
    fn stitch_identities(
        self,
        unlinks: VecCollection<'s, T, Unlink, isize>,
        policy: IdentityPolicy,
    ) -> VecCollection<'s, T, (Node, Person), isize>;
}

/// An input of the operator: a claim or an unmerge.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Change {
    Claim(IdentityClaim),
    Unlink(Unlink),
}

impl Change {
    fn tenant(&self) -> &str {
        match self {
            Change::Claim(claim) => claim.tenant(),
            Change::Unlink(unlink) => &unlink.tenant,
        }
    }
}

impl<'s, T> StitchIdentities<'s, T> for VecCollection<'s, T, IdentityClaim, isize>
where
    T: Timestamp + TotalOrder + Hash,
{
    fn stitch_identities(
        self,
        unlinks: VecCollection<'s, T, Unlink, isize>,
        policy: IdentityPolicy,
    ) -> VecCollection<'s, T, (Node, Person), isize> {
        let changes = self
            .inner
            .map(|(claim, time, diff)| (Change::Claim(claim), time, diff))
            .concat(
                unlinks
                    .inner
                    .map(|(unlink, time, diff)| (Change::Unlink(unlink), time, diff)),
            );
        let by_tenant = Exchange::new(|(change, _, _): &(Change, T, isize)| route(change.tenant()));
        changes
            .unary_frontier(by_tenant, "StitchIdentities", move |_capability, _info| {
                let mut stash: Stash<T, (Change, isize)> = Stash::default();
                let mut graphs: FxHashMap<ArcStr, TenantGraph> = FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (change, time, diff) in data.drain(..) {
                            stash.push(&capability, time, (change, diff));
                        }
                    });
                    for (capability, chunks) in stash.complete(&[frontier]) {
                        let time = capability.time().clone();
                        let mut by_tenant: BTreeMap<String, Vec<(Change, isize)>> = BTreeMap::new();
                        for (change, diff) in chunks.into_iter().flatten() {
                            by_tenant
                                .entry(change.tenant().to_owned())
                                .or_default()
                                .push((change, diff));
                        }
                        let mut session = output.session(&capability);
                        for (tenant, changes) in by_tenant {
                            let merge = policy.allow_identify_merge.contains(&tenant);
                            let graph = graphs
                                .entry(ArcStr::from(tenant.as_str()))
                                .or_insert_with_key(|tenant| TenantGraph::new(tenant.clone()));
                            graph.apply(changes, merge, |node, person, diff| {
                                session.give(((node, person), time.clone(), diff));
                            });
                        }
                    }
                }
            })
            .as_collection()
    }
}

/// An id interned in one tenant's graph. 32 bits halve every map and list of the graph, the
/// state kept for good; a worker runs out of memory long before it interns 2^32 ids (each
/// takes over a hundred bytes), and [`TenantGraph::intern`] refuses rather than wraps.
type Id = u32;

/// A node of one tenant's graph: its kind and its interned id, 8 bytes.
type Key = (IdKind, Id);

/// The links one from id makes: nearly always one, held in place (24 bytes, as a `Vec`'s
/// header alone, which allocated 16 more).
type Links = SmallVec<[(Key, Key); 1]>;

/// A node's neighbours with the number of links to each: nearly always one, in place.
type Neighbours = SmallVec<[(Key, u32); 1]>;

/// The identify claims on one anonymous id: nearly always one, held in place (40 bytes, where
/// a `Vec` took 24 and an allocation of 32).
type Identifies = SmallVec<[Identify; 1]>;

/// An identify claim on an anonymous id, held with the anonymous id: 32 bytes and no
/// allocation of its own when its message id is a UUID (held in place).
#[derive(Debug)]
struct Identify {
    time_ms: i64,
    message_id: MessageId,
    user: Id,
    /// See [`saturating_count`].
    count: i32,
}

/// One tenant's claims, the links they make and the person of every linked id.
///
/// Everything is keyed by interned ids. Counts are those of the claims' collection (a claim
/// may be retracted, and a time may carry a retraction before the insertion it nets with);
/// an entry leaves when its count returns to zero.
#[derive(Debug)]
struct TenantGraph {
    tenant: ArcStr,
    /// Each interned id's text; an id no structure holds any more is forgotten (an erased
    /// person's ids must not stay in memory) and its index reused.
    names: Vec<ArcStr>,
    ids: Settling<ArcStr, Id>,
    /// Indexes of forgotten ids.
    free: Vec<Id>,
    /// Identify claims, by anonymous id.
    identifies: Settling<Id, Identifies>,
    /// Alias claims `(user id, count)`, by previous id.
    aliases: FxHashMap<Id, Vec<(Id, isize)>>,
    /// Claims naming each id as a user id (see [`saturating_count`]): a previous id with any
    /// is a known user.
    user_claims: Settling<Id, i32>,
    /// Unmerges, by (from id, user id).
    unlinked: FxHashMap<(Id, Id), isize>,
    /// The links each from id (anonymous id or previous id) makes now, sorted.
    links_from: Settling<Id, Links>,
    /// Both directions of every link, with the number of links between the two nodes (an
    /// alias each way makes two).
    adjacency: Settling<Key, Neighbours>,
    /// The person of every linked node, as emitted.
    person: Settling<Key, Key>,
}

impl TenantGraph {
    fn new(tenant: ArcStr) -> TenantGraph {
        TenantGraph {
            tenant,
            names: Vec::new(),
            ids: Settling::default(),
            free: Vec::new(),
            identifies: Settling::default(),
            aliases: FxHashMap::default(),
            user_claims: Settling::default(),
            unlinked: FxHashMap::default(),
            links_from: Settling::default(),
            adjacency: Settling::default(),
            person: Settling::default(),
        }
    }

    /// The index of `id`, interned if it is new; `None` once 2^32 ids are held (see [`Id`]).
    fn intern(&mut self, id: &str) -> Option<Id> {
        if let Some(&index) = self.ids.get(id) {
            return Some(index);
        }
        let name: ArcStr = ArcStr::from(id);
        let index = match self.free.pop() {
            Some(index) => {
                self.names[index as usize] = name.clone();
                index
            }
            None => {
                let index = Id::try_from(self.names.len()).ok()?;
                self.names.push(name.clone());
                index
            }
        };
        self.ids.insert(name, index);
        Some(index)
    }

    /// Interns both ids of a claim or an unmerge.
    fn intern_pair(&mut self, a: &str, b: &str) -> Option<(Id, Id)> {
        Some((self.intern(a)?, self.intern(b)?))
    }

    fn name(&self, id: Id) -> &ArcStr {
        &self.names[id as usize]
    }

    /// Forgets `id` if nothing holds it any more. Every identify or alias claim on a user id
    /// is also counted in `user_claims`, and a time's counts are never negative once all of
    /// it is applied, so an id without entries of its own is named by no claim.
    fn forget_if_unused(&mut self, id: Id) {
        let held = self.identifies.contains_key(&id)
            || self.aliases.contains_key(&id)
            || self.user_claims.contains_key(&id)
            || self.links_from.contains_key(&id)
            || [IdKind::User, IdKind::Anonymous].into_iter().any(|kind| {
                self.adjacency.contains_key(&(kind, id)) || self.person.contains_key(&(kind, id))
            })
            || self
                .unlinked
                .keys()
                .any(|&(from, user)| from == id || user == id);
        if held || self.name(id).is_empty() {
            return;
        }
        let name = std::mem::replace(&mut self.names[id as usize], crate::model::empty_str());
        self.ids.remove(&name);
        self.free.push(id);
    }

    /// Applies one time's changes and emits the persons that changed. `merge`: the tenant
    /// lets every identify link, not only the first of each anonymous id.
    fn apply(
        &mut self,
        changes: Vec<(Change, isize)>,
        merge: bool,
        mut emit: impl FnMut(Node, Person, isize),
    ) {
        let mut dirty: FxHashSet<Id> = FxHashSet::default();
        let mut named: FxHashSet<Id> = FxHashSet::default();
        for (change, diff) in changes {
            self.record(change, diff, &mut dirty, &mut named);
        }
        let mut touched: FxHashSet<Key> = FxHashSet::default();
        for &from in &dirty {
            self.relink(from, merge, &mut touched);
        }
        named.extend(touched.iter().map(|&(_, id)| id));
        self.relabel(touched, &mut emit);
        for id in named {
            self.forget_if_unused(id);
        }
        self.settle_when_due();
    }

    /// Settles the graph's maps (see [`Settling`]): the graph is kept for good and most of
    /// it is written once, when its ids link.
    fn settle_when_due(&mut self) {
        self.ids.settle_when_due();
        self.identifies.settle_when_due();
        self.user_claims.settle_when_due();
        self.links_from.settle_when_due();
        self.adjacency.settle_when_due();
        self.person.settle_when_due();
    }

    /// Counts one claim or unmerge; `dirty` collects the from ids whose links may change,
    /// `named` every id the change names. A change naming an id the graph has no room for
    /// (see [`Id`]) is not counted.
    fn record(
        &mut self,
        change: Change,
        diff: isize,
        dirty: &mut FxHashSet<Id>,
        named: &mut FxHashSet<Id>,
    ) {
        match change {
            Change::Claim(IdentityClaim::Identify {
                time_ms,
                message_id,
                anonymous_id,
                user_id,
                ..
            }) => {
                let Some((from, user)) = self.intern_pair(&anonymous_id, &user_id) else {
                    return;
                };
                named.extend([from, user]);
                self.count_identify(from, user, (time_ms, MessageId::new(&message_id)), diff);
                self.count_user_claim(user, diff, dirty);
                dirty.insert(from);
            }
            Change::Claim(IdentityClaim::Alias {
                previous_id,
                user_id,
                ..
            }) => {
                let Some((from, user)) = self.intern_pair(&previous_id, &user_id) else {
                    return;
                };
                named.extend([from, user]);
                self.count_alias(from, user, diff);
                self.count_user_claim(user, diff, dirty);
                dirty.insert(from);
            }
            Change::Claim(IdentityClaim::KnownUser { user_id, .. }) => {
                let Some(user) = self.intern(&user_id) else {
                    return;
                };
                named.insert(user);
                self.count_user_claim(user, diff, dirty);
            }
            Change::Unlink(Unlink {
                from_id, user_id, ..
            }) => {
                let Some((from, user)) = self.intern_pair(&from_id, &user_id) else {
                    return;
                };
                named.extend([from, user]);
                let count = self.unlinked.entry((from, user)).or_default();
                *count += diff;
                if *count == 0 {
                    self.unlinked.remove(&(from, user));
                }
                dirty.insert(from);
            }
        }
    }

    /// Counts an identify claim of `from` (an anonymous id) to `user`, made at `time_ms` by
    /// `message_id`.
    fn count_identify(
        &mut self,
        from: Id,
        user: Id,
        (time_ms, message_id): (i64, MessageId),
        diff: isize,
    ) {
        let count = saturating_count(diff);
        // Nearly every anonymous id has one identify: room for one, not for four.
        let (claims, _) = self.identifies.get_or_insert_with(from, Identifies::new);
        match claims.iter_mut().find(|claim| {
            claim.user == user && claim.time_ms == time_ms && claim.message_id == message_id
        }) {
            Some(claim) => claim.count = claim.count.saturating_add(count),
            None => claims.push(Identify {
                time_ms,
                message_id,
                user,
                count,
            }),
        }
        claims.retain(|claim| claim.count != 0);
        if claims.is_empty() {
            self.identifies.remove(&from);
        }
    }

    /// Counts an alias of `from` (a previous id) to `user`.
    fn count_alias(&mut self, from: Id, user: Id, diff: isize) {
        let aliases = self.aliases.entry(from).or_default();
        match aliases.iter_mut().find(|(to, _)| *to == user) {
            Some((_, count)) => *count += diff,
            None => aliases.push((user, diff)),
        }
        aliases.retain(|(_, count)| *count != 0);
        if aliases.is_empty() {
            self.aliases.remove(&from);
        }
    }

    /// Counts a claim naming `user` as a user id; when that makes it known or unknown, the
    /// aliases from it change kind.
    fn count_user_claim(&mut self, user: Id, diff: isize, dirty: &mut FxHashSet<Id>) {
        let (count, _) = self.user_claims.get_or_insert_with(user, i32::default);
        let was_known = *count > 0;
        *count = count.saturating_add(saturating_count(diff));
        if (*count > 0) != was_known {
            dirty.insert(user);
        }
        if *count == 0 {
            self.user_claims.remove(&user);
        }
    }

    /// The links the claims on `from` make now, sorted: its first identify's (or, with
    /// `merge`, every identify's), and its aliases', less the unmerged ones.
    fn links_of(&self, from: Id, merge: bool) -> Links {
        let mut users: Vec<(IdKind, Id)> = Vec::new();
        if let Some(claims) = self.identifies.get(&from) {
            let present = claims.iter().filter(|claim| claim.count > 0);
            if merge {
                users.extend(present.map(|claim| (IdKind::Anonymous, claim.user)));
            } else if let Some(first) = present.min_by(|a, b| {
                (a.time_ms, &a.message_id, self.name(a.user)).cmp(&(
                    b.time_ms,
                    &b.message_id,
                    self.name(b.user),
                ))
            }) {
                users.push((IdKind::Anonymous, first.user));
            }
        }
        if let Some(aliases) = self.aliases.get(&from) {
            let kind = if self.user_claims.get(&from).is_some_and(|count| *count > 0) {
                IdKind::User
            } else {
                IdKind::Anonymous
            };
            users.extend(
                aliases
                    .iter()
                    .filter(|(_, count)| *count > 0)
                    .map(|(user, _)| (kind, *user)),
            );
        }
        let mut links: Links = users
            .into_iter()
            .filter(|(_, user)| self.unlinked.get(&(from, *user)).is_none_or(|c| *c <= 0))
            .map(|(kind, user)| ((kind, from), (IdKind::User, user)))
            .collect();
        links.sort_unstable();
        links.dedup();
        links
    }

    /// Re-derives the links of `from` and applies the difference to the adjacency; the ends
    /// of every link added or removed go into `touched`.
    fn relink(&mut self, from: Id, merge: bool, touched: &mut FxHashSet<Key>) {
        let new = self.links_of(from, merge);
        // Taken out in place: a settled entry removed and inserted again would move the
        // entries after it twice.
        let old = self
            .links_from
            .get_mut(&from)
            .map(std::mem::take)
            .unwrap_or_default();
        for &(a, b) in old.iter().filter(|link| new.binary_search(link).is_err()) {
            self.connect(a, b, -1);
            touched.extend([a, b]);
        }
        for &(a, b) in new.iter().filter(|link| old.binary_search(link).is_err()) {
            self.connect(a, b, 1);
            touched.extend([a, b]);
        }
        if new.is_empty() {
            self.links_from.remove(&from);
        } else {
            self.links_from.insert(from, new);
        }
    }

    /// Adds (`diff` 1) or removes (-1) one link between `a` and `b`, both directions.
    fn connect(&mut self, a: Key, b: Key, diff: i32) {
        let ends = if a == b {
            vec![(a, a)]
        } else {
            vec![(a, b), (b, a)]
        };
        for (node, other) in ends {
            // Most linked ids have one neighbour, held in place (see [`Neighbours`]).
            let (neighbours, _) = self.adjacency.get_or_insert_with(node, Neighbours::new);
            match neighbours.iter_mut().position(|(n, _)| *n == other) {
                Some(at) => {
                    let count = &mut neighbours[at].1;
                    *count = count.saturating_add_signed(diff);
                    if *count == 0 {
                        neighbours.swap_remove(at);
                    }
                }
                None if diff > 0 => neighbours.push((other, 1)),
                None => {}
            }
            if neighbours.is_empty() {
                self.adjacency.remove(&node);
            }
        }
    }

    /// Gives every node in the components of `touched` the least node of its component as its
    /// person (none when it has no link left), and emits the changes.
    fn relabel(&mut self, touched: FxHashSet<Key>, emit: &mut impl FnMut(Node, Person, isize)) {
        let mut seen: FxHashSet<Key> = FxHashSet::default();
        for start in touched {
            if !seen.insert(start) {
                continue;
            }
            let component = self.component(start, &mut seen);
            let least = self
                .adjacency
                .contains_key(&start)
                .then(|| {
                    component
                        .iter()
                        .copied()
                        .min_by(|a, b| (a.0, self.name(a.1)).cmp(&(b.0, self.name(b.1))))
                })
                .flatten();
            for node in component {
                let old = match least {
                    Some(least) => self.person.insert(node, least),
                    None => self.person.remove(&node),
                };
                if old == least {
                    continue;
                }
                if let Some(old) = old {
                    emit(self.node(node), self.node(old), -1);
                }
                if let Some(least) = least {
                    emit(self.node(node), self.node(least), 1);
                }
            }
        }
    }

    /// The nodes linked to `start`, directly or not, `start` included; each is added to `seen`.
    fn component(&self, start: Key, seen: &mut FxHashSet<Key>) -> Vec<Key> {
        let mut component = vec![start];
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for &(next, _) in self
                .adjacency
                .get(&node)
                .map(|neighbours| neighbours.as_slice())
                .unwrap_or_default()
            {
                if seen.insert(next) {
                    component.push(next);
                    queue.push_back(next);
                }
            }
        }
        component
    }

    fn node(&self, (kind, id): Key) -> Node {
        Node::new(&self.tenant, kind, self.name(id).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{insert_then_retract, run_collection};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// Input of the tests: claims and unlinks, each inserted or retracted.
    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Input {
        Claim(IdentityClaim),
        Unlink(Unlink),
    }

    fn stitch(
        policy: IdentityPolicy,
    ) -> impl for<'s> Fn(
        VecCollection<'s, u64, Input, isize>,
    ) -> VecCollection<'s, u64, (Node, Person), isize>
    + Send
    + Sync
    + 'static {
        move |input| {
            let claims = input.clone().flat_map(|i| match i {
                Input::Claim(claim) => Some(claim),
                Input::Unlink(_) => None,
            });
            let unlinks = input.flat_map(|i| match i {
                Input::Unlink(unlink) => Some(unlink),
                Input::Claim(_) => None,
            });
            claims.stitch_identities(unlinks, policy.clone())
        }
    }

    #[test]
    fn a_node_takes_8_bytes_and_an_identify_claim_32() {
        assert_eq!(std::mem::size_of::<Key>(), 8);
        assert_eq!(std::mem::size_of::<(Key, u32)>(), 12);
        assert_eq!(std::mem::size_of::<Identify>(), 32);
        assert_eq!(std::mem::size_of::<Identifies>(), 40);
        // One neighbour and one link in place, in a `Vec` header's 24 bytes.
        assert_eq!(std::mem::size_of::<Neighbours>(), 24);
        assert_eq!(std::mem::size_of::<Links>(), 24);
        assert!(!Neighbours::from_buf([((IdKind::User, 1), 1)]).spilled());
    }

    fn node(tenant: &str, kind: IdKind, id: &str) -> Node {
        Node::new(&ArcStr::from(tenant), kind, id.into())
    }

    /// The oracle: the rules applied to the final claims one by one, then union-find.
    fn oracle(
        input: &[(Input, isize)],
        policy: &IdentityPolicy,
    ) -> BTreeMap<(Node, Person), isize> {
        let mut counts: BTreeMap<Input, isize> = BTreeMap::new();
        for (datum, diff) in input {
            *counts.entry(datum.clone()).or_default() += diff;
        }
        let present: Vec<&Input> = counts
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(i, _)| i)
            .collect();
        // Every user id any claim names, per tenant.
        let mut users: BTreeSet<(String, String)> = BTreeSet::new();
        for input in &present {
            if let Input::Claim(
                IdentityClaim::Identify {
                    tenant, user_id, ..
                }
                | IdentityClaim::Alias {
                    tenant, user_id, ..
                }
                | IdentityClaim::KnownUser { tenant, user_id },
            ) = input
            {
                users.insert((tenant.clone(), user_id.clone()));
            }
        }
        let mut first_identify: HashMap<(String, String), (i64, String, String)> = HashMap::new();
        // (tenant, first id, its kind, user id)
        let mut links: BTreeSet<(String, String, IdKind, String)> = BTreeSet::new();
        for input in &present {
            match input {
                Input::Claim(IdentityClaim::Identify {
                    tenant,
                    time_ms,
                    message_id,
                    anonymous_id,
                    user_id,
                }) => {
                    let claim = (*time_ms, message_id.clone(), user_id.clone());
                    if policy.allow_identify_merge.contains(tenant) {
                        links.insert((
                            tenant.clone(),
                            anonymous_id.clone(),
                            IdKind::Anonymous,
                            user_id.clone(),
                        ));
                    } else {
                        let entry = first_identify
                            .entry((tenant.clone(), anonymous_id.clone()))
                            .or_insert(claim.clone());
                        if claim < *entry {
                            *entry = claim;
                        }
                    }
                }
                Input::Claim(IdentityClaim::Alias {
                    tenant,
                    previous_id,
                    user_id,
                }) => {
                    let kind = if users.contains(&(tenant.clone(), previous_id.clone())) {
                        IdKind::User
                    } else {
                        IdKind::Anonymous
                    };
                    links.insert((tenant.clone(), previous_id.clone(), kind, user_id.clone()));
                }
                _ => {}
            }
        }
        for ((tenant, anonymous_id), (_, _, user_id)) in first_identify {
            links.insert((tenant, anonymous_id, IdKind::Anonymous, user_id));
        }
        for input in &present {
            if let Input::Unlink(unlink) = input {
                links.retain(|(tenant, from, _, user)| {
                    (tenant, from, user) != (&unlink.tenant, &unlink.from_id, &unlink.user_id)
                });
            }
        }
        // Union-find.
        let mut parent: BTreeMap<Node, Node> = BTreeMap::new();
        fn find(parent: &mut BTreeMap<Node, Node>, node: &Node) -> Node {
            let next = parent.get(node).cloned().unwrap_or_else(|| node.clone());
            if &next == node {
                next
            } else {
                let root = find(parent, &next);
                parent.insert(node.clone(), root.clone());
                root
            }
        }
        let edges: Vec<(Node, Node)> = links
            .iter()
            .map(|(tenant, from, kind, user)| {
                (node(tenant, *kind, from), node(tenant, IdKind::User, user))
            })
            .collect();
        for (a, b) in &edges {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            // Keep the least node as root, so the root is the canonical person.
            let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent.insert(high, low);
        }
        let nodes: BTreeSet<Node> = edges.into_iter().flat_map(|(a, b)| [a, b]).collect();
        nodes
            .into_iter()
            .map(|node| {
                let root = find(&mut parent, &node);
                ((node, root), 1)
            })
            .collect()
    }

    fn identify(tenant: &str, time_ms: i64, anonymous: &str, user: &str) -> Input {
        Input::Claim(IdentityClaim::Identify {
            tenant: tenant.into(),
            time_ms,
            message_id: format!("i-{anonymous}-{user}-{time_ms}"),
            anonymous_id: anonymous.into(),
            user_id: user.into(),
        })
    }

    fn alias(tenant: &str, previous: &str, user: &str) -> Input {
        Input::Claim(IdentityClaim::Alias {
            tenant: tenant.into(),
            previous_id: previous.into(),
            user_id: user.into(),
        })
    }

    fn known(tenant: &str, user: &str) -> Input {
        Input::Claim(IdentityClaim::KnownUser {
            tenant: tenant.into(),
            user_id: user.into(),
        })
    }

    /// An anonymous id `a0`..`a7`, or (for an alias's previous id and unlinks) sometimes a
    /// user id.
    fn any_id() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (0u8..8).prop_map(|a| format!("a{a}")),
            1 => (0u8..5).prop_map(|u| format!("u{u}")),
        ]
    }

    fn arb_input() -> impl Strategy<Value = Vec<(Input, isize)>> {
        let claim = prop_oneof![
            4 => (0u8..2, 0i64..100, 0u8..8, 0u8..5).prop_map(|(t, time, a, u)| identify(
                &format!("t{t}"),
                time,
                &format!("a{a}"),
                &format!("u{u}")
            )),
            2 => (0u8..2, any_id(), 0u8..5).prop_map(|(t, previous, u)| alias(
                &format!("t{t}"),
                &previous,
                &format!("u{u}")
            )),
            1 => (0u8..2, 0u8..5).prop_map(|(t, u)| known(&format!("t{t}"), &format!("u{u}"))),
            1 => (0u8..2, any_id(), 0u8..5).prop_map(|(t, from, u)| Input::Unlink(Unlink::new(
                &format!("t{t}"),
                &from,
                &format!("u{u}")
            ))),
        ];
        proptest::collection::vec((claim, any::<bool>()), 0..40).prop_map(insert_then_retract)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_union_find(
            input in arb_input(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..10,
            allow_t1 in any::<bool>(),
        ) {
            let policy = IdentityPolicy {
                allow_identify_merge: Arc::new(if allow_t1 { BTreeSet::from(["t1".to_owned()]) } else { BTreeSet::new() }),
                ..IdentityPolicy::default()
            };
            let expected = oracle(&input, &policy);
            prop_assert_eq!(run_collection(workers, epoch_len, input, stitch(policy)), expected);
        }
    }

    fn person_of(
        result: &BTreeMap<(Node, Person), isize>,
        kind: IdKind,
        id: &str,
    ) -> Option<String> {
        result
            .keys()
            .find(|(node, _)| node.kind() == kind && &*node.id == id)
            .map(|(_, person)| person.id.to_string())
    }

    #[test]
    fn identify_between_two_known_users_is_refused_unless_allowed() {
        let input = vec![
            (identify("t", 1, "browser", "alice"), 1),
            (identify("t", 2, "browser", "bob"), 1),
        ];
        let refused = run_collection(2, 1, input.clone(), stitch(IdentityPolicy::default()));
        assert_eq!(
            person_of(&refused, IdKind::Anonymous, "browser").as_deref(),
            Some("alice")
        );
        assert_eq!(
            person_of(&refused, IdKind::User, "bob"),
            None,
            "bob stays his own person"
        );
        let policy = IdentityPolicy {
            allow_identify_merge: Arc::new(BTreeSet::from(["t".to_owned()])),
            ..IdentityPolicy::default()
        };
        let merged = run_collection(2, 1, input, stitch(policy));
        assert_eq!(
            person_of(&merged, IdKind::User, "bob").as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn alias_merges_two_devices_and_unmerge_splits_them() {
        let phone = identify("t", 1, "phone", "carol");
        let laptop = alias("t", "laptop", "carol");
        let merged = run_collection(
            1,
            1,
            vec![(phone.clone(), 1), (laptop.clone(), 1)],
            stitch(IdentityPolicy::default()),
        );
        assert_eq!(
            person_of(&merged, IdKind::Anonymous, "laptop").as_deref(),
            Some("carol")
        );
        assert_eq!(
            person_of(&merged, IdKind::Anonymous, "phone").as_deref(),
            Some("carol")
        );
        let split = run_collection(
            1,
            1,
            vec![
                (phone, 1),
                (laptop, 1),
                (Input::Unlink(Unlink::new("t", "laptop", "carol")), 1),
            ],
            stitch(IdentityPolicy::default()),
        );
        assert_eq!(
            person_of(&split, IdKind::Anonymous, "laptop"),
            None,
            "laptop is on its own again"
        );
        assert_eq!(
            person_of(&split, IdKind::Anonymous, "phone").as_deref(),
            Some("carol")
        );
    }

    /// Issue 13, item 2: `previousId` is whatever id the user had before, a user id too.
    #[test]
    fn alias_from_a_known_user_id_merges_the_two_users() {
        let claims = vec![
            (identify("t", 1, "browser", "old-user"), 1),
            (known("t", "new-user"), 1),
            (alias("t", "old-user", "new-user"), 1),
        ];
        let merged = run_collection(2, 1, claims.clone(), stitch(IdentityPolicy::default()));
        assert_eq!(
            person_of(&merged, IdKind::User, "old-user").as_deref(),
            Some("new-user")
        );
        assert_eq!(
            person_of(&merged, IdKind::Anonymous, "browser").as_deref(),
            Some("new-user")
        );
        assert_eq!(
            person_of(&merged, IdKind::Anonymous, "old-user"),
            None,
            "no anonymous phantom of the old user id"
        );
        // The old user id known only after the alias (a late event): the link is corrected.
        let late_known = vec![
            (alias("t", "server-user", "new-user"), 1),
            (known("t", "server-user"), 1),
        ];
        let merged = run_collection(1, 1, late_known, stitch(IdentityPolicy::default()));
        assert_eq!(
            person_of(&merged, IdKind::User, "server-user").as_deref(),
            Some("new-user")
        );
        assert_eq!(person_of(&merged, IdKind::Anonymous, "server-user"), None);
        // And an unmerge by the two ids splits them again.
        let mut split = claims;
        split.push((Input::Unlink(Unlink::new("t", "old-user", "new-user")), 1));
        let split = run_collection(1, 1, split, stitch(IdentityPolicy::default()));
        assert_eq!(
            person_of(&split, IdKind::User, "old-user").as_deref(),
            Some("old-user")
        );
    }

    /// An id whose claims are all retracted (an erased person's) leaves the tenant's graph,
    /// and its index is reused.
    #[test]
    fn retracted_ids_are_forgotten() {
        let claim = |anonymous: &str, user: &str| {
            Change::Claim(IdentityClaim::Identify {
                tenant: "t".into(),
                time_ms: 1,
                message_id: "m".into(),
                anonymous_id: anonymous.into(),
                user_id: user.into(),
            })
        };
        let mut graph = TenantGraph::new(ArcStr::from("t"));
        let mut emitted = Vec::new();
        graph.apply(vec![(claim("a", "u"), 1)], false, |node, person, diff| {
            emitted.push((node.id.to_string(), person.id.to_string(), diff));
        });
        assert_eq!(graph.ids.len(), 2);
        graph.apply(vec![(claim("a", "u"), -1)], false, |node, person, diff| {
            emitted.push((node.id.to_string(), person.id.to_string(), diff));
        });
        assert_eq!(graph.ids.len(), 0, "held: {:?}", graph.ids);
        assert!(graph.names.iter().all(|name| name.is_empty()));
        emitted.sort();
        assert_eq!(
            emitted,
            [
                ("a".into(), "u".into(), -1),
                ("a".into(), "u".into(), 1),
                ("u".into(), "u".into(), -1),
                ("u".into(), "u".into(), 1)
            ]
        );
        graph.apply(vec![(claim("b", "v"), 1)], false, |_, _, _| {});
        assert_eq!(graph.names.len(), 2, "indexes reused");
        assert_eq!(graph.ids.len(), 2);
    }
}
