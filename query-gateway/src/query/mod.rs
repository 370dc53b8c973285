//! The query model: one typed query ([`model::Query`]: metrics × dimensions × filters × date
//! range × time zone × comparison × order × pagination), one compiler to ClickHouse SQL
//! ([`compile`]) and one runner that turns its aggregates into metrics ([`run`]). Every
//! endpoint that reports numbers over a tenant's events builds a query and goes through here,
//! so the same question gets the same number through every door.

pub mod compile;
pub mod funnel;
pub mod model;
pub mod range;
pub mod run;
