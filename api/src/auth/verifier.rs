//! Key verification, kept off the slow path: parse and CRC-check the key, look up its id in an
//! in-memory cache (filled from the event store on a miss), compare HMAC-SHA256 digests in
//! constant time, check revocation, expiry and the IP allowlist. Key events invalidate cache
//! entries in every replica through `LISTEN herald_keys` (see `changes`); the replica that
//! handled a change drops its entry at once. Each authenticated request counts one use of its
//! key (`count_use`), in memory, flushed to `api_key_usage` every two seconds (`key_usage`); a check alone
//! (`verify`) counts nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use herald_domain::api_key::{ApiKey, ApiKeyState, ApiKeyToken};
use herald_domain::KeyId;
use herald_store::AggregateStore;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::key_usage::KeyUsage;
use super::Caller;

type HmacSha256 = Hmac<Sha256>;

/// Hex HMAC-SHA256 of the whole key under the server pepper: what the key events store.
pub fn hash_key(pepper: &[u8], token: &ApiKeyToken) -> String {
    let mut mac = HmacSha256::new_from_slice(pepper).expect("HMAC accepts any key length");
    mac.update(token.expose().as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct CachedKey {
    hash: Vec<u8>,
    state: ApiKeyState,
}

/// Why a presented key was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Missing, malformed, unknown, expired or revoked: one answer for all (401).
    Unauthenticated,
    /// A valid key used from an address outside its allowlist (403): who it would have been,
    /// so the request log can name the key (a leaked key tried from elsewhere is found under
    /// its id) while nothing is granted or spent.
    IpNotAllowed(Box<Caller>),
}

pub struct KeyVerifier {
    pepper: Vec<u8>,
    /// Uses not yet written to `api_key_usage`.
    usage: KeyUsage,
    store: AggregateStore<ApiKey>,
    cache: RwLock<HashMap<KeyId, Arc<CachedKey>>>,
    /// Bumped on every invalidation, so a load that raced with one is not cached.
    generation: AtomicU64,
}

impl KeyVerifier {
    pub fn new(pool: PgPool, pepper: Vec<u8>) -> Self {
        Self {
            pepper,
            store: AggregateStore::new(pool),
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            usage: KeyUsage::default(),
        }
    }

    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }

    /// The caller behind `presented`, used from `client`. Store failures are logged and answered
    /// as `Unauthenticated` (a 401 is safer than a 500 that reveals the key's state).
    pub async fn verify(&self, presented: &str, client: Option<IpAddr>) -> Result<Caller, Refusal> {
        let token = ApiKeyToken::parse(presented).map_err(|_| Refusal::Unauthenticated)?;
        let key = match self.cached(token.id()) {
            Some(key) => key,
            None => self
                .load(token.id())
                .await
                .ok_or(Refusal::Unauthenticated)?,
        };
        check(&self.pepper, &token, &key, Utc::now(), client)
    }

    /// Counts one use of the key `id` (flushed to `api_key_usage` by `flush_usage`).
    pub fn count_use(&self, id: &KeyId) {
        self.usage.count(id);
    }

    /// Puts a key's state in the cache (benchmarks measure verification with a warm cache).
    pub fn prime(&self, id: &KeyId, state: ApiKeyState) -> Option<()> {
        let hash = decode_hex(&state.key_hash)?;
        let entry = Arc::new(CachedKey { hash, state });
        self.cache
            .write()
            .expect("cache lock")
            .insert(id.clone(), entry);
        Some(())
    }

    /// The checks on a cache hit, without counting the use (what the benchmark measures).
    pub fn verify_cached(
        &self,
        presented: &str,
        client: Option<IpAddr>,
    ) -> Result<Caller, Refusal> {
        let token = ApiKeyToken::parse(presented).map_err(|_| Refusal::Unauthenticated)?;
        let key = self.cached(token.id()).ok_or(Refusal::Unauthenticated)?;
        check(&self.pepper, &token, &key, Utc::now(), client)
    }

    /// Writes the counted uses to `api_key_usage` (see `KeyUsage::flush`).
    pub async fn flush_usage(&self, pool: &PgPool) -> sqlx::Result<()> {
        self.usage.flush(pool).await
    }

    /// Writes the counted uses every two seconds until cancelled, and once more on the way out.
    pub async fn flush_usage_periodically(
        self: Arc<Self>,
        pool: PgPool,
        cancel: CancellationToken,
    ) {
        self.usage.flush_periodically(pool, cancel).await;
    }

    fn cached(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        self.cache.read().expect("cache lock").get(id).cloned()
    }

    async fn load(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let (key, _) = match self.store.load(id.as_str()).await {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(key.id = %id, error = %error, "could not load an API key");
                return None;
            }
        };
        let state = key.state()?.clone();
        let hash = decode_hex(&state.key_hash)?;
        let entry = Arc::new(CachedKey { hash, state });
        let mut cache = self.cache.write().expect("cache lock");
        if self.generation.load(Ordering::SeqCst) == generation {
            cache.insert(id.clone(), entry.clone());
        }
        Some(entry)
    }

    /// Forgets one key (it changed) so the next request reloads it.
    pub fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = KeyId::parse(id) {
            self.cache.write().expect("cache lock").remove(&id);
        }
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.write().expect("cache lock").clear();
    }
}

fn check(
    pepper: &[u8],
    token: &ApiKeyToken,
    key: &CachedKey,
    now: DateTime<Utc>,
    client: Option<IpAddr>,
) -> Result<Caller, Refusal> {
    let mut mac = HmacSha256::new_from_slice(pepper).expect("any key length");
    mac.update(token.expose().as_bytes());
    let digest = mac.finalize().into_bytes();
    let matches: bool = digest.as_slice().ct_eq(&key.hash).into();
    if !matches || !key.state.is_active(now) {
        return Err(Refusal::Unauthenticated);
    }
    let caller = Caller::for_key(
        token.id().clone(),
        key.state.budget_key(token.id()).clone(),
        key.state.project_id,
        key.state.scopes.clone(),
        key.state.rate_limit,
    );
    if !key.state.ip_allowlist.allows(client) {
        return Err(Refusal::IpNotAllowed(Box::new(caller)));
    }
    Ok(caller)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}
