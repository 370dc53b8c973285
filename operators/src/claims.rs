//! `earliest_claims`: of all the identity claims the events make, only those that can still
//! decide anything.
//!
//! Every event that carries both an anonymous id and a user id claims that they belong
//! together, so a logged-in visitor makes a claim with every click. Only the earliest claim on
//! each (anonymous id, user id) pair can decide whom an anonymous id belongs to (the first
//! claim wins), and one alias or one known-user claim per pair says all there is to say. This
//! operator keeps, per claim subject, the earliest claim seen, and emits a correction when an
//! earlier one arrives: identity state and the stored claims grow with the number of distinct
//! pairs (the size of the identity map), not with the number of events.
//!
//! "Earliest" is by (event time, message id, log position) for identify claims and by log
//! position for the others, so within a run the surviving claim is the same on any worker
//! count and any arrival order. State starts empty at every start (the stored claims go to
//! `stitch_identities` directly), so a restart may store a later claim of a subject again;
//! that changes no person, because the earliest one is stored too. The state is kept for good,
//! like the identity map it is part of: one entry per linked pair and per known user id, each
//! held once and compactly (see `Held`: UUIDs in place, the table keyed by the held fields).
//!
//! Erasures apply here too, since what this operator holds is exactly what it emitted: a claim
//! naming an id that was ever erased is neither kept nor emitted, and an erasure retracts the
//! held claims it covers ([`ErasureLog::ever_erased`]: a claim has no receipt time).

use std::hash::BuildHasher;

use arcstr::ArcStr;
use differential_dataflow::{AsCollection, VecCollection};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashSet};
use schemas::erasure::ErasureLog;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::erasure::{ControlRecord, Erasures, Retractable, withdraws};
use crate::gauges::StateGauge;
use crate::model::{IdentityClaim, MessageId, Position};
use crate::stash::{Stash, route};

/// A claim as [`Earliest`] holds it, for good: ids that are canonical UUIDs (what Segment's
/// and RudderStack's libraries assign as anonymous and message ids) in place as
/// [`MessageId`]s, other text shared, the tenant shared by all of its claims. An identify
/// claim between two UUIDs is 88 bytes in the table with its position and allocates nothing,
/// where the claim's four `String`s took 120 and four allocations more (about 150 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Held {
    Identify {
        tenant: ArcStr,
        time_ms: i64,
        message_id: MessageId,
        anonymous_id: MessageId,
        user_id: MessageId,
    },
    Alias {
        tenant: ArcStr,
        previous_id: MessageId,
        user_id: MessageId,
    },
    KnownUser {
        tenant: ArcStr,
        user_id: MessageId,
    },
}

impl Held {
    /// `claim` held, its tenant taken from (or added to) `tenants`.
    fn of(claim: &IdentityClaim, tenants: &mut FxHashSet<ArcStr>) -> Held {
        let mut tenant = |tenant: &str| match tenants.get(tenant) {
            Some(shared) => shared.clone(),
            None => {
                let shared = ArcStr::from(tenant);
                tenants.insert(shared.clone());
                shared
            }
        };
        match claim {
            IdentityClaim::Identify {
                tenant: of,
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            } => Held::Identify {
                tenant: tenant(of),
                time_ms: *time_ms,
                message_id: MessageId::new(message_id),
                anonymous_id: MessageId::new(anonymous_id),
                user_id: MessageId::new(user_id),
            },
            IdentityClaim::Alias {
                tenant: of,
                previous_id,
                user_id,
            } => Held::Alias {
                tenant: tenant(of),
                previous_id: MessageId::new(previous_id),
                user_id: MessageId::new(user_id),
            },
            IdentityClaim::KnownUser {
                tenant: of,
                user_id,
            } => Held::KnownUser {
                tenant: tenant(of),
                user_id: MessageId::new(user_id),
            },
        }
    }

