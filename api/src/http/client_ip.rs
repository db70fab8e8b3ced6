//! Who the client is. `X-Forwarded-For` is believed only when the TCP peer is a configured
//! trusted proxy, and then only the hops that trusted proxies appended. An IPv4 address seen
//! as IPv6 (`::ffff:203.0.113.9`, as a dual-stack listener on `[::]` sees IPv4 peers) is taken
//! as the IPv4 address it is, so IPv4 trusted proxies, allowlists and per-IP budgets hold.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. A client cannot spoof
/// its address by sending the header to Herald directly.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?.to_canonical();
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for else {
        return Some(peer);
    };
    // Right to left: every hop up to the first untrusted one was written by a trusted proxy.
    // Whatever the client wrote itself (further left, possibly not an address) is never read.
    // A hop a proxy wrote that is not an address leaves the client unknown (`None`), which
    // keys with an allowlist refuse.
    let mut nearest = peer;
    for hop in header.rsplit(',') {
        match parse_hop(hop.trim()).map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(&ip) => nearest = ip,
            Some(ip) => return Some(ip),
            None => return None,
        }
    }
    Some(nearest)
}

/// One hop as proxies write it: an address, or one with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`) or in brackets (`[2001:db8::1]`), as some load balancers send. An IPv6
/// address's zone (`fe80::1%eth0`, a link-local client's interface on the proxy) is dropped:
/// it names the proxy's interface, not the client.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(bracketed) = hop.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then(|| unzoned_v6(v6))?;
    }
    if hop.contains('%') {
        return unzoned_v6(hop);
    }
    let (v4, port) = hop.split_once(':')?;
    is_port(port)
        .then(|| v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

/// An IPv6 address, without its zone if it has one (an interface name: letters, digits, `-`,
/// `_`, `.`; anything else, a port say, makes the hop unreadable).
fn unzoned_v6(text: &str) -> Option<IpAddr> {
    let address = match text.split_once('%') {
        Some((address, zone)) => {
            let name = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            (!zone.is_empty() && zone.chars().all(name)).then_some(address)?
        }
        None => text,
    };
    address.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_addresses_seen_as_ipv6_are_taken_as_ipv4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), None, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), Some("::ffff:1.2.3.4"), &trusted),
            ip("1.2.3.4"),
            "a mapped peer is a trusted proxy, and a mapped hop is its IPv4 client"
        );
        assert_eq!(
            client_ip(ip("2001:db8::1"), None, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn only_hops_appended_by_trusted_proxies_count() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client claimed 9.9.9.9; the proxy appended the real peer 1.2.3.4 and another proxy.
        let header = "9.9.9.9, 1.2.3.4, 10.0.0.7";
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some(header), &trusted),
            ip("1.2.3.4")
        );
        let spoofed = "not-an-address, 1.2.3.4";
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some(spoofed), &trusted),
            ip("1.2.3.4"),
            "what the client wrote is never read"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("10.0.0.9, garbage"), &trusted),
            None,
            "an unreadable hop from a proxy: unknown, never the proxy's address"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("10.0.0.7"), &trusted),
            ip("10.0.0.7"),
            "only proxies: the furthest one"
        );
        assert_eq!(client_ip(None, None, &trusted), None);
    }

    #[test]
    fn a_hop_with_a_port_or_in_brackets_is_read() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        for (header, client) in [
            ("1.2.3.4:5678", "1.2.3.4"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("1.2.3.4:5678, 10.0.0.7:80", "1.2.3.4"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25eth0]:443", "fe80::1"),
        ] {
            assert_eq!(
                client_ip(ip("10.0.0.2"), Some(header), &trusted),
                ip(client)
            );
        }
        for unreadable in [
            "1.2.3.4:port",
            "1.2.3.4:99999",
            "[2001:db8::1",
            "[1.2.3.4]:80",
            "1.2.3.4%eth0",
            "fe80::1%eth0:443",
        ] {
            assert_eq!(
                client_ip(ip("10.0.0.2"), Some(unreadable), &trusted),
                None,
                "{unreadable}"
            );
        }
    }
}
