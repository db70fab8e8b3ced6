//! The SSRF guard. Webhook URLs are chosen by API callers, so before Herald connects anywhere
//! it resolves the host itself and refuses addresses inside the deployment's own networks:
//! loopback, private, link-local (cloud metadata lives there), CGNAT, multicast, unspecified,
//! documentation and IPv4-mapped/translated IPv6 forms of those. The check happens inside the
//! HTTP client's resolver, so the address that was checked is the one connected to (no DNS
//! rebinding between check and connect). Configured CIDRs open chosen ranges (tests use it for
//! 127.0.0.1), and an https-only switch refuses plain http.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allow: Vec<IpNet>,
    pub https_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("only https URLs are allowed")]
    NotHttps,
    #[error("the URL is not a valid http(s) URL")]
    BadUrl,
    #[error("the address {0} is not allowed (private, loopback, link-local or reserved)")]
    Address(IpAddr),
    #[error("the host did not resolve to any allowed address")]
    NoAllowedAddress,
}

impl AddressPolicy {
    /// Whether Herald may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// Checks a URL's scheme, and its host when it is an IP literal (names are checked when
    /// they are resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            "http" => return Err(Refused::NotHttps),
            _ => return Err(Refused::BadUrl),
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !self.permits(ip.into()) => {
                Err(Refused::Address(ip.into()))
            }
            Some(url::Host::Ipv6(ip)) if !self.permits(ip.into()) => {
                Err(Refused::Address(ip.into()))
            }
            Some(_) => Ok(()),
            None => Err(Refused::BadUrl),
        }
    }

    /// A resolver for the HTTP client that only ever yields permitted addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240; // reserved
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let reserved = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
        || segments[0] == 0x0064 && segments[1] == 0xff9b // NAT64 (embeds IPv4)
        || segments[0] == 0x2002 // 6to4 (embeds IPv4)
        || segments[0] == 0x2001 && segments[1] == 0 // Teredo 2001::/32 (embeds IPv4)
        // ::/64: IPv4-compatible, -mapped and -translated (`::ffff:0:a.b.c.d`) forms
        || segments[..4] == [0, 0, 0, 0];
    !reserved
}

/// Resolves with the system resolver and drops every address the policy refuses.
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(Refused::NoAllowedAddress) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_and_reserved_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "ff02::1",
        ] {
            assert!(!is_public(ip(bad)), "{bad} was allowed");
        }
        for good in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            assert!(is_public(ip(good)), "{good} was refused");
        }
    }

    #[test]
    fn an_allowlist_opens_chosen_ranges_and_https_only_refuses_http() {
        let policy = AddressPolicy {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            https_only: false,
        };
        assert!(policy.permits(ip("127.0.0.1")) && !policy.permits(ip("127.0.0.2")));
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(policy.check_url(&url("http://127.0.0.1:9/x")), Ok(()));
        assert_eq!(
            policy.check_url(&url("http://[::1]/x")),
            Err(Refused::Address(ip("::1")))
        );
        assert_eq!(
            policy.check_url(&url("ftp://example.com/")),
            Err(Refused::BadUrl)
        );
        let strict = AddressPolicy {
            https_only: true,
            ..policy
        };
        assert_eq!(
            strict.check_url(&url("http://example.com/")),
            Err(Refused::NotHttps)
        );
    }

    #[tokio::test]
    async fn the_resolver_yields_only_permitted_addresses() {
        let closed = Arc::new(AddressPolicy::default());
        let name: Name = "localhost".parse().unwrap();
        assert!(closed.resolver().resolve(name).await.is_err());
        let open = Arc::new(AddressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            https_only: false,
        });
        let addrs: Vec<SocketAddr> = open
            .resolver()
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
