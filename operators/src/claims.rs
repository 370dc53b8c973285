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
//! like the identity map it is part of: one entry per linked pair and per known user id.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::gauges::StateGauge;
use crate::model::{IdentityClaim, Position};
use crate::stash::{Stash, route};

/// What a claim is about: claims with the same subject are redundant but for the earliest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Identify(String, String, String),
    Alias(String, String, String),
    KnownUser(String, String),
}

fn subject(claim: &IdentityClaim) -> Subject {
    match claim {
        IdentityClaim::Identify {
            tenant,
            anonymous_id,
            user_id,
            ..
        } => Subject::Identify(tenant.clone(), anonymous_id.clone(), user_id.clone()),
        IdentityClaim::Alias {
            tenant,
            previous_id,
            user_id,
        } => Subject::Alias(tenant.clone(), previous_id.clone(), user_id.clone()),
        IdentityClaim::KnownUser { tenant, user_id } => {
            Subject::KnownUser(tenant.clone(), user_id.clone())
        }
    }
}

/// Whether `claim` at `position` precedes `other` at `other_position` (same subject).
fn precedes(claim: &IdentityClaim, position: Position, other: &(IdentityClaim, Position)) -> bool {
    let key = |claim: &IdentityClaim| match claim {
        IdentityClaim::Identify {
            time_ms,
            message_id,
            ..
        } => (*time_ms, message_id.clone()),
        _ => (0, String::new()),
    };
    (key(claim), position) < (key(&other.0), other.1)
}

/// Reduces identity claims to the earliest of each subject.
pub trait EarliestClaims<'s, T: Timestamp> {
    /// The earliest claim of each subject; a claim that is superseded by an earlier one is
    /// retracted. `gauge` counts the subjects held on the worker.
    fn earliest_claims(
        self,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (IdentityClaim, Position), isize>;
}

impl<'s, T: Timestamp + TotalOrder> EarliestClaims<'s, T>
    for StreamVec<'s, T, (IdentityClaim, Position)>
{
    fn earliest_claims(
        self,
        gauge: StateGauge,
    ) -> VecCollection<'s, T, (IdentityClaim, Position), isize> {
        // By the subject's parts, so that every claim on a subject meets the same worker
        // (hashed by reference: building the subject would copy three strings per claim).
        let by_subject = Exchange::new(|(claim, _): &(IdentityClaim, Position)| match claim {
            IdentityClaim::Identify {
                tenant,
                anonymous_id,
                user_id,
                ..
            } => route(&(0u8, tenant, anonymous_id, user_id)),
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => route(&(1u8, tenant, previous_id, user_id)),
            IdentityClaim::KnownUser { tenant, user_id } => route(&(2u8, tenant, user_id)),
        });
        self.unary_frontier(by_subject, "EarliestClaims", |_capability, _info| {
            let mut stash: Stash<T, (IdentityClaim, Position)> = Stash::default();
            let mut earliest: HashMap<Subject, (IdentityClaim, Position)> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|capability, data| stash.push_all(&capability, data));
                for (capability, claims) in stash.complete(&[frontier]) {
                    let time = capability.time().clone();
                    let mut session = output.session(&capability);
                    for (claim, position) in claims.into_iter().flatten() {
                        match earliest.entry(subject(&claim)) {
                            Entry::Vacant(entry) => {
                                session.give(((claim.clone(), position), time.clone(), 1));
                                entry.insert((claim, position));
                            }
                            Entry::Occupied(mut entry) => {
                                if precedes(&claim, position, entry.get()) {
                                    session.give(((claim.clone(), position), time.clone(), 1));
                                    let superseded = entry.insert((claim, position));
                                    session.give((superseded, time.clone(), -1));
                                }
                            }
                        }
                    }
                }
                gauge.set(earliest.len());
            }
        })
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_collection;
    use proptest::prelude::*;
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

    fn arb_claims() -> impl Strategy<Value = Vec<((IdentityClaim, Position), isize)>> {
        let claim = prop_oneof![
            (0u8..2, 0i64..20, 0u8..3, 0u8..3, 0u8..3).prop_map(|(t, time, m, a, u)| {
                IdentityClaim::Identify {
                    tenant: format!("t{t}"),
                    time_ms: time,
                    message_id: format!("m{m}"),
                    anonymous_id: format!("a{a}"),
                    user_id: format!("u{u}"),
                }
            }),
            (0u8..2, 0u8..3, 0u8..3).prop_map(|(t, p, u)| IdentityClaim::Alias {
                tenant: format!("t{t}"),
                previous_id: format!("a{p}"),
                user_id: format!("u{u}"),
            }),
            (0u8..2, 0u8..3).prop_map(|(t, u)| IdentityClaim::KnownUser {
                tenant: format!("t{t}"),
                user_id: format!("u{u}"),
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
                claims.inner.map(|(claim, _, _)| claim).earliest_claims(StateGauge::default())
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
            claims
                .inner
                .map(|(claim, _, _)| claim)
                .earliest_claims(StateGauge::default())
        });
        assert_eq!(
            actual,
            BTreeMap::from([((identify(10, "offline-login"), (0, 3)), 1)])
        );
    }
}
