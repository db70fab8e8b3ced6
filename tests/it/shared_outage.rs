//! The shared daily count through Redis outages and losses. Requests a replica allowed on its
//! own while Redis was unreachable still count once Redis answers again: the shared count
//! never stays below what the replica knows of (Redis is cut off and brought back through a TCP
//! relay in front of a real Redis, so it keeps its counters, as after a network partition),
//! and only once when several requests reach Redis together as it comes back. A
//! replica sees the outage and the recovery with no request to notice them, and a request that
//! finds its connection dropped is still decided by Redis. And a day's count Redis lost is not
//! started again from stored counts that could not be read.

use std::sync::Arc;
use std::time::Duration;

use herald_api::Config;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::shared_limits::{a_day_redis_lost, redis_connection, redis_url, shared, until_shared};
use crate::support::TestApp;

/// Relays TCP connections to `target` until cut: cutting ends every relayed connection and
/// refuses new ones until it is mended; dropping ends the relayed connections only.
pub(crate) struct Relay {
    port: u16,
    cut: Arc<watch::Sender<bool>>,
    drops: Arc<watch::Sender<u64>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(watch::channel(false).0);
        let drops = Arc::new(watch::channel(0).0);
        let (state, dropping) = (cut.clone(), drops.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: refused while cut
                }
                let target = target.clone();
                let mut cut = state.subscribe();
                let mut dropped = dropping.subscribe();
                dropped.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                        _ = dropped.changed() => {}
                    }
                });
            }
        });
        Self { port, cut, drops }
    }

    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// Ends every relayed connection, as a Redis that restarted would; new ones go through.
    fn drop_connections(&self) {
        self.drops.send_modify(|n| *n += 1);
    }
}

/// `app`'s limits shared through a relay in front of the tests' Redis.
pub(crate) async fn behind_relay() -> (Relay, TestApp) {
    behind_relay_with(|_| {}).await
}

/// As `behind_relay`, with the configuration adjusted.
async fn behind_relay_with(adjust: impl FnOnce(&mut Config)) -> (Relay, TestApp) {
    let redis = redis_url();
    let target = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let relay = Relay::start(target).await;
    let through_relay = format!("redis://127.0.0.1:{}", relay.port);
    let app = TestApp::spawn_with(|c| {
        shared(c, &through_relay);
        adjust(c);
    })
    .await;
    until_shared(&app.base_url).await;
    (relay, app)
}

/// Polls `/health/detailed`, sending no API request, until it reports `state` (10 s at most).
pub(crate) async fn until_state(app: &TestApp, state: &str) {
    for _ in 0..50 {
        if rate_limits_state(app).await == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the rate limits never became {state}");
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
    let (relay, app) = behind_relay().await;
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

    // The server asks Redis every second, so it sees the outage with no request at all.
    relay.set_cut(true);
    until_state(&app, "shared_unavailable_using_local").await;
    for _ in 0..5 {
        remaining(&app.get("/api/v1/jobs", &key).await);
    }

    // And it sees Redis answer again the same way, so it is back on Redis before any request.
    relay.set_cut(false);
    until_state(&app, "shared").await;
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        remaining(&next),
        25 - 8,
        "2 counted in Redis, 5 on this replica alone, and this one"
    );
    assert_eq!(rate_limits_state(&app).await, "shared");
}

#[tokio::test]
async fn concurrent_requests_after_an_outage_add_what_was_allowed_alone_once() {
    let (relay, app) = behind_relay().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    // Redis holds the day's count when it goes away.
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    relay.set_cut(true);
    until_state(&app, "shared_unavailable_using_local").await;
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    relay.set_cut(false);
    until_state(&app, "shared").await;

    // Each of these calls Redis while the others are in flight: only one of them may add the
    // five requests allowed alone.
    let calls = (0..8).map(|_| app.get("/api/v1/jobs", &key));
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(
        next.headers()["x-ratelimit-remaining"],
        (25 - 2 - 5 - 8 - 1).to_string().as_str(),
        "two counted in Redis, five allowed alone, eight at once, and this one"
    );
}

#[tokio::test]
async fn replicas_cut_off_together_each_add_what_they_allowed() {
    let (relay, app) = behind_relay().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    relay.set_cut(true);
    until_state(&app, "shared_unavailable_using_local").await;
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    // Meanwhile another replica, still reaching Redis (or cut off too and back first), had
    // three more requests counted there.
    let id = key.split('_').nth(2).unwrap();
    let day_key = format!(
        "herald:rl:key:{id}:daily:{}",
        chrono::Utc::now().date_naive()
    );
    let theirs: i64 = redis::cmd("INCRBY")
        .arg(&day_key)
        .arg(3)
        .query_async(&mut redis_connection(&redis_url()).await)
        .await
        .unwrap();
    assert_eq!(theirs, 5);

    relay.set_cut(false);
    until_state(&app, "shared").await;
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        next.headers()["x-ratelimit-remaining"],
        (25 - 11).to_string().as_str(),
        "2 and 3 counted in Redis, 5 on this replica alone, and this one: none lost"
    );
    // Added once: the next request counts one more, not the five again.
    let after = app.get("/api/v1/jobs", &key).await;
    assert_eq!(after.headers()["x-ratelimit-remaining"], "13");
}

#[tokio::test]
async fn a_minute_budget_spent_while_redis_was_away_is_not_granted_again() {
    let (relay, app) = behind_relay_with(|c| c.rate_limits.read_per_minute = 3).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    relay.set_cut(true);
    until_state(&app, "shared_unavailable_using_local").await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    let spent = app.get("/api/v1/jobs", &key).await;
    assert_eq!(spent.status(), StatusCode::TOO_MANY_REQUESTS);

    // Redis never saw those three; this replica tells it where its own budget stands.
    relay.set_cut(false);
    until_state(&app, "shared").await;
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(next.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rate_limits_state(&app).await, "shared");
}

/// The other way round: a replica that falls back to its own limits starts from the minute
/// budget Redis last told it was spent, not from a full one.
#[tokio::test]
async fn a_minute_budget_spent_through_redis_is_not_granted_again_when_it_goes_away() {
    let (relay, app) = behind_relay_with(|c| c.rate_limits.read_per_minute = 3).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for remaining in ["2", "1"] {
        let read = app.get("/api/v1/jobs", &key).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.headers()["x-ratelimit-remaining"], remaining);
    }
    relay.set_cut(true);
    until_state(&app, "shared_unavailable_using_local").await;
    let last = app.get("/api/v1/jobs", &key).await;
    assert_eq!(last.status(), StatusCode::OK);
    assert_eq!(last.headers()["x-ratelimit-remaining"], "0");
    let spent = app.get("/api/v1/jobs", &key).await;
    assert_eq!(spent.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_request_that_finds_its_connection_dropped_is_still_decided_by_redis() {
    let (relay, app) = behind_relay().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    // Redis restarting ends the connection; the request that finds it ended is sent again on
    // a new one rather than decided by this replica alone, so Redis counts it.
    relay.drop_connections();
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(next.status(), StatusCode::OK);
    let id = key.split('_').nth(2).unwrap();
    let day_key = format!(
        "herald:rl:key:{id}:daily:{}",
        chrono::Utc::now().date_naive()
    );
    let counted: Option<i64> = redis::cmd("GET")
        .arg(&day_key)
        .query_async(&mut redis_connection(&redis_url()).await)
        .await
        .unwrap();
    assert_eq!(counted, Some(3));
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