    /// The claim as it was emitted.
    fn claim(&self) -> IdentityClaim {
        match self {
            Held::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            } => IdentityClaim::Identify {
                tenant: tenant.to_string(),
                time_ms: *time_ms,
                message_id: message_id.to_string(),
                anonymous_id: anonymous_id.to_string(),
                user_id: user_id.to_string(),
            },
            Held::Alias {
                tenant,
                previous_id,
                user_id,
            } => IdentityClaim::Alias {
                tenant: tenant.to_string(),
                previous_id: previous_id.to_string(),
                user_id: user_id.to_string(),
            },
            Held::KnownUser { tenant, user_id } => IdentityClaim::KnownUser {
                tenant: tenant.to_string(),
                user_id: user_id.to_string(),
            },
        }
    }

    /// Whether `log` ever erased an id the claim names, as [`IdentityClaim::ids`] gives them
    /// (without making the claim's strings).
    fn erased(&self, log: &ErasureLog) -> bool {
        let (_, tenant, from, user) = self.subject();
        let (from, user) = (from.map(MessageId::text), user.text());
        let ids = match &from {
            Some(from) => [&**from, &*user],
            None => [&*user, ""],
        };
        log.ever_erased(tenant, ids)
    }

    /// What the claim is about: (kind, tenant, from id, user id), the from id `None` for a
    /// known-user claim.
    fn subject(&self) -> (u8, &str, Option<&MessageId>, &MessageId) {
        match self {
            Held::Identify {
                tenant,
                anonymous_id,
                user_id,
                ..
            } => (0, tenant, Some(anonymous_id), user_id),
            Held::Alias {
                tenant,
                previous_id,
                user_id,
            } => (1, tenant, Some(previous_id), user_id),
            Held::KnownUser { tenant, user_id } => (2, tenant, None, user_id),
        }
    }

    /// The hash of the subject in [`Earliest`]'s table, from its text (see [`subject_hash`]).
    fn subject_hash(&self) -> u64 {
        let (kind, tenant, from, user) = self.subject();
        let from = from.map(MessageId::text);
        subject_hash(
            kind,
            tenant,
            from.as_deref().unwrap_or_default(),
            &user.text(),
        )
    }

    /// Whether `claim` has this claim's subject. A [`MessageId`]'s text is exactly the text it
    /// was made from, so comparing text compares ids.
    fn is_about(&self, claim: &IdentityClaim) -> bool {
        let (kind, tenant, from, user) = self.subject();
        let (claim_kind, claim_tenant, claim_from, claim_user) = claim_subject(claim);
        kind == claim_kind
            && tenant == claim_tenant
            && *user.text() == *claim_user
            && from.map_or(claim_from.is_empty(), |from| *from.text() == *claim_from)
    }
}

/// A stored claim as [`crate::EraseRecords`] holds it, for good, to retract it if an erasure
/// covers it: the claims of every earlier run come back at each start, so they are held as
/// compactly as [`Earliest`] holds its own (a claim's four `String`s took about 250 bytes).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HeldClaim(Held);

impl Retractable for IdentityClaim {
    type Held = HeldClaim;
    /// The tenants the claims name, shared by them.
    type Shared = FxHashSet<ArcStr>;

    fn hold(&self, tenants: &mut FxHashSet<ArcStr>) -> HeldClaim {
        HeldClaim(Held::of(self, tenants))
    }

    fn release(held: &HeldClaim) -> IdentityClaim {
        held.0.claim()
    }

    fn erased(held: &HeldClaim, log: &ErasureLog) -> bool {
        held.0.erased(log)
    }
}

/// What a claim is about, as text: (kind, tenant, from id, user id), the from id empty for a
/// known-user claim. Claims with the same subject are redundant but for the earliest.
fn claim_subject(claim: &IdentityClaim) -> (u8, &str, &str, &str) {
    match claim {
        IdentityClaim::Identify {
            tenant,
            anonymous_id,
            user_id,
            ..
        } => (0, tenant, anonymous_id, user_id),
        IdentityClaim::Alias {
            tenant,
            previous_id,
            user_id,
        } => (1, tenant, previous_id, user_id),
        IdentityClaim::KnownUser { tenant, user_id } => (2, tenant, "", user_id),
    }
}

/// The hash of a subject in [`Earliest`]'s table, the same from a claim's text as from the
/// claim held.
fn subject_hash(kind: u8, tenant: &str, from: &str, user: &str) -> u64 {
    FxBuildHasher.hash_one((kind, tenant, from, user))
}

