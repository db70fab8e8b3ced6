//! Configuration: compiled-in commented defaults (`config.default.toml`), then an optional
//! file, then `HERALD_*` environment variables; validated once at start with messages that say
//! which setting is wrong. Secrets are wrapped so they never appear in logs or debug output.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config.default.toml");

/// A value that must never be printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub redis_url: Secret,
    pub api_key_pepper: Secret,
    pub log: String,
    #[serde(deserialize_with = "comma_list")]
    pub cors_allowed_origins: Vec<String>,
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<String>,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub jobs: JobsConfig,
    pub projections: ProjectionsConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhooksConfig,
    pub rate_limits: RateLimitsConfig,
    pub audit: AuditConfig,
    pub storage: crate::storage::StorageConfig,
    pub uploads: crate::storage::UploadsConfig,
}

/// The longest `audit.retention_days` may be: a hundred years (longer ones would reach past
/// the dates PostgreSQL can hold; 0 keeps every record).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub read_per_minute: u32,
    pub write_per_minute: u32,
    pub daily_quota: u32,
    pub unauthenticated_per_minute: u32,
    /// The prefix length of the IPv6 network a client's per-IP budgets count (32–128).
    pub ipv6_prefix: u8,
    /// How long a replica waits for Redis before deciding a request on its own (10–10,000 ms).
    pub redis_timeout_ms: u32,
}

/// A list given either as a TOML array or as one comma-separated string (handy in env vars).
fn comma_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::List(items) => items,
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub default_lease_seconds: u32,
    pub max_lease_seconds: u32,
    pub retention_hours: u32,
    pub reconcile_interval_ms: u64,
    pub expiry_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionsConfig {
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub open_registration: bool,
    pub session_ttl_seconds: u32,
    pub cookie_secure: bool,
    pub login_attempts: u32,
    pub login_window_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub retry_schedule: String,
    pub request_timeout_seconds: u64,
    pub per_endpoint_concurrency: usize,
    pub disable_after_seconds: u64,
    #[serde(deserialize_with = "comma_list")]
    pub allow_cidrs: Vec<String>,
    pub https_only: bool,
    pub ca_file: String,
    pub poll_interval_ms: u64,
}

impl WebhooksConfig {
    /// The retry schedule as delays.
    pub fn schedule(&self) -> Result<Vec<std::time::Duration>, ConfigError> {
        let delays: Result<Vec<_>, _> = self
            .retry_schedule
            .split(',')
            .map(|s| s.trim().parse::<u64>().map(std::time::Duration::from_secs))
            .collect();
        match delays {
            Ok(delays) if !delays.is_empty() && delays.len() <= 20 => Ok(delays),
            _ => Err(ConfigError::Invalid(
                "webhooks.retry_schedule must be 1-20 comma-separated numbers of seconds".into(),
            )),
        }
    }

