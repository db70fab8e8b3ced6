//! Key verification, kept off the slow path: parse and CRC-check the key, look up its id in an
//! in-memory cache (filled from the event store on a miss), compare HMAC-SHA256 digests in
//! constant time, check revocation and expiry. Key events invalidate cache entries in every
//! replica through `LISTEN herald_keys` (sent by the events trigger).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use herald_domain::api_key::{ApiKey, ApiKeyState, ApiKeyToken};
use herald_domain::KeyId;
use herald_store::AggregateStore;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

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

pub struct KeyVerifier {
    pepper: Vec<u8>,
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
        }
    }

    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }

    /// The caller behind `presented`, or `None` for any kind of bad key. Store failures are
    /// logged and also answered `None` (a 401 is safer than a 500 that reveals the key's state).
    pub async fn verify(&self, presented: &str) -> Option<Caller> {
        let token = ApiKeyToken::parse(presented).ok()?;
        let key = match self.cached(token.id()) {
            Some(key) => key,
            None => self.load(token.id()).await?,
        };
        let mut mac = HmacSha256::new_from_slice(&self.pepper).expect("any key length");
        mac.update(token.expose().as_bytes());
        let digest = mac.finalize().into_bytes();
        let matches: bool = digest.as_slice().ct_eq(&key.hash).into();
        if !matches || !key.state.is_active(Utc::now()) {
            return None;
        }
        Some(Caller {
            key_id: token.id().clone(),
            project_id: key.state.project_id,
            scopes: key.state.scopes.clone(),
        })
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

    fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.write().expect("cache lock").clear();
    }

    /// Follows `herald_keys` notifications until cancelled. After a reconnect the whole cache
    /// is dropped, since notifications may have been missed.
    pub async fn follow_changes(self: Arc<Self>, pool: PgPool, cancel: CancellationToken) {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "could not open the key-change listener");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(error) = listener.listen("herald_keys").await {
                tracing::warn!(%error, "LISTEN herald_keys failed");
                continue;
            }
            self.invalidate_all();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    received = listener.try_recv() => match received {
                        Ok(Some(notification)) => self.invalidate(notification.payload()),
                        Ok(None) => self.invalidate_all(),
                        Err(error) => {
                            tracing::warn!(%error, "key-change listener failed");
                            self.invalidate_all();
                            break;
                        }
                    }
                }
            }
        }
    }
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