/// Whether `claim` at `position` precedes the held claim `other` (of the same subject):
/// identify claims by (event time, message id, position), the others by position.
fn precedes(claim: &IdentityClaim, position: Position, other: &(Held, Position)) -> bool {
    let key = match claim {
        IdentityClaim::Identify {
            time_ms,
            message_id,
            ..
        } => (*time_ms, message_id.as_str()),
        _ => (0, ""),
    };
    let (held, held_position) = other;
    let held_text = match held {
        Held::Identify {
            time_ms,
            message_id,
            ..
        } => (*time_ms, Some(message_id.text())),
        _ => (0, None),
    };
    let held_key = (held_text.0, held_text.1.as_deref().unwrap_or_default());
    (key, position) < (held_key, *held_position)
}

/// The earliest claim of each subject on one worker, kept for good: the claims of subjects
/// new since the last settle in a hash table, the others settled in a vector sorted by their
/// subject's hash, as [`crate::settling`] holds a map (a hash table held each claim at up to
/// 2.3 times its 88 bytes; settled, it takes 96 with its hash).
#[derive(Debug, Default)]
struct Earliest {
    recent: HashTable<(Held, Position)>,
    /// Sorted by the subject's hash.
    settled: Vec<(u64, (Held, Position))>,
    /// Every tenant the claims name, shared by them.
    tenants: FxHashSet<ArcStr>,
}

impl Earliest {
    /// Subjects held.
    fn len(&self) -> usize {
        self.recent.len() + self.settled.len()
    }

    /// Keeps `claim` if it is the first or the earliest of its subject; emits the changes.
    /// A claim naming an id `log` ever erased is refused. Only a claim of a new subject is
    /// checked (an erasure check hashes each id): a held claim of the subject names the
    /// same ids, and [`Earliest::withdraw`] would have removed it.
    fn offer(
        &mut self,
        claim: IdentityClaim,
        position: Position,
        log: &ErasureLog,
        mut emit: impl FnMut((IdentityClaim, Position), isize),
    ) {
        let (kind, tenant, from, user) = claim_subject(&claim);
        let hash = subject_hash(kind, tenant, from, user);
        let first = self.settled.partition_point(|(settled, _)| *settled < hash);
        if let Some((_, held)) = self.settled[first..]
            .iter_mut()
            .take_while(|(settled, _)| *settled == hash)
            .find(|(_, (held, _))| held.is_about(&claim))
        {
            supersede(held, claim, position, &mut self.tenants, emit);
            return;
        }
        let entry = self.recent.entry(
            hash,
            |(held, _)| held.is_about(&claim),
            |(held, _)| held.subject_hash(),
        );
        match entry {
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let (tenant, ids) = claim.ids();
                if log.ever_erased(tenant, ids) {
                    return;
                }
                vacant.insert((Held::of(&claim, &mut self.tenants), position));
                emit((claim, position), 1);
            }
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                supersede(occupied.get_mut(), claim, position, &mut self.tenants, emit);
            }
        }
    }

    /// Retracts and forgets the claims naming an id `log` ever erased.
    fn withdraw(
        &mut self,
        log: &ErasureLog,
        mut emit: impl FnMut((IdentityClaim, Position), isize),
    ) {
        let mut kept = |(held, position): &(Held, Position)| {
            if !held.erased(log) {
                return true;
            }
            emit((held.claim(), *position), -1);
            false
        };
        self.recent.retain(|pair| kept(pair));
        self.settled.retain(|(_, pair)| kept(pair));
    }

    /// Settles the recent claims once they are an eighth of the settled ones (see
    /// [`crate::settling`]).
    fn settle_when_due(&mut self) {
        if self.recent.is_empty() || self.recent.len() * 8 < self.settled.len() {
            return;
        }
        let recent = std::mem::take(&mut self.recent);
        self.settled.reserve_exact(recent.len());
        self.settled
            .extend(recent.into_iter().map(|pair| (pair.0.subject_hash(), pair)));
        // Stable: the settled part is one run, merged with the sorted recent ones.
        self.settled.sort_by_key(|(hash, _)| *hash);
        self.settled.shrink_to_fit();
    }
}

