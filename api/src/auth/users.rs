//! The user directory: logged-in users' state (sessions and project roles) cached in memory,
//! folded from the user's events on a miss, and dropped when a user event is announced on
//! `herald_users` (or at once, in the replica that appended it). A session token is checked
//! here on every request, so a logout or a password change takes effect on the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use herald_domain::user::{User, UserState};
use herald_domain::UserId;
use herald_store::AggregateStore;
use sqlx::PgPool;

use super::session::SessionKeys;
use super::Caller;

pub struct UserDirectory {
    store: AggregateStore<User>,
    pub keys: SessionKeys,
    cache: RwLock<HashMap<UserId, Arc<UserState>>>,
    generation: AtomicU64,
}

impl UserDirectory {
    pub fn new(pool: PgPool, secret: &[u8]) -> Self {
        Self {
            store: AggregateStore::new(pool),
            keys: SessionKeys::derive(secret),
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The caller behind a session token, if the token is ours, unexpired, and its session is
    /// still open. Store failures are logged and refused.
    pub async fn verify(&self, token: &str) -> Option<Caller> {
        let now = Utc::now();
        let claims = self.keys.check(token, now)?;
        let user = self.get(claims.sub).await?;
        user.session_active(claims.sid, now)
            .then(|| Caller::for_user(claims.sub, claims.sid, &user))
    }

    /// The user's current state (cached).
    pub async fn get(&self, id: UserId) -> Option<Arc<UserState>> {
        if let Some(user) = self.cache.read().expect("user cache lock").get(&id) {
            return Some(user.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let user = match self.store.load(&id.to_string()).await {
            Ok((user, _)) => Arc::new(user.state()?.clone()),
            Err(error) => {
                tracing::error!(user.id = %id, %error, "could not load a user");
                return None;
            }
        };
        let mut cache = self.cache.write().expect("user cache lock");
        if self.generation.load(Ordering::SeqCst) == generation {
            cache.insert(id, user.clone());
        }
        Some(user)
    }

    /// Forgets one user (a user event was appended) so the next request reloads it.
    pub fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(id) = id.parse::<UserId>() {
            self.cache.write().expect("user cache lock").remove(&id);
        }
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.write().expect("user cache lock").clear();
    }
}
