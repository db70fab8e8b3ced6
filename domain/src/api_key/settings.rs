//! The adjustable settings of an API key, each parsed once from raw input.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::FieldError;

/// A key's display name.
pub type KeyName = crate::name::DisplayName;

/// An optional free-text description of up to 500 characters.
pub fn parse_description(raw: Option<String>) -> Result<Option<String>, FieldError> {
    match raw {
        Some(text) if text.chars().count() > 500 => Err(FieldError::new(
            "description",
            "must be at most 500 characters",
        )),
        other => Ok(other.filter(|t| !t.trim().is_empty())),
    }
}

/// The client networks a key may be used from; empty means anywhere. IPv4 and IPv6 CIDRs (a
/// bare address is a /32 or /128). IPv4-mapped IPv6 clients match IPv4 entries, and entries
/// written IPv4-mapped (`::ffff:192.0.2.0/120`) are kept as the IPv4 networks they are (and
/// match as such even when an earlier version stored them mapped).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    pub const MAX_ENTRIES: usize = 100;

    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, FieldError> {
        if raw.len() > Self::MAX_ENTRIES {
            return Err(FieldError::new("ip_allowlist", "at most 100 entries"));
        }
        raw.iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map(|net| canonical_net(&net.trunc()))
                    .map_err(|_| {
                        FieldError::new(format!("ip_allowlist[{i}]"), "not an IP address or CIDR")
                    })
            })
            .collect::<Result<Vec<IpNet>, _>>()
            .map(|mut nets| {
                // The same network twice allows nothing more: kept once, where it came first.
                let mut seen = std::collections::HashSet::new();
                nets.retain(|net| seen.insert(*net));
                Self(nets)
            })
    }

    /// Whether both allow the same networks, in whatever order (order carries no meaning).
    pub fn same_networks(&self, other: &Self) -> bool {
        let sorted = |list: &Self| {
            let mut nets = list.0.clone();
            nets.sort();
            nets
        };
        sorted(self) == sorted(other)
    }

    /// Whether every address this list allows, `outer` allows too (an empty list allows every
    /// address, so only an empty `outer` holds it).
    pub fn within(&self, outer: &Self) -> bool {
        if outer.0.is_empty() {
            return true;
        }
        !self.0.is_empty()
            && self
                .0
                .iter()
                .all(|net| outer.0.iter().any(|wide| wide.contains(net)))
    }

    /// Whether a request from `client` is allowed. An empty list allows every client; a
    /// non-empty list allows no request whose client address is unknown.
    pub fn allows(&self, client: Option<std::net::IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(client) = client else {
            return false;
        };
        let client = match client {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(client),
            v4 => v4,
        };
        self.0
            .iter()
            .any(|net| canonical_net(net).contains(&client))
    }

    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|net| net.to_string())
    }
}

/// `net` as IPv4 when it is an IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120` is
/// `192.0.2.0/24`), which is how a dual-stack listener sees IPv4 clients; else `net`.
pub fn canonical_net(net: &IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .network()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(*net, IpNet::V4),
        _ => *net,
    }
}

/// Per-key rate-limit settings (enforced by the rate-limiting layer; `None`: the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RateLimit {
    pub read_per_minute: Option<u32>,
    pub write_per_minute: Option<u32>,
    pub daily_quota: Option<u32>,
}

/// A change to one limit of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitChange {
    /// Leave the limit as it is.
    #[default]
    Keep,
    /// Use this many requests (positive: zero is refused before it gets here).
    Set(u32),
    /// Return to the server default.
    Reset,
}

impl LimitChange {
    fn apply(self, current: Option<u32>) -> Option<u32> {
        match self {
            LimitChange::Keep => current,
            LimitChange::Set(value) => Some(value),
            LimitChange::Reset => None,
        }
    }
}

/// A change to a key's rate limits, merged into its current settings: limits it does not name
/// stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitChange {
    pub read_per_minute: LimitChange,
    pub write_per_minute: LimitChange,
    pub daily_quota: LimitChange,
}

impl RateLimitChange {
    pub fn apply(&self, current: RateLimit) -> RateLimit {
        RateLimit {
            read_per_minute: self.read_per_minute.apply(current.read_per_minute),
            write_per_minute: self.write_per_minute.apply(current.write_per_minute),
            daily_quota: self.daily_quota.apply(current.daily_quota),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlist_is_within_another_when_it_allows_no_more() {
        let list = |nets: &[&str]| IpAllowlist::parse(nets).unwrap();
        let outer = list(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(list(&["10.1.0.0/16", "10.2.3.4"]).within(&outer));
        assert!(list(&["2001:db8:1::/48"]).within(&outer));
        assert!(!list(&["10.0.0.0/7"]).within(&outer), "wider");
        assert!(
            !list(&["10.1.0.0/16", "192.0.2.1"]).within(&outer),
            "one outside"
        );
        assert!(!IpAllowlist::default().within(&outer), "anywhere");
        assert!(IpAllowlist::default().within(&IpAllowlist::default()));
        assert!(list(&["192.0.2.1"]).within(&IpAllowlist::default()));
    }

    #[test]
    fn allowlists_match_real_prefixes_for_v4_and_v6() {
        let list = IpAllowlist::parse(&["10.1.0.0/16", "2001:db8::/32", "192.0.2.7"]).unwrap();
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(list.allows(ip("10.1.200.3")));
        assert!(!list.allows(ip("10.2.0.1")));
        assert!(list.allows(ip("2001:db8:ffff::1")));
        assert!(!list.allows(ip("2001:db9::1")));
        assert!(list.allows(ip("192.0.2.7")));
        assert!(!list.allows(ip("192.0.2.8")));
        assert!(
            list.allows(ip("::ffff:10.1.0.9")),
            "IPv4-mapped clients match IPv4 entries"
        );
        assert!(!list.allows(None), "no client address means deny");
        assert!(IpAllowlist::default().allows(None));
        let mapped = IpAllowlist::parse(&["::ffff:192.0.2.0/120", "::ffff:127.0.0.1"]).unwrap();
        assert!(
            mapped.allows(ip("192.0.2.44")),
            "a mapped entry is its IPv4 network"
        );
        assert!(mapped.allows(ip("::ffff:127.0.0.1")));
        assert!(!mapped.allows(ip("192.0.3.1")));
        let entries: Vec<String> = mapped.entries().collect();
        assert_eq!(entries, ["192.0.2.0/24", "127.0.0.1/32"], "kept as IPv4");
        let twice = IpAllowlist::parse(&["127.0.0.1", "::ffff:127.0.0.1"]).unwrap();
        assert_eq!(twice.entries().count(), 1, "the same network twice");
    }

    #[test]
    fn a_rate_limit_change_keeps_what_it_does_not_name() {
        let current = RateLimit {
            read_per_minute: Some(5),
            write_per_minute: Some(7),
            daily_quota: Some(100),
        };
        let change = RateLimitChange {
            read_per_minute: LimitChange::Set(9),
            daily_quota: LimitChange::Reset,
            ..RateLimitChange::default()
        };
        let merged = change.apply(current);
        assert_eq!(merged.read_per_minute, Some(9));
        assert_eq!(merged.write_per_minute, Some(7));
        assert_eq!(merged.daily_quota, None);
    }

    #[test]
    fn malformed_entries_are_named() {
        let error = IpAllowlist::parse(&["10.0.0.0/8", "10.0.0.300"]).unwrap_err();
        assert_eq!(error.field, "ip_allowlist[1]");
    }
}