/// Replaces `held`, the held claim of `claim`'s subject, with `claim` if `claim` precedes it;
/// emits the changes.
fn supersede(
    held: &mut (Held, Position),
    claim: IdentityClaim,
    position: Position,
    tenants: &mut FxHashSet<ArcStr>,
    mut emit: impl FnMut((IdentityClaim, Position), isize),
) {
    if precedes(&claim, position, held) {
        let replacement = Held::of(&claim, tenants);
        let (superseded, at) = std::mem::replace(held, (replacement, position));
        emit((claim, position), 1);
        emit((superseded.claim(), at), -1);
    }
}

/// What the operator buffers until its time is complete.
enum Input {
    Claim(IdentityClaim, Position),
    Control(ControlRecord),
}

/// Reduces identity claims to the earliest of each subject.
pub trait EarliestClaims<'s, T: Timestamp> {
    /// The earliest claim of each subject; a claim that is superseded by an earlier one is
    /// retracted, and so is a claim an erasure in `erasures` covers (the control records on
    /// every worker). `gauge` counts the subjects held on the worker.
    fn earliest_claims(
        self,
        erasures: Erasures<'s, T>,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (IdentityClaim, Position), isize>;
}

impl<'s, T: Timestamp + TotalOrder> EarliestClaims<'s, T>
    for StreamVec<'s, T, (IdentityClaim, Position)>
{
    fn earliest_claims(
        self,
        erasures: Erasures<'s, T>,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (IdentityClaim, Position), isize> {
        // By the subject, so that every claim on a subject meets the same worker.
        let by_subject =
            Exchange::new(|(claim, _): &(IdentityClaim, Position)| route(&claim_subject(claim)));
        let Erasures { control, mut log } = erasures;
        self.binary_frontier(
            control,
            by_subject,
            Pipeline,
            "EarliestClaims",
            |_capability, _info| {
                let mut stash: Stash<T, Input> = Stash::default();
                let mut earliest = Earliest::default();
                move |(claims, claims_frontier), (control, control_frontier), output| {
                    claims.for_each(|capability, data| {
                        let Some(time) = capability.least().cloned() else {
                            return;
                        };
                        for (claim, position) in data.drain(..) {
                            stash.push(&capability, time.clone(), Input::Claim(claim, position));
                        }
                    });
                    control.for_each(|capability, messages| {
                        let Some(time) = capability.least().cloned() else {
                            return;
                        };
                        for message in messages.drain(..) {
                            stash.push(&capability, time.clone(), Input::Control(message));
                        }
                    });
                    for (capability, chunks) in stash.complete(&[claims_frontier, control_frontier])
                    {
                        let time = capability.time().clone();
                        let mut session = output.session(&capability);
                        let mut emit = |claim, diff| session.give((claim, time.clone(), diff));
                        // Erasures first: a claim of the same time naming an erased id is
                        // then refused below, as a later one would be.
                        let mut offered = Vec::new();
                        let mut erased = false;
                        for input in chunks.into_iter().flatten() {
                            match input {
                                Input::Control(ControlRecord(message)) => {
                                    log.apply(&message);
                                    erased |= withdraws(&message);
                                }
                                Input::Claim(claim, position) => offered.push((claim, position)),
                            }
                        }
                        if erased {
                            earliest.withdraw(&log, &mut emit);
                        }
                        for (claim, position) in offered {
                            earliest.offer(claim, position, &log, &mut emit);
                        }
                        earliest.settle_when_due();
                    }
                    gauge.set(earliest.len());
                }
            },
        )
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{run_collection, run_collection_timed};
    use proptest::prelude::*;
    use schemas::ControlMessage;
    use std::collections::BTreeMap;
    use timely::dataflow::operators::vec::Map;

    /// (kind, tenant, from id, user id)
    type Group = (u8, String, String, String);
    /// (time, message id, position, claim): the least is kept.
    type Candidate = (i64, String, Position, IdentityClaim);

    /// The oracle: group by what the claim is about, keep the least by the claim's own order
    /// (identify: time, then message id; then position), written without the operator's
    /// helpers.
    fn oracle(
        input: &[((IdentityClaim, Position), isize)],
    ) -> BTreeMap<(IdentityClaim, Position), isize> {
        let mut best: BTreeMap<Group, Candidate> = BTreeMap::new();
        for ((claim, position), _) in input {
            let (group, time, message) = match claim {
                IdentityClaim::Identify {
                    tenant,
                    time_ms,
                    message_id,
                    anonymous_id,
                    user_id,
                } => (
                    (0, tenant.clone(), anonymous_id.clone(), user_id.clone()),
                    *time_ms,
                    message_id.clone(),
                ),
                IdentityClaim::Alias {
                    tenant,
                    previous_id,
                    user_id,
                } => (
                    (1, tenant.clone(), previous_id.clone(), user_id.clone()),
                    0,
                    String::new(),
                ),
                IdentityClaim::KnownUser { tenant, user_id } => (
                    (2, tenant.clone(), String::new(), user_id.clone()),
                    0,
                    String::new(),
                ),
            };
            let candidate = (time, message, *position, claim.clone());
            let slot = best.entry(group).or_insert_with(|| candidate.clone());
            if candidate < *slot {
                *slot = candidate;
            }
        }
        best.into_values()
            .map(|(_, _, position, claim)| ((claim, position), 1))
            .collect()
    }

    /// An id or message id: plain text, canonical UUIDs (held in place, in an order their
    /// text shares), an uppercase UUID and one with a zero low half (both held as text), so
    /// held claims meet every form of id.
    fn any_text(prefix: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..3).prop_map(move |n| format!("{prefix}{n}")),
            proptest::sample::select(vec![
                "0f8fad5b-d9cb-469f-a165-70867728950e",
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
                "16fd2706-8baf-433b-82eb-000000000000",
                "16fd2706-8baf-433b-0000-000000000000",
            ])
            .prop_map(str::to_owned),
        ]
    }

    #[test]
    fn a_held_claim_is_the_claim_it_was_made_from_and_is_found_by_it() {
        let texts = [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "16fd2706-8baf-433b-0000-000000000000",
            "user@example.com",
            "",
        ];
        let mut tenants = FxHashSet::default();
        let mut held_all = Vec::new();
        for a in texts {
            for b in texts {
                for claim in [
                    IdentityClaim::Identify {
                        tenant: "t".into(),
                        time_ms: -5,
                        message_id: b.into(),
                        anonymous_id: a.into(),
                        user_id: b.into(),
                    },
                    IdentityClaim::Alias {
                        tenant: "t".into(),
                        previous_id: a.into(),
                        user_id: b.into(),
                    },
                    IdentityClaim::KnownUser {
                        tenant: "t".into(),
                        user_id: a.into(),
                    },
                ] {
                    let held = Held::of(&claim, &mut tenants);
                    assert_eq!(held.claim(), claim);
                    let (kind, tenant, from, user) = claim_subject(&claim);
                    assert_eq!(held.subject_hash(), subject_hash(kind, tenant, from, user));
                    held_all.push((held, claim));
                }
            }
        }
        for (held, claim) in &held_all {
            for (_, other) in &held_all {
                assert_eq!(
                    held.is_about(other),
                    claim_subject(claim) == claim_subject(other),
                    "{claim:?} / {other:?}"
                );
            }
        }
        assert_eq!(tenants.len(), 1, "one shared tenant");
        assert!(std::mem::size_of::<(Held, Position)>() <= 88);
    }

    fn arb_claims() -> impl Strategy<Value = Vec<((IdentityClaim, Position), isize)>> {
        let claim = prop_oneof![
            (
                0u8..2,
                0i64..20,
                any_text("m"),
                any_text("a"),
                any_text("u")
            )
                .prop_map(|(t, time, message_id, anonymous_id, user_id)| {
                    IdentityClaim::Identify {
                        tenant: format!("t{t}"),
                        time_ms: time,
                        message_id,
                        anonymous_id,
                        user_id,
                    }
                }),
            (0u8..2, any_text("a"), any_text("u")).prop_map(|(t, previous_id, user_id)| {
                IdentityClaim::Alias {
                    tenant: format!("t{t}"),
                    previous_id,
                    user_id,
                }
            }),
            (0u8..2, any_text("u")).prop_map(|(t, user_id)| IdentityClaim::KnownUser {
                tenant: format!("t{t}"),
                user_id,
            }),
        ];
        proptest::collection::vec((claim, 0i32..3, 0i64..50), 0..60).prop_map(|claims| {
            claims
                .into_iter()
                .map(|(claim, partition, offset)| ((claim, (partition, offset)), 1))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn keeps_the_earliest_claim_of_each_subject(
            input in arb_claims(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..12,
        ) {
            let expected = oracle(&input);
            let actual = run_collection(workers, epoch_len, input, |claims| {
                let erasures = Erasures {
                control: timely::dataflow::operators::generic::operator::empty(claims.scope()),
                log: ErasureLog::default(),
            };
                claims.inner.map(|(claim, _, _)| claim).earliest_claims(erasures, StateGauge::default())
            });
            prop_assert_eq!(actual, expected);
        }
    }

    #[test]
    fn an_earlier_claim_arriving_later_supersedes_the_first() {
        let identify = |time_ms: i64, message: &str| IdentityClaim::Identify {
            tenant: "t".into(),
            time_ms,
            message_id: message.into(),
            anonymous_id: "a".into(),
            user_id: "u".into(),
        };
        let input = vec![
            ((identify(50, "click"), (0, 1)), 1),
            ((identify(60, "click-2"), (0, 2)), 1),
            ((identify(10, "offline-login"), (0, 3)), 1),
        ];
        let actual = run_collection(1, 1, input, |claims| {
            let erasures = Erasures {
                control: timely::dataflow::operators::generic::operator::empty(claims.scope()),
                log: ErasureLog::default(),
            };
            claims
                .inner
                .map(|(claim, _, _)| claim)
                .earliest_claims(erasures, StateGauge::default())
        });
        assert_eq!(
            actual,
            BTreeMap::from([((identify(10, "offline-login"), (0, 3)), 1)])
        );
    }

    /// The control record of an erasure of `id` of `tenant`, hashed with `salt`.
    fn erasure(salt: &str, tenant: &str, id: &str) -> ControlRecord {
        ControlRecord(ControlMessage::Erase {
            request_id: "r".into(),
            id_hashes: vec![schemas::erasure::id_hash(salt, tenant, id)],
            tenant: tenant.into(),
            requested_at_ms: 10,
            salt_check: schemas::erasure::salt_check(salt),
        })
    }

    /// An erasure retracts the held claims naming an erased id, and a claim naming it that
    /// arrives later is refused (here directly: in the pipeline, `erase` drops its event
    /// first).
    #[test]
    fn an_erasure_retracts_held_claims_and_refuses_later_ones() {
        use timely::dataflow::operators::vec::Broadcast;
        const SALT: &str = "claims test salt";
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        enum In {
            Claim(IdentityClaim, Position),
            Erase(String),
        }
        let identify = |anonymous: &str, user: &str, time_ms: i64| IdentityClaim::Identify {
            tenant: "t".into(),
            time_ms,
            message_id: format!("m{time_ms}"),
            anonymous_id: anonymous.into(),
            user_id: user.into(),
        };
        let known = IdentityClaim::KnownUser {
            tenant: "t".into(),
            user_id: "u3".into(),
        };
        let timed = vec![
            (In::Claim(identify("a1", "u1", 1), (0, 1)), 0, 1),
            (In::Claim(identify("a2", "u2", 2), (1, 1)), 0, 1),
            (In::Erase("a1".into()), 1, 1),
            (In::Claim(identify("a1", "u4", 3), (0, 2)), 2, 1),
            (In::Claim(known.clone(), (1, 2)), 2, 1),
        ];
        for workers in [1, 2] {
            let actual = run_collection_timed(workers, timed.clone(), |input| {
                let control = input
                    .inner
                    .clone()
                    .flat_map(|(input, _, _)| match input {
                        In::Erase(id) => Some(erasure(SALT, "t", &id)),
                        In::Claim(..) => None,
                    })
                    .broadcast();
                input
                    .inner
                    .flat_map(|(input, _, _)| match input {
                        In::Claim(claim, position) => Some((claim, position)),
                        In::Erase(_) => None,
                    })
                    .earliest_claims(
                        Erasures {
                            control,
                            log: ErasureLog::new(SALT),
                        },
                        StateGauge::default(),
                    )
            });
            assert_eq!(
                actual,
                BTreeMap::from([
                    ((identify("a2", "u2", 2), (1, 1)), 1),
                    ((known.clone(), (1, 2)), 1)
                ]),
                "{workers} workers"
            );
        }
    }

    /// Stored claims (of earlier runs) are let through until an erasure names one of their
    /// ids, then retracted, and refused after; held compactly, each form of id included.
    mod stored {
        use super::*;
        use crate::EraseRecords;
        use timely::dataflow::operators::vec::Broadcast;

        const SALT: &str = "stored claims test salt";

        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        enum In {
            Claim(IdentityClaim),
            Erase(String, String),
        }

        /// The oracle: a claim stays iff no erasure of its tenant ever names an id of it.
        fn oracle(
            claims: &[IdentityClaim],
            erased: &[(String, String)],
        ) -> BTreeMap<IdentityClaim, isize> {
            let mut kept = BTreeMap::new();
            for claim in claims {
                let (tenant, ids): (&String, Vec<&String>) = match claim {
                    IdentityClaim::Identify {
                        tenant,
                        anonymous_id,
                        user_id,
                        ..
                    } => (tenant, vec![anonymous_id, user_id]),
                    IdentityClaim::Alias {
                        tenant,
                        previous_id,
                        user_id,
                    } => (tenant, vec![previous_id, user_id]),
                    IdentityClaim::KnownUser { tenant, user_id } => (tenant, vec![user_id]),
                };
                if !erased
                    .iter()
                    .any(|(t, id)| t == tenant && ids.contains(&id))
                {
                    *kept.entry(claim.clone()).or_default() += 1;
                }
            }
            kept
        }

        fn arb_erasures() -> impl Strategy<Value = Vec<((String, String), u64)>> {
            let id = prop_oneof![any_text("a"), any_text("u")];
            proptest::collection::vec(((0u8..2).prop_map(|t| format!("t{t}")), id, 0u64..6), 0..4)
                .prop_map(|erasures| {
                    erasures
                        .into_iter()
                        .map(|(t, id, time)| ((t, id), time))
                        .collect()
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn are_retracted_when_an_erasure_names_an_id_of_theirs(
                claims in arb_claims(),
                times in proptest::collection::vec(0u64..6, 60),
                erasures in arb_erasures(),
                workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            ) {
                let claims: Vec<IdentityClaim> = claims.into_iter().map(|((claim, _), _)| claim).collect();
                let erased: Vec<(String, String)> = erasures.iter().map(|(erased, _)| erased.clone()).collect();
                let expected = oracle(&claims, &erased);
                let mut timed: Vec<(In, u64, isize)> = claims
                    .into_iter()
                    .zip(times)
                    .map(|(claim, time)| (In::Claim(claim), time, 1))
                    .chain(erasures.into_iter().map(|((t, id), time)| (In::Erase(t, id), time, 1)))
                    .collect();
                timed.sort_by_key(|(_, time, _)| *time);
                let actual = run_collection_timed(workers, timed, |input| {
                    let control = input
                        .inner
                        .clone()
                        .flat_map(|(input, _, _)| match input {
                            In::Erase(tenant, id) => Some(erasure(SALT, &tenant, &id)),
                            In::Claim(..) => None,
                        })
                        .broadcast();
                    input
                        .inner
                        .flat_map(|(input, time, diff)| match input {
                            In::Claim(claim) => Some((claim, time, diff)),
                            In::Erase(..) => None,
                        })
                        .as_collection()
                        .erase_records(control, ErasureLog::new(SALT), StateGauge::default())
                });
                prop_assert_eq!(actual, expected);
            }
        }
    }
}
