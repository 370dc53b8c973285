//! Client addresses as clients and proxies write them.
//!
//! `context.ip` is often filled by a server-side integration that copies a header verbatim, so
//! it arrives in every form a proxy writes: with a port (`203.0.113.7:51234`), IPv6 in
//! brackets (`[2001:db8::1]:443`), or a whole `X-Forwarded-For` chain (`203.0.113.7,
//! 10.0.0.1`). The same forms reach the gateway in its own `X-Forwarded-For` and `Forwarded`
//! (RFC 7239) headers. One reading serves them all, and a value that holds no address is
//! reported, never a reason to refuse an event.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The client of a comma-separated chain of addresses, client first (`X-Forwarded-For`'s
/// order, and a single address is a chain of one): the first public address, since the
/// private entries of a chain are the networks the request crossed on its way; with none
/// public, the first address. Entries may carry a port, brackets or quotes; entries that are
/// not addresses (`unknown`, obfuscated names) are skipped. `None` when no entry is one.
pub fn client_of_chain(chain: &str) -> Option<IpAddr> {
    first_public(chain.split(',').filter_map(address))
}

/// The client of a `Forwarded` header (RFC 7239, section 4): the `for=` node of each element,
/// read as [`client_of_chain`] reads its entries.
pub fn client_of_forwarded(header: &str) -> Option<IpAddr> {
    let nodes = header.split(',').filter_map(|element| {
        element.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            name.trim().eq_ignore_ascii_case("for").then_some(value)
        })
    });
    first_public(nodes.filter_map(address))
}

fn first_public(addresses: impl Iterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut first = None;
    for ip in addresses {
        if is_public(ip) {
            return Some(ip);
        }
        first.get_or_insert(ip);
    }
    first
}

/// One entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`,
/// quoted or not, an IPv4-mapped IPv6 address read as the IPv4 address it maps.
fn address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"').trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<IpAddr>().ok()
        })?;
    Some(ip.to_canonical())
}

/// Not a private, shared (carrier-grade NAT), loopback, link-local or unspecified address:
/// one that names a client on the internet. Documentation ranges count as public, so that
/// examples behave as real addresses do.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || is_shared(v4)
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6 == Ipv6Addr::LOCALHOST)
        }
    }
}

/// 100.64.0.0/10, RFC 6598.
fn is_shared(v4: Ipv4Addr) -> bool {
    let [a, b, _, _] = v4.octets();
    a == 100 && (64..128).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn every_form_a_proxy_writes() {
        for (written, client) in [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7 ", "203.0.113.7"),
            ("203.0.113.7:51234", "203.0.113.7"),
            ("203.0.113.7, 10.0.0.1", "203.0.113.7"),
            ("10.0.0.1, 203.0.113.7", "203.0.113.7"),
            ("10.0.0.1, 192.168.1.2", "10.0.0.1"),
            ("unknown, 198.51.100.9:80", "198.51.100.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("fd00::1, [2001:db8::2]:8080", "2001:db8::2"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("\"203.0.113.7\"", "203.0.113.7"),
            ("100.64.0.1, 203.0.113.7", "203.0.113.7"),
        ] {
            assert_eq!(client_of_chain(written), ip(client), "{written}");
        }
        for nothing in ["", "unknown", "not-an-ip", "1.2.3", ",,", "[::1"] {
            assert_eq!(client_of_chain(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn forwarded_header_nodes() {
        assert_eq!(
            client_of_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43"),
            ip("192.0.2.60")
        );
        assert_eq!(
            client_of_forwarded("For=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_of_forwarded("for=10.1.2.3, for=198.51.100.17;proto=https"),
            ip("198.51.100.17")
        );
        assert_eq!(client_of_forwarded("for=_hidden, for=unknown"), None);
        assert_eq!(client_of_forwarded("proto=https"), None);
    }
}
