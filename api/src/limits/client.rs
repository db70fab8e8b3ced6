//! Whose budget a request without accepted credentials spends: its client's network
//! (`herald_domain::client_network`: an IPv4 address, an IPv6 network of
//! `rate_limits.ipv6_prefix` bits, /64 by default, or the IPv4 address a NAT64 address embeds),
//! so someone holding a /64 cannot start afresh with each address. The per-IP
//! `unauthenticated` budget and the login limiter's per-IP count both key on it.

use std::net::IpAddr;

use herald_domain::client_network::client_network;

/// The rate-limit subject of a client address (`ip:203.0.113.9`, `ip:2001:db8:1:2::/64`), or
/// `ip:unknown` when the address could not be determined (all such requests share one budget).
/// Expects the address as the edge canonicalised it (an IPv4-mapped IPv6 address is IPv4).
/// `ipv6_prefix`: the prefix length of an IPv6 client's network.
pub fn ip_subject(ip: Option<IpAddr>, ipv6_prefix: u8) -> String {
    match ip {
        Some(ip) => format!("ip:{}", client_network(ip, ipv6_prefix)),
        None => "ip:unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::ip_subject;

    #[test]
    fn a_subject_is_the_clients_network() {
        let subject = |ip: &str| ip_subject(Some(ip.parse().expect("an address")), 64);
        assert_eq!(subject("203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(subject("2001:db8:1:2:aaaa::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(subject("64:ff9b::1.1.1.1"), "ip:1.1.1.1");
        assert_eq!(ip_subject(None, 64), "ip:unknown");
        let wide = ip_subject(Some("2001:db8:1:2ff::1".parse().expect("an address")), 56);
        assert_eq!(wide, "ip:2001:db8:1:200::/56");
    }
}