    /// The extra certificate authorities from `ca_file`, as PEM, if one is configured.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        if self.ca_file.is_empty() {
            return Ok(None);
        }
        let pem = std::fs::read(&self.ca_file).map_err(|e| {
            ConfigError::Invalid(format!("webhooks.ca_file `{}`: {e}", self.ca_file))
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::Invalid(format!(
                "webhooks.ca_file `{}` holds no PEM certificate",
                self.ca_file
            )));
        }
        Ok(Some(pem))
    }

    pub fn allow_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.allow_cidrs
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "webhooks.allow_cidrs: `{entry}` is not a CIDR"
                        ))
                    })
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration")]
    Load(#[source] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file` (if given, it must exist; otherwise `./herald.toml` if
    /// present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("herald.toml")),
        }
        figment = figment
            .merge(Env::prefixed("HERALD_").split("__").ignore(&[
                "config",
                "webhooks_retry_schedule",
                "webhooks_allow_cidrs",
            ]))
            .merge(Env::raw().only(&["database_url", "redis_url"]));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        // The webhook settings are also documented under single-underscore names.
        if let Ok(schedule) = std::env::var("HERALD_WEBHOOKS_RETRY_SCHEDULE") {
            config.webhooks.retry_schedule = schedule;
        }
        if let Ok(cidrs) = std::env::var("HERALD_WEBHOOKS_ALLOW_CIDRS") {
            config.webhooks.allow_cidrs = cidrs
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone, for tests that then adjust fields.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("the compiled-in defaults are valid")
    }

    /// Refuses settings the server could not run with, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.http.max_body_bytes < 1024 {
            return fail("http.max_body_bytes must be at least 1024");
        }
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.uploads.validate().map_err(ConfigError::Invalid)?;
        if self.http.request_timeout_seconds == 0 {
            return fail("http.request_timeout_seconds must be positive");
        }
        if self.database.max_connections < 2 {
            return fail("database.max_connections must be at least 2");
        }
        if self.jobs.default_lease_seconds == 0
            || self.jobs.default_lease_seconds > self.jobs.max_lease_seconds
        {
            return fail("jobs.default_lease_seconds must be between 1 and jobs.max_lease_seconds");
        }
        if self.jobs.reconcile_interval_ms == 0
            || self.jobs.expiry_interval_ms == 0
            || self.projections.poll_interval_ms == 0
        {
            return fail("intervals must be positive");
        }
        if !self.api_key_pepper.is_empty() && self.api_key_pepper.expose().chars().count() < 16 {
            return fail("api_key_pepper must be at least 16 characters");
        }
        if let Some(bad) = self
            .cors_allowed_origins
            .iter()
            .find(|o| *o == "*" || !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(ConfigError::Invalid(format!(
                "cors_allowed_origins: `{bad}` is not an origin like https://app.example.com (wildcards are not allowed)"
            )));
        }
        if self.auth.session_ttl_seconds < 60 {
            return fail("auth.session_ttl_seconds must be at least 60");
        }
        if self.auth.login_attempts == 0 || self.auth.login_window_seconds == 0 {
            return fail("auth.login_attempts and auth.login_window_seconds must be positive");
        }
        let limits = &self.rate_limits;
        if limits.read_per_minute == 0
            || limits.write_per_minute == 0
            || limits.daily_quota == 0
            || limits.unauthenticated_per_minute == 0
        {
            return fail("rate_limits: every limit must be positive (set rate_limits.enabled = false to turn them off)");
        }
        if !(32..=128).contains(&limits.ipv6_prefix) {
            return fail("rate_limits.ipv6_prefix must be between 32 and 128 (64 by default)");
        }
        if !(10..=10_000).contains(&limits.redis_timeout_ms) {
            return fail(
                "rate_limits.redis_timeout_ms must be between 10 and 10000 (250 by default)",
            );
        }
        if self.audit.retention_days > MAX_RETENTION_DAYS {
            return fail(
                "audit.retention_days must be at most 36500 (100 years; 0 keeps every record)",
            );
        }
        self.webhooks.schedule()?;
        self.webhooks.allow_nets()?;
        self.webhooks.ca_pem()?;
        if self.webhooks.request_timeout_seconds == 0
            || self.webhooks.per_endpoint_concurrency == 0
            || self.webhooks.poll_interval_ms == 0
        {
            return fail("webhooks.request_timeout_seconds, per_endpoint_concurrency and poll_interval_ms must be positive");
        }
        self.trusted_proxy_nets()?;
        let url = self.database_url.expose();
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return fail("database_url must start with postgres:// or postgresql://");
        }
        let redis = self.redis_url.expose();
        if !redis.is_empty() && redis::Client::open(redis).is_err() {
            return fail("redis_url must be a redis:// URL");
        }
        Ok(())
    }
}

impl Config {
    /// The trusted proxies as networks (a bare address is a single host; an IPv4-mapped IPv6
    /// one is the IPv4 network it is, as clients are taken).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| herald_domain::api_key::canonical_net(&net))
                    .map_err(|_| {
                        ConfigError::Invalid(format!("trusted_proxies: `{entry}` is not a CIDR"))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_defaults_are_valid() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.http.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn invalid_values_are_refused_with_the_setting_named() {
        let mut config = Config::defaults();
        config.jobs.default_lease_seconds = 0;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("jobs.default_lease_seconds"), "{message}");
        for prefix in [0, 31, 129] {
            let mut config = Config::defaults();
            config.rate_limits.ipv6_prefix = prefix;
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("rate_limits.ipv6_prefix"), "{message}");
        }
        let mut config = Config::defaults();
        assert_eq!(config.rate_limits.ipv6_prefix, 64);
        config.rate_limits.ipv6_prefix = 128;
        config.validate().unwrap();
        for timeout in [0, 9, 10_001] {
            let mut config = Config::defaults();
            config.rate_limits.redis_timeout_ms = timeout;
            let message = config.validate().unwrap_err().to_string();
            assert!(
                message.contains("rate_limits.redis_timeout_ms"),
                "{message}"
            );
        }
        assert_eq!(Config::defaults().rate_limits.redis_timeout_ms, 250);
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_strings_and_wildcards_are_refused() {
        let config: Config = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string(
                "cors_allowed_origins = \"https://a.example, https://b.example\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
            ))
            .extract()
            .unwrap();
        assert_eq!(
            config.cors_allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.trusted_proxy_nets().unwrap().len(), 1);
        let mut mapped = config.clone();
        mapped.trusted_proxies = vec!["::ffff:127.0.0.1".into(), "::ffff:10.0.0.0/104".into()];
        let nets: Vec<String> = mapped
            .trusted_proxy_nets()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8"], "IPv4-mapped: as IPv4");
        let mut wildcard = config.clone();
        wildcard.cors_allowed_origins = vec!["*".into()];
        assert!(wildcard.validate().is_err());
    }

    #[test]
    fn retention_is_at_most_a_hundred_years() {
        let mut config = Config::defaults();
        config.audit.retention_days = MAX_RETENTION_DAYS;
        assert!(config.validate().is_ok());
        config.audit.retention_days = MAX_RETENTION_DAYS + 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("audit.retention_days"), "{refused}");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2hunter2hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
