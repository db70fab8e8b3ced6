//! Which network a client address stands for when requests are counted per client: an IPv4
//! client is its address; an IPv6 client is its network of the configured prefix length
//! (`rate_limits.ipv6_prefix`, default /64, the smallest network an ISP or a cloud provider
//! hands a customer), so someone holding a /64 (2^64 addresses) cannot pass for many clients;
//! and an IPv4 client seen through NAT64's well-known prefix (`64:ff9b::/96`, RFC 6052) is the
//! IPv4 address it embeds, not the translator's network. The per-IP budgets count by it, and
//! the security summary groups refusals by it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default prefix length of an IPv6 client's network.
pub const IPV6_PREFIX: u8 = 64;

/// `ip`'s network, as text: `203.0.113.9`, `2001:db8:1:2::/64` (for `v6_prefix` 64, which is
/// taken as 128 above it). Expects the address as the edge canonicalised it (an IPv4-mapped
/// IPv6 address is already IPv4).
pub fn client_network(ip: IpAddr, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            const NAT64: u128 = 0x0064_ff9b_u128 << 96;
            if bits >> 32 == NAT64 >> 32 {
                return Ipv4Addr::from(bits as u32).to_string();
            }
            let prefix = v6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(bits & mask))
        }
    }
}

/// `text` (a stored client address) as `client_network` writes it; text that is not an address
/// stays as it is.
pub fn client_network_of(text: &str, v6_prefix: u8) -> String {
    text.parse()
        .map_or_else(|_| text.to_owned(), |ip| client_network(ip, v6_prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(ip: &str) -> String {
        client_network(ip.parse().expect("an address"), IPV6_PREFIX)
    }

    #[test]
    fn ipv4_clients_are_their_address() {
        assert_eq!(network("203.0.113.9"), "203.0.113.9");
        assert_ne!(network("203.0.113.9"), network("203.0.113.10"));
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        assert_eq!(network("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            network("2001:DB8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
        assert_eq!(network("::1"), "::/64");
    }

    #[test]
    fn nat64_clients_are_the_ipv4_address_they_embed() {
        assert_eq!(network("64:ff9b::1.1.1.1"), "1.1.1.1");
        assert_eq!(network("64:ff9b::808:808"), "8.8.8.8");
        assert_ne!(network("64:ff9b::1.1.1.1"), network("64:ff9b::9.9.9.9"));
        // The rest of the translator's /64 is not the well-known prefix.
        assert_eq!(network("64:ff9b::1:0:0:1"), "64:ff9b::/64");
    }

    #[test]
    fn stored_text_that_is_no_address_stays() {
        assert_eq!(client_network_of("2001:db8::7", 64), "2001:db8::/64");
        assert_eq!(client_network_of("unknown", 64), "unknown");
    }

    #[test]
    fn other_prefix_lengths() {
        let at = |ip: &str, prefix| client_network(ip.parse().expect("an address"), prefix);
        assert_eq!(at("2001:db8:1:2ff::1", 56), "2001:db8:1:200::/56");
        assert_eq!(at("2001:db8:1:2ff::1", 48), "2001:db8:1::/48");
        assert_eq!(at("2001:db8:1:2::1", 128), "2001:db8:1:2::1/128");
        assert_eq!(at("2001:db8:1:2::1", 200), "2001:db8:1:2::1/128");
        assert_eq!(at("2001:db8:1:2::1", 0), "::/0");
        assert_eq!(at("203.0.113.9", 48), "203.0.113.9");
        assert_eq!(at("64:ff9b::1.1.1.1", 48), "1.1.1.1");
    }
}
