//! `identities` (the person of every linked id) and `identity_claims` (the earliest claim of
//! each subject, reloaded at the next start).

use clickhouse::Row;
use operators::{IdKind, IdentityClaim, Node, Person, Position, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::ClaimRow;
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

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
            tenant: node.tenant().to_string(),
            id_kind: id_kind(node.kind()).to_owned(),
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
