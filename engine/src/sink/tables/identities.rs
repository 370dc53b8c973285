//! `identities` (the person of every linked id) and `identity_claims` (the earliest claim of
//! each subject, reloaded at the next start).

use clickhouse::Row;
use operators::{IdKind, IdentityClaim, Node, Person, Position, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::sink::epoch::Write;
use crate::sink::epoch::upserts;

/// One row of `identities`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct IdentityRow {
    pub tenant: String,
    pub id_kind: String,
    pub id: String,
    pub person_id: String,
    pub deleted: u8,
    pub version: u64,
}

impl IdentityRow {
    /// The row mapping `node` to `person` (a tombstone when `deleted`) at `version`.
    pub fn new(node: &Node, person: &Node, deleted: bool, version: u64) -> Self {
        IdentityRow {
            tenant: node.tenant.to_string(),
            id_kind: id_kind(node.kind).to_owned(),
            id: node.id.to_string(),
            person_id: person.id.to_string(),
            deleted: u8::from(deleted),
            version,
        }
    }
}

fn id_kind(kind: IdKind) -> &'static str {
    match kind {
        IdKind::User => "user",
        IdKind::Anonymous => "anonymous",
    }
}

/// One row of `identity_claims`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ClaimRow {
    pub tenant: String,
    pub kind: String,
    pub time_ms: i64,
    pub message_id: String,
    pub from_id: String,
    pub user_id: String,
    pub partition: i32,
    pub offset: i64,
}

impl ClaimRow {
    /// The row of a claim made by the event at `position`.
    pub fn new(claim: &IdentityClaim, (partition, offset): Position) -> Self {
        let (tenant, kind, time_ms, message_id, from_id, user_id) = match claim.clone() {
            IdentityClaim::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            } => (
                tenant,
                "identify",
                time_ms,
                message_id,
                anonymous_id,
                user_id,
            ),
            IdentityClaim::Alias {
                tenant,
                previous_id,
                user_id,
            } => (tenant, "alias", 0, String::new(), previous_id, user_id),
            IdentityClaim::KnownUser { tenant, user_id } => {
                (tenant, "user", 0, String::new(), String::new(), user_id)
            }
        };
        ClaimRow {
            tenant,
            kind: kind.into(),
            time_ms,
            message_id,
            from_id,
            user_id,
            partition,
            offset,
        }
    }

    /// The claim this row stores; `None` for an unknown kind (written by a newer engine).
    pub fn to_claim(&self) -> Option<IdentityClaim> {
        let ClaimRow {
            tenant,
            kind,
            time_ms,
            message_id,
            from_id,
            user_id,
            ..
        } = self.clone();
        match kind.as_str() {
            "identify" => Some(IdentityClaim::Identify {
                tenant,
                time_ms,
                message_id,
                anonymous_id: from_id,
                user_id,
            }),
            "alias" => Some(IdentityClaim::Alias {
                tenant,
                previous_id: from_id,
                user_id,
            }),
            "user" => Some(IdentityClaim::KnownUser { tenant, user_id }),
            _ => None,
        }
    }
}

/// Writes the person of every linked id.
#[derive(Debug)]
pub struct IdentitiesSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for IdentitiesSink {
    type Record = ((Node, Person), u64, isize);
    const NAME: &'static str = "IdentitiesSink";

    fn route(((node, _), _, _): &Self::Record) -> u64 {
        route(node)
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let rows: Vec<IdentityRow> = upserts(updates, |(node, _): &(Node, Person)| node.clone())
            .into_iter()
            .map(|((node, person), removed)| IdentityRow::new(&node, &person, removed, epoch))
            .collect();
        self.table.write("identities", "identities", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}

/// Writes identity claims as they are first made (a claim is never withdrawn from the log).
#[derive(Debug)]
pub struct ClaimsSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for ClaimsSink {
    type Record = ((IdentityClaim, Position), u64, isize);
    const NAME: &'static str = "ClaimsSink";

    fn route(((claim, _), _, _): &Self::Record) -> u64 {
        route(claim)
    }

    fn write(&mut self, _epoch: u64, updates: Vec<Self::Record>) -> Write {
        let rows: Vec<ClaimRow> = updates
            .iter()
            .filter(|(_, _, diff)| *diff > 0)
            .map(|((claim, position), _, _)| ClaimRow::new(claim, *position))
            .collect();
        self.table.write("identity claims", "identity_claims", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_claim_comes_back_from_its_row() {
        let claims = [
            IdentityClaim::Identify {
                tenant: "t".into(),
                time_ms: 5,
                message_id: "m".into(),
                anonymous_id: "a".into(),
                user_id: "u".into(),
            },
            IdentityClaim::Alias {
                tenant: "t".into(),
                previous_id: "old".into(),
                user_id: "new".into(),
            },
            IdentityClaim::KnownUser {
                tenant: "t".into(),
                user_id: "u".into(),
            },
        ];
        for claim in claims {
            assert_eq!(ClaimRow::new(&claim, (1, 2)).to_claim(), Some(claim));
        }
    }
}
