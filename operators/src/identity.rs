//! `stitch_identities`: which person each id belongs to.
//!
//! Identity claims become links between ids; a person is a connected component of linked ids,
//! computed by differential's label propagation. Because it is differential, a new link merges
//! components and a retracted link (an unmerge) splits them again, and downstream operators
//! receive exactly the corrections: retractions of the old person, insertions of the new.
//!
//! Policy: `alias` always links. `identify` links an anonymous id to a user id, but an anonymous
//! id belongs to the user of its *first* identify (by event time, then message id): a later
//! identify to a different user would merge two known users through a shared browser, which is
//! almost always a shared computer, not one person. Tenants may opt out of that refusal.
//!
//! The canonical person is the least node of the component, and user ids sort before
//! anonymous ids, so it is the smallest user id when the person has one: the same input gives
//! the same person ids on any number of workers.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use differential_dataflow::lattice::Lattice;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::model::{IdentityClaim, Link, Node, Person};

/// Which tenants allow `identify` to merge two known users.
#[derive(Debug, Clone, Default)]
pub struct IdentityPolicy {
    /// Tenants for which every identify links, not only the first of each anonymous id.
    pub allow_identify_merge: Arc<BTreeSet<String>>,
}

/// Computes persons from identity claims.
pub trait StitchIdentities<'s, T: Timestamp> {
    /// Maps every id that takes part in a link to its person. Ids in no link are their own
    /// person and do not appear. `unlinks` are links removed by an operator (unmerge).
    fn stitch_identities(
        self,
        unlinks: VecCollection<'s, T, Link, isize>,
        policy: IdentityPolicy,
    ) -> VecCollection<'s, T, (Node, Person), isize>;
}

impl<'s, T> StitchIdentities<'s, T> for VecCollection<'s, T, IdentityClaim, isize>
where
    T: Timestamp + Lattice + TotalOrder + Hash,
{
    fn stitch_identities(
        self,
        unlinks: VecCollection<'s, T, Link, isize>,
        policy: IdentityPolicy,
    ) -> VecCollection<'s, T, (Node, Person), isize> {
        let identifies = self
            .clone()
            .flat_map(|claim| match claim {
                IdentityClaim::Identify {
                    tenant,
                    time_ms,
                    message_id,
                    anonymous_id,
                    user_id,
                } => Some(((tenant, anonymous_id), (time_ms, message_id, user_id))),
                IdentityClaim::Alias { .. } => None,
            })
            .reduce_named(
                "FirstIdentify",
                move |(tenant, _anonymous_id), claims, accepted| {
                    let mut users: BTreeSet<&String> = BTreeSet::new();
                    if policy.allow_identify_merge.contains(tenant) {
                        users.extend(claims.iter().map(|((_, _, user), _)| user));
                    } else if let Some(((_, _, first), _)) = claims.first() {
                        // Claims arrive sorted by (time, message id): the first decides.
                        users.insert(first);
                    }
                    accepted.extend(users.into_iter().map(|user| (user.clone(), 1)));
                },
            )
            .map(|((tenant, anonymous_id), user_id)| {
                Link::between(&tenant, &anonymous_id, &user_id)
            });
        let aliases = self.flat_map(|claim| match claim {
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => Some(Link::between(&tenant, &previous_id, &user_id)),
            IdentityClaim::Identify { .. } => None,
        });
        let links = identifies
            .concat(aliases)
            .distinct()
            .map(|link| (link, ()))
            .antijoin(unlinks.distinct())
            .map(|(link, ())| link);
        let edges = links.flat_map(|Link { a, b }| [(a.clone(), b.clone()), (b, a)]);
        let nodes = edges
            .clone()
            .map(|(node, _)| node)
            .distinct()
            .map(|node| (node.clone(), node));
        propagate(edges, nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdKind;
    use crate::testing::{insert_then_retract, run_collection};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// Input of the tests: claims and unlinks, each inserted or retracted.
    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
    )]
    enum Input {
        Claim(IdentityClaim),
        Unlink(Link),
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
                Input::Unlink(link) => Some(link),
                Input::Claim(_) => None,
            });
            claims.stitch_identities(unlinks, policy.clone())
        }
    }

    /// The oracle: union-find over the final links, written for clarity.
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
        let mut first_identify: HashMap<(String, String), (i64, String, String)> = HashMap::new();
        let mut links: BTreeSet<Link> = BTreeSet::new();
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
                        links.insert(Link::between(tenant, anonymous_id, user_id));
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
                    links.insert(Link::between(tenant, previous_id, user_id));
                }
                Input::Unlink(_) => {}
            }
        }
        for ((tenant, anonymous_id), (_, _, user_id)) in first_identify {
            links.insert(Link::between(&tenant, &anonymous_id, &user_id));
        }
        for input in &present {
            if let Input::Unlink(unlinked) = input {
                links.remove(unlinked);
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
        for Link { a, b } in &links {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            // Keep the least node as root, so the root is the canonical person.
            let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent.insert(high, low);
        }
        let nodes: BTreeSet<Node> = links
            .iter()
            .flat_map(|l| [l.a.clone(), l.b.clone()])
            .collect();
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

    fn arb_input() -> impl Strategy<Value = Vec<(Input, isize)>> {
        let claim = prop_oneof![
            (0u8..2, 0i64..100, 0u8..8, 0u8..5).prop_map(|(t, time, a, u)| identify(
                &format!("t{t}"),
                time,
                &format!("a{a}"),
                &format!("u{u}")
            )),
            (0u8..2, 0u8..8, 0u8..5).prop_map(|(t, a, u)| alias(
                &format!("t{t}"),
                &format!("a{a}"),
                &format!("u{u}")
            )),
            (0u8..2, 0u8..8, 0u8..5).prop_map(|(t, a, u)| Input::Unlink(Link::between(
                &format!("t{t}"),
                &format!("a{a}"),
                &format!("u{u}")
            ))),
        ];
        proptest::collection::vec((claim, any::<bool>()), 0..40).prop_map(insert_then_retract)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_union_find(
            input in arb_input(),
            workers in prop_oneof![Just(1usize), Just(2), Just(4)],
            epoch_len in 1usize..10,
            allow_t1 in any::<bool>(),
        ) {
            let policy = IdentityPolicy {
                allow_identify_merge: Arc::new(if allow_t1 { BTreeSet::from(["t1".to_owned()]) } else { BTreeSet::new() }),
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
            .find(|(node, _)| node.kind == kind && node.id == id)
            .map(|(_, person)| person.id.clone())
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
                (Input::Unlink(Link::between("t", "laptop", "carol")), 1),
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
}
