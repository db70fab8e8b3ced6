//! Whose budget a request without accepted credentials spends: its client's network. An IPv4
//! client is its address; an IPv6 client is its /64, the smallest network an ISP or a cloud
//! provider hands out, so someone holding a /64 (2^64 addresses) cannot start afresh with
//! each address. The per-IP `unauthenticated` budget and the login limiter's per-IP count both
//! key on it.

use std::net::{IpAddr, Ipv6Addr};

/// The rate-limit subject of a client address (`ip:203.0.113.9`, `ip:2001:db8:1:2::/64`), or
/// `ip:unknown` when the address could not be determined (all such requests share one budget).
/// Expects the address as the edge canonicalised it (an IPv4-mapped IPv6 address is IPv4).
pub fn ip_subject(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("ip:{}/64", Ipv6Addr::from(network))
        }
        None => "ip:unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::ip_subject;

    fn subject(ip: &str) -> String {
        ip_subject(Some(ip.parse().expect("an address")))
    }

    #[test]
    fn ipv4_clients_are_their_address() {
        assert_eq!(subject("203.0.113.9"), "ip:203.0.113.9");
        assert_ne!(subject("203.0.113.9"), subject("203.0.113.10"));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(subject("2001:db8:1:2:aaaa::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            subject("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "ip:2001:db8:1:2::/64"
        );
        assert_ne!(subject("2001:db8:1:2::1"), subject("2001:db8:1:3::1"));
        assert_eq!(subject("::1"), "ip:::/64");
    }

    #[test]
    fn an_unknown_client_has_one_budget() {
        assert_eq!(ip_subject(None), "ip:unknown");
    }
}
