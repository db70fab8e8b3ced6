//! Keeps every replica's credential caches current: follows `herald_keys` and `herald_users`
//! (sent by the events trigger inside the appending transaction) and drops the changed entry.
//! After a reconnect both caches are cleared, since notifications may have been missed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{KeyVerifier, UserDirectory};

pub async fn follow(
    keys: Arc<KeyVerifier>,
    users: Arc<UserDirectory>,
    pool: PgPool,
    cancel: CancellationToken,
) {
    let forget_everything = || {
        keys.invalidate_all();
        users.invalidate_all();
    };
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(["herald_keys", "herald_users"]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "could not listen for credential changes");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        forget_everything();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match notification.channel() {
                        "herald_users" => users.invalidate(notification.payload()),
                        _ => keys.invalidate(notification.payload()),
                    },
                    Ok(None) => forget_everything(),
                    Err(error) => {
                        tracing::warn!(%error, "credential-change listener failed");
                        forget_everything();
                        break;
                    }
                }
            }
        }
    }
}
