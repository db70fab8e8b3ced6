//! The shared daily count through Redis outages and losses. Requests a replica allowed on its
//! own while Redis was unreachable still count once Redis answers again: the shared count
//! never stays below what the replica knows of (Redis is cut off and brought back through a TCP
//! relay in front of a real Redis, so it keeps its counters, as after a network partition). And
//! a day's count Redis lost is not started again from stored counts that could not be read.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::shared_limits::{a_day_redis_lost, redis_connection, redis_url, shared, until_shared};
use crate::support::TestApp;

/// Relays TCP connections to `target` until cut: cutting ends every relayed connection and
/// refuses new ones until it is mended.
struct Relay {
    port: u16,
    cut: Arc<watch::Sender<bool>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(watch::channel(false).0);
        let state = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: refused while cut
                }
                let target = target.clone();
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn rate_limits_state(app: &TestApp) -> Value {
    let health: Value = app
        .client
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["rate_limits"].clone()
}

#[tokio::test]
async fn requests_allowed_while_redis_was_unreachable_count_once_it_answers_again() {
    let redis = redis_url();
    let target = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let relay = Relay::start(target).await;
    let through_relay = format!("redis://127.0.0.1:{}", relay.port);
    let app = TestApp::spawn_with(|c| shared(c, &through_relay)).await;
    until_shared(&app.base_url).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let remaining = |response: &reqwest::Response| {
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    for _ in 0..2 {
        remaining(&app.get("/api/v1/jobs", &key).await);
    }

    relay.set_cut(true);
    for _ in 0..5 {
        remaining(&app.get("/api/v1/jobs", &key).await);
    }
    assert_eq!(
        rate_limits_state(&app).await,
        "shared_unavailable_using_local"
    );

    relay.set_cut(false);
    // The server tries Redis again a second after it last failed, reconnecting meanwhile:
    // another key's reads bring it back without spending this key's day.
    let (_, waker) = app.project_with_key(&["jobs:read"]).await;
    for attempt in 0.. {
        assert!(attempt < 20, "Redis was never used again");
        tokio::time::sleep(Duration::from_millis(300)).await;
        remaining(&app.get("/api/v1/jobs", &waker).await);
        if rate_limits_state(&app).await == "shared" {
            break;
        }
    }
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        remaining(&next),
        25 - 8,
        "2 counted in Redis, 5 on this replica alone, and this one"
    );
    assert_eq!(rate_limits_state(&app).await, "shared");
}

#[tokio::test]
async fn a_day_redis_lost_is_not_started_again_from_counts_that_could_not_be_read() {
    let redis = redis_url();
    let app = TestApp::spawn_with(|c| shared(c, &redis)).await;
    let (key, day_key) = a_day_redis_lost(&app, &redis).await;
    // The stored counts cannot be read for a while.
    sqlx::query("ALTER TABLE rate_limit_daily RENAME TO rate_limit_daily_away")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    let seeded: Option<i64> = redis::cmd("GET")
        .arg(&day_key)
        .query_async(&mut redis_connection(&redis).await)
        .await
        .unwrap();
    assert_eq!(
        seeded, None,
        "Redis was not given a count missing the other replica's"
    );

    sqlx::query("ALTER TABLE rate_limit_daily_away RENAME TO rate_limit_daily")
        .execute(&app.pool)
        .await
        .unwrap();
    app.state.rate_limiter.flush(&app.pool).await.unwrap();
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(
        next.headers()["x-ratelimit-remaining"],
        (25 - 14).to_string().as_str(),
        "3 here and 10 elsewhere were used before this one"
    );
}
