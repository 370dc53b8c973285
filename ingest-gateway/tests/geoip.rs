//! GeoIP lookups on known addresses, one or more per continent, against the database the
//! set-up installs (`deploy/test.sh` sets `CLICKSTREAM_GEOIP`). The expected countries are
//! where these organisations are, public knowledge, not what the code says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use clickstream_ingest_gateway::enrich::{EnrichConfig, Enricher};
use schemas::Event;

fn enricher() -> Enricher {
    let geoip = std::env::var("CLICKSTREAM_GEOIP").expect(
        "CLICKSTREAM_GEOIP is not set: run the tests through deploy/test.sh, which installs the GeoIP database",
    );
    Enricher::load(&EnrichConfig {
        ua_regexes: None,
        geoip: geoip.split(',').map(Into::into).collect(),
    })
    .expect("the GeoIP files open")
}

fn locate(enricher: &Enricher, address: &str) -> schemas::Location {
    let mut event = Event::new("t", "m", schemas::EventKind::Page, 0);
    enricher.enrich(&mut event, Some(address.parse().unwrap()), &[]);
    event.location
}

#[test]
fn known_addresses_per_continent() {
    let enricher = enricher();
    assert!(enricher.has_geo());
    let known = [
        ("8.8.8.8", "US"),                   // Google Public DNS (North America)
        ("193.0.6.139", "NL"),               // RIPE NCC, Amsterdam (Europe)
        ("2001:67c:2e8:22::c100:68b", "NL"), // RIPE NCC over IPv6
        ("133.11.0.1", "JP"),                // University of Tokyo (Asia)
        ("202.12.29.205", "AU"),             // APNIC, Brisbane (Oceania)
        ("200.160.2.3", "BR"),               // NIC.br, São Paulo (South America)
        ("196.216.2.6", "ZA"),               // AFRINIC's servers, Johannesburg (Africa)
    ];
    for (address, country) in known {
        let location = locate(&enricher, address);
        assert_eq!(location.country, country, "{address}: {location:?}");
    }
    let amsterdam = locate(&enricher, "193.0.6.139");
    assert!(
        !amsterdam.region.is_empty() && !amsterdam.city.is_empty(),
        "{amsterdam:?}"
    );
}

#[test]
fn unknown_and_private_addresses_have_no_place() {
    let enricher = enricher();
    for address in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "::1", "fd00::1"] {
        assert_eq!(
            locate(&enricher, address),
            schemas::Location::default(),
            "{address}"
        );
    }
    let mut event = Event::new("t", "m", schemas::EventKind::Page, 0);
    enricher.enrich(&mut event, None, &[]);
    assert_eq!(event.location, schemas::Location::default());
}
