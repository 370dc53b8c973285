//! `stitch_identities`: which person each id belongs to.
//!
//! Identity claims become links between ids; a person is a connected component of linked ids,
//! computed by differential's label propagation. Because it is differential, a new link merges
//! components and a retracted link (an unmerge) splits them again, and downstream operators
//! receive exactly the corrections: retractions of the old person, insertions of the new.
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

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use differential_dataflow::lattice::Lattice;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::model::{IdKind, IdentityClaim, Link, Node, Person, Unlink};
use crate::placeholders::PlaceholderIds;

/// Who may be linked to whom.
#[derive(Debug, Clone, Default)]
pub struct IdentityPolicy {
    /// Tenants for which every identify links, not only the first of each anonymous id.
    pub allow_identify_merge: Arc<BTreeSet<String>>,
    /// Ids that never link anything (removed from events before identity sees them).
    pub placeholders: PlaceholderIds,
}

/// `(tenant, from id, user id)`: a link before the kind of its first id is known.
type Pair = (String, String, String);

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

impl<'s, T> StitchIdentities<'s, T> for VecCollection<'s, T, IdentityClaim, isize>
where
    T: Timestamp + Lattice + TotalOrder + Hash,
{
    fn stitch_identities(
        self,
        unlinks: VecCollection<'s, T, Unlink, isize>,
        policy: IdentityPolicy,
    ) -> VecCollection<'s, T, (Node, Person), isize> {
        let known_users = self
            .clone()
            .map(|claim| (claim.tenant().to_owned(), claim.user_id().to_owned()))
            .distinct();
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
                _ => None,
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
                ((tenant, anonymous_id, user_id), IdKind::Anonymous)
            });
        let aliases = self.flat_map(|claim| match claim {
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => Some(((tenant, previous_id), user_id)),
            _ => None,
        });
        let to_users = aliases
            .clone()
            .semijoin(known_users.clone())
            .map(|((tenant, previous_id), user_id)| ((tenant, previous_id, user_id), IdKind::User));
        let to_anonymous = aliases
            .antijoin(known_users)
            .map(|((tenant, previous_id), user_id)| {
                ((tenant, previous_id, user_id), IdKind::Anonymous)
            });
        let unlinked = unlinks
            .map(
                |Unlink {
                     tenant,
                     from_id,
                     user_id,
                 }| (tenant, from_id, user_id),
            )
            .distinct();
        let links = identifies
            .concat(to_users)
            .concat(to_anonymous)
            .antijoin(unlinked)
            .map(|((tenant, from_id, user_id), kind): (Pair, IdKind)| {
                Link::to_user(&tenant, kind, &from_id, &user_id)
            })
            .distinct();
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

    fn node(tenant: &str, kind: IdKind, id: &str) -> Node {
        Node {
            tenant: tenant.into(),
            kind,
            id: id.into(),
        }
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
            .find(|(node, _)| node.kind == kind && &*node.id == id)
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
}
