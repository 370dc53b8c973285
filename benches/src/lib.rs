//! Benchmark harness for clickstream (the generated clickstream is the `loadgen` crate).
#![warn(missing_docs)]

pub mod load;

/// Enriches generated events as the ingest gateway does (agent, location, source and
/// channel, the bot flag), for benchmarks that write the wire format themselves instead of
/// going through the gateway. The address is the generator's `ip`, as received.
pub fn enrich_as_the_gateway<'a>(
    events: impl IntoIterator<Item = &'a mut schemas::Event>,
    enricher: &ingest_gateway::enrich::Enricher,
) {
    for event in events {
        let address = event.ip.parse().ok();
        enricher.enrich(event, address, &[]);
    }
}

/// The gateway's enricher over `geoip` files (the gateway's `--geoip`; empty: no geography).
pub fn gateway_enricher(
    geoip: &[std::path::PathBuf],
) -> Result<ingest_gateway::enrich::Enricher, ingest_gateway::enrich::EnrichError> {
    ingest_gateway::enrich::Enricher::load(&ingest_gateway::enrich::EnrichConfig {
        ua_regexes: None,
        geoip: geoip.to_vec(),
    })
}
