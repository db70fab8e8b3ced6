//! The limiter's own bookkeeping: pruning, the daily reset, the day a count belongs to (an
//! answer from Redis included), counts kept through a failed flush or stored once through a
//! lost answer, the count local limits start from after Redis, and the requests allowed alone
//! handed to one call to Redis at a time.

use std::time::Instant;

use chrono::TimeZone;

use super::daily::{next_midnight_after, DayCount};
use super::*;

fn limiter() -> RateLimiter {
    RateLimiter::new(crate::Config::defaults().rate_limits, "")
}

fn count_of(limiter: &RateLimiter, subject: &str, day: NaiveDate) -> Option<DayCount> {
    let daily = limiter.daily.lock().unwrap();
    daily.get(&(subject.to_owned(), day)).copied()
}

#[test]
fn pruning_forgets_only_what_no_longer_limits() {
    let limiter = limiter();
    let start = MINUTE;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        limiter.minute_policy(&format!("ip:{ip}"), "unauthenticated", 60, start, true);
    }
    let today = Utc::now().date_naive();
    let yesterday = today - chrono::Days::new(1);
    limiter.count_daily("key:a");
    let stored = DayCount {
        used: 5,
        own: 5,
        stored: 5,
        elsewhere: 0,
        others_read: true,
        read_again_at: None,
        unshared: 0,
    };
    let pending = DayCount {
        stored: 4,
        ..stored
    };
    {
        let mut daily = limiter.daily.lock().unwrap();
        daily.insert(("key:old".into(), yesterday), stored);
        daily.insert(("key:late".into(), yesterday), pending);
    }
    // One request of 60 per minute pushes the TAT one second ahead.
    limiter.prune_at(start + 500_000_000, today);
    assert_eq!(limiter.tats.lock().unwrap().len(), 2, "still limiting");
    limiter.prune_at(start + 1_000_000_001, today);
    assert!(limiter.tats.lock().unwrap().is_empty());
    assert!(count_of(&limiter, "key:a", today).is_some());
    assert!(count_of(&limiter, "key:old", yesterday).is_none());
    assert!(
        count_of(&limiter, "key:late", yesterday).is_some(),
        "kept until it is stored"
    );
}

#[test]
fn a_count_made_before_midnight_stays_with_its_day() {
    let limiter = limiter();
    let today = Utc::now().date_naive();
    let yesterday = today - chrono::Days::new(1);
    limiter.count_daily_on("key:a", yesterday);
    limiter.count_daily_on("key:a", yesterday);
    limiter.count_daily("key:a");
    let late = count_of(&limiter, "key:a", yesterday).unwrap();
    assert_eq!((late.own, late.stored), (2, 0), "still to be stored");
    assert_eq!(count_of(&limiter, "key:a", today).unwrap().used, 1);
}

#[test]
fn an_answer_about_yesterday_that_comes_after_midnight_stays_with_yesterday() {
    let limiter = limiter();
    let today = Utc::now().date_naive();
    let yesterday = today - chrono::Days::new(1);
    limiter.count_daily("key:a");
    // Asked before midnight, answered after it: Redis counted 9,000 for yesterday.
    limiter.note_used("key:a", yesterday, 9_000);
    limiter.count_shared("key:a", yesterday);
    let late = count_of(&limiter, "key:a", yesterday).unwrap();
    assert_eq!((late.used, late.own), (9_000, 1));
    let now = count_of(&limiter, "key:a", today).unwrap();
    assert_eq!(
        (now.used, now.own),
        (1, 1),
        "today starts from today's count"
    );
}

#[test]
fn requests_allowed_alone_go_to_one_call_to_redis_at_a_time() {
    let limiter = limiter();
    let today = Utc::now().date_naive();
    // Five requests this replica allowed while Redis was away (shared limits configured).
    for _ in 0..5 {
        limiter.count_daily("key:a");
    }
    limiter
        .daily
        .lock()
        .unwrap()
        .get_mut(&("key:a".to_owned(), today))
        .unwrap()
        .unshared = 5;
    let first = limiter.take_known("key:a", today);
    let concurrent = limiter.take_known("key:a", today);
    assert_eq!((first.unshared, concurrent.unshared), (5, 0));
    // The first call found Redis gone: the next one takes them again.
    limiter.unshared_back("key:a", today, first.unshared);
    assert_eq!(limiter.take_known("key:a", today).unshared, 5);
}

#[test]
fn the_daily_reset_is_the_next_midnight_and_retry_after_rounds_up() {
    let at = |h, m, s, ms| {
        chrono::Utc.with_ymd_and_hms(2026, 11, 24, h, m, s).unwrap()
            + chrono::Duration::milliseconds(ms)
    };
    let midnight = chrono::Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
    assert_eq!(next_midnight_after(at(23, 59, 59, 300)), midnight);
    assert_eq!(next_midnight_after(at(0, 0, 0, 0)), midnight);
    assert_eq!(
        next_midnight_after(midnight),
        midnight + chrono::Days::new(1)
    );
    // `Retry-After` counts the whole seconds left, rounded up.
    let day = Applied {
        name: "daily",
        quota: 1,
        window_seconds: 86_400,
        allowed: false,
        remaining: 0,
        reset_at: std::time::SystemTime::now() + Duration::from_millis(1_900),
    };
    assert_eq!(day.reset_seconds(), 2);
    // Rounded up, not to the nearest second.
    let whole = |millis| super::whole_seconds(Duration::from_millis(millis));
    assert_eq!(
        [whole(0), whole(1_000), whole(1_001), whole(1_300)],
        [0, 1, 2, 2]
    );
}

#[tokio::test]
async fn counts_a_failed_flush_could_not_store_are_kept_for_the_next() {
    let limiter = limiter();
    limiter.count_daily("key:a");
    limiter.count_daily("key:a");
    let unreachable = unreachable_pool();
    assert!(limiter.flush(&unreachable).await.is_err());
    let today = Utc::now().date_naive();
    assert!(count_of(&limiter, "key:a", today).unwrap().pending());
}

#[tokio::test]
async fn a_flush_whose_answer_was_lost_stores_the_count_once() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = limiter();
    limiter.count_daily("key:a");
    limiter.count_daily("key:a");
    limiter.flush(&pool).await.unwrap();
    // The commit landed but its answer never came back: the counts look pending again.
    let today = Utc::now().date_naive();
    limiter
        .daily
        .lock()
        .unwrap()
        .values_mut()
        .for_each(|count| count.stored = 0);
    limiter.count_daily("key:a");
    limiter.flush(&pool).await.unwrap();
    let stored: i64 =
        sqlx::query_scalar("SELECT sum(used)::bigint FROM rate_limit_daily WHERE day = $1")
            .bind(today)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 3);
    // A second replica sees all three, and a subject nobody counted starts from nothing.
    assert_eq!(self::limiter().daily_used(&pool, "key:a").await, 3);
    assert_eq!(self::limiter().daily_used(&pool, "key:b").await, 0);
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn asking_what_everyone_counted_leaves_the_stored_count_to_be_read() {
    let (pool, drop_database) = scratch_database().await;
    let today = Utc::now().date_naive();
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) \
         VALUES ('key:a', $1, 'another', 9)",
    )
    .bind(today)
    .execute(&pool)
    .await
    .unwrap();
    let limiter = limiter();
    // As when Redis asks for a seed and then fails: local limits must still start from 9.
    assert_eq!(limiter.everyone_today(&pool, "key:a").await, Some(9));
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 9);
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn counts_of_days_long_past_are_deleted() {
    let (pool, drop_database) = scratch_database().await;
    let today = Utc::now().date_naive();
    for days_ago in [0, 2, 3] {
        let insert = "INSERT INTO rate_limit_daily (subject, day, replica, used) \
                      VALUES ('key:a', $1, 'another', 7)";
        sqlx::query(insert)
            .bind(today - chrono::Days::new(days_ago))
            .execute(&pool)
            .await
            .unwrap();
    }
    assert_eq!(limiter().forget_old_days(&pool).await.unwrap(), 1);
    let left: Vec<NaiveDate> = sqlx::query_scalar("SELECT day FROM rate_limit_daily ORDER BY day")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [today - chrono::Days::new(2), today]);
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn a_stored_count_that_could_not_be_read_is_read_at_the_next_check() {
    let (pool, drop_database) = scratch_database().await;
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) VALUES ('key:a', $1, 'another', 7)",
    )
    .bind(Utc::now().date_naive())
    .execute(&pool)
    .await
    .unwrap();
    let limiter = limiter();
    assert_eq!(limiter.daily_used(&unreachable_pool(), "key:a").await, 0);
    limiter.count_daily("key:a"); // a request decided meanwhile
                                  // Checks right after the failure do not wait on the database again,
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 1);
    // but once the pause is over, the next one reads the stored counts.
    let today = Utc::now().date_naive();
    let key = ("key:a".to_owned(), today);
    limiter
        .daily
        .lock()
        .unwrap()
        .get_mut(&key)
        .unwrap()
        .read_again_at = Some(Instant::now());
    assert_eq!(
        limiter.daily_used(&pool, "key:a").await,
        8,
        "the other replica's count was never read"
    );
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn local_limits_start_from_what_redis_counted_for_everyone() {
    let limiter = limiter();
    limiter.count_daily("key:a");
    let today = Utc::now().date_naive();
    limiter.note_used("key:a", today, 40);
    limiter.note_used("key:a", today, 12);
    let unreachable = unreachable_pool();
    assert_eq!(limiter.daily_used(&unreachable, "key:a").await, 40);
    assert_eq!(
        count_of(&limiter, "key:a", today).unwrap().own,
        1,
        "only this replica's share is stored"
    );
}

#[test]
fn concurrent_requests_never_take_more_than_the_days_quota() {
    let limiter = std::sync::Arc::new(limiter());
    let own = RateLimit {
        read_per_minute: Some(1_000_000),
        daily_quota: Some(100),
        ..RateLimit::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let allowed = runtime.block_on(async {
        let pool = unreachable_pool();
        // The first check reads the (unreachable) stored count; the rest race.
        limiter.check(&pool, "key:a", false, own).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, pool) = (limiter.clone(), pool.clone());
                tokio::spawn(async move {
                    let mut allowed = 0;
                    for _ in 0..200 {
                        let applied = limiter.check(&pool, "key:a", false, own).await;
                        allowed += usize::from(applied.iter().all(|a| a.allowed));
                    }
                    allowed
                })
            })
            .collect();
        let mut allowed = 1;
        for task in tasks {
            allowed += task.await.unwrap();
        }
        allowed
    });
    assert_eq!(allowed, 100);
}

/// A pool whose every query fails: nothing listens on port 9.
fn unreachable_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://herald@127.0.0.1:9/herald")
        .unwrap()
}

/// A new, migrated database on the test cluster (`TEST_DATABASE_URL`), and the future that
/// drops it.
async fn scratch_database() -> (sqlx::PgPool, impl std::future::Future<Output = ()>) {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is not set: run the tests with ./scripts/test");
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let name = format!("herald_unit_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let pool = sqlx::PgPool::connect(&format!("{base}/{name}"))
        .await
        .unwrap();
    herald_store::MIGRATOR.run(&pool).await.unwrap();
    let drop_database = async move {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    };
    (pool, drop_database)
}

/// Where Redis left a policy's TAT, from the script's answers: 3 a minute (one every 20 s).
#[test]
fn the_tat_redis_left_is_read_from_its_answers() {
    let quota = 3;
    // Allowed and counted, 20 s after: the TAT lies 20 s ahead.
    assert_eq!(
        shared::stored_ahead(&[1, 2, 20_000_000], quota, true),
        20_000_000
    );
    // Allowed by the minute policy, refused by the day: nothing spent, one interval less.
    assert_eq!(shared::stored_ahead(&[1, 2, 20_000_000], quota, false), 0);
    // Refused, one more allowed in 5 s: the TAT lies 5 s + a window (60 s) - an interval ahead.
    assert_eq!(
        shared::stored_ahead(&[0, 0, 5_000_000], quota, false),
        45_000_000
    );
}

/// A replica whose limits are shared starts from what Redis last answered it when it decides
/// alone: two of three spent through Redis leave one; its own decisions are not sent back to
/// Redis as spend of its own; and the kept TAT is pruned like its own.
#[test]
fn local_decisions_start_from_the_tat_redis_answered() {
    let limiter = RateLimiter::new(crate::Config::defaults().rate_limits, "redis://127.0.0.1:1");
    let now = MINUTE;
    // Two of three spent: Redis's TAT lies 40 s ahead when the second answer left.
    limiter.keep_shared_tat("key:a", "read", 3, now, 40_000_000);
    assert_eq!(
        limiter.ahead_us("key:a", "read", 3),
        0,
        "not this replica's own spend"
    );
    // An older answer never moves it back.
    limiter.keep_shared_tat("key:a", "read", 3, now, 20_000_000);
    let last = limiter.minute_policy("key:a", "read", 3, now, true);
    assert!(last.allowed);
    assert_eq!(last.remaining, 0);
    assert!(!limiter.minute_policy("key:a", "read", 3, now, true).allowed);
    // Another caller starts full.
    assert_eq!(
        limiter
            .minute_policy("key:b", "read", 3, now, true)
            .remaining,
        2
    );
    limiter.prune_at(now + 60_000_000_001, Utc::now().date_naive());
    assert!(limiter.shared_tats.lock().unwrap().is_empty());
}

#[test]
fn keys_of_one_budget_with_different_quotas_never_free_what_was_spent() {
    // The keys of a rotation spend one budget, each under its own limit: 100 and 10 a minute.
    let limiter = limiter();
    let (subject, now) = ("key:first", MINUTE);
    let allowed = |quota, at| {
        (0..200)
            .take_while(|_| {
                limiter
                    .minute_policy(subject, "read", quota, at, true)
                    .allowed
            })
            .count()
    };
    assert_eq!(allowed(100, now), 100);
    // The other key is refused, as long as the first key's spending owes more than it allows,
    // and says when that ends (5.4 s under 100 is 9 of 10, room for one more)...
    let refused = limiter.minute_policy(subject, "read", 10, now, true);
    assert!(!refused.allowed);
    let wait = refused.reset_at.duration_since(SystemTime::now()).unwrap();
    assert!(wait > Duration::from_secs(53), "{wait:?}");
    // ...and its refusal leaves nothing for the first key to start again from.
    assert_eq!(allowed(100, now), 0);
    assert_eq!(allowed(100, now + MINUTE / 100 * 3), 3);
    let _ = limiter.minute_policy(subject, "read", 10, now + MINUTE / 100 * 3, true);
    assert_eq!(allowed(100, now + MINUTE / 100 * 4), 1);
}

#[tokio::test]
async fn a_request_is_decided_at_the_time_of_the_decision_not_of_its_arrival() {
    // 600 a minute: one comes back every 100 ms; reading the day's count waits 200 ms.
    let config = RateLimitsConfig {
        read_per_minute: 600,
        ..crate::Config::defaults().rate_limits
    };
    let limiter = RateLimiter::new(config, "");
    let slow = unreachable_pool();
    let first = limiter
        .check(&slow, "key:a", false, RateLimit::default())
        .await;
    assert_eq!(first[0].remaining, 599);
    // Right after: the first request's slot has not come back. Decided as of its arrival, it
    // would have, 200 ms before this one.
    let second = limiter
        .check(&slow, "key:a", false, RateLimit::default())
        .await;
    assert_eq!(second[0].remaining, 598);
}

#[tokio::test]
async fn what_other_replicas_store_after_the_first_read_is_counted_too() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = limiter();
    // First seen here when no other replica had counted anything; then two requests here.
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 0);
    limiter.count_daily("key:a");
    limiter.count_daily("key:a");
    // Meanwhile another replica stores 40 of the day's requests.
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) VALUES ('key:a', $1, 'another', 40)",
    )
    .bind(Utc::now().date_naive())
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        limiter.daily_used(&pool, "key:a").await,
        2,
        "read once a day"
    );
    limiter.refresh_others(&pool).await.unwrap();
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 42);
    // Refreshed again, nothing is counted twice.
    limiter.refresh_others(&pool).await.unwrap();
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 42);
    pool.close().await;
    drop_database.await;
}

#[test]
fn a_tat_redis_answered_under_a_higher_quota_is_owed_whole_under_a_lower_one() {
    let limiter = RateLimiter::new(crate::Config::defaults().rate_limits, "redis://127.0.0.1:1");
    let now = MINUTE;
    // Redis last answered the first key of a rotation: its 100 a minute spent, 60 s ahead.
    limiter.keep_shared_tat("key:a", "read", 100, now, 60_000_000);
    // Decided here while Redis does not answer, for the successor at 10 a minute: refused
    // until the spending fits (5.4 s of it left under 100, 54.6 s from now), and said so.
    let refused = limiter.minute_policy("key:a", "read", 10, now, true);
    assert!(!refused.allowed);
    let wait = refused.reset_at.duration_since(SystemTime::now()).unwrap();
    assert!(wait > Duration::from_secs(53), "{wait:?}");
    // Nothing of the spending comes back for the first key.
    assert!(
        !limiter
            .minute_policy("key:a", "read", 100, now, true)
            .allowed
    );
}

/// Stores `used` as another replica's count of `key:a` today.
async fn another_replica_stored(pool: &PgPool, used: i64) {
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) VALUES ('key:a', $1, 'another', $2) \
         ON CONFLICT (subject, day, replica) DO UPDATE SET used = excluded.used",
    )
    .bind(Utc::now().date_naive())
    .bind(used)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn with_redis_the_other_replicas_stored_counts_count_for_decisions_made_here_only() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = RateLimiter::new(crate::Config::defaults().rate_limits, "redis://127.0.0.1:1");
    let today = Utc::now().date_naive();
    // Redis last told this replica 10; the subject then moved to another replica, which has
    // stored 40 by the time Redis stops answering here.
    limiter.note_used("key:a", today, 10);
    another_replica_stored(&pool, 40).await;
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 40);
    another_replica_stored(&pool, 55).await;
    limiter.refresh_others(&pool).await.unwrap();
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 55);
    // What Redis is told leaves them out: they are in its count, or will be when that replica
    // adds what it allowed alone (told here too, they would count twice).
    assert_eq!(limiter.take_known("key:a", today).used, 10);
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn a_decision_made_here_counts_what_the_others_stored() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = limiter();
    another_replica_stored(&pool, 2).await;
    let own = RateLimit {
        daily_quota: Some(3),
        ..RateLimit::default()
    };
    let last = limiter.check(&pool, "key:a", false, own).await;
    assert!(last[1].allowed && last[1].remaining == 0, "{last:?}");
    let over = limiter.check(&pool, "key:a", false, own).await;
    assert!(!over[1].allowed, "{over:?}");
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn a_usage_report_leaves_the_counts_decisions_start_from() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = limiter();
    another_replica_stored(&pool, 5).await;
    assert_eq!(limiter.used_today(&pool, "key:a").await, 5);
    assert!(count_of(&limiter, "key:a", Utc::now().date_naive()).is_none());
    // The first decision made here, later, reads what the others have stored by then.
    another_replica_stored(&pool, 9_000).await;
    assert_eq!(limiter.daily_used(&pool, "key:a").await, 9_000);
    pool.close().await;
    drop_database.await;
}

#[tokio::test]
async fn a_flush_cut_short_keeps_its_counts_for_the_next() {
    let (pool, drop_database) = scratch_database().await;
    let limiter = limiter();
    limiter.count_daily("key:a");
    let today = Utc::now().date_naive();
    // The table is locked: the flush waits, and is given up (as the flusher gives up a
    // statement after `STATEMENT_TIME`).
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rate_limit_daily IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(300), limiter.flush(&pool)).await;
    assert!(cut.is_err(), "the flush waited on the lock");
    assert!(count_of(&limiter, "key:a", today).unwrap().pending());
    lock.commit().await.unwrap();
    limiter.flush(&pool).await.unwrap();
    assert!(!count_of(&limiter, "key:a", today).unwrap().pending());
    let stored: i64 = sqlx::query_scalar("SELECT sum(used)::bigint FROM rate_limit_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "stored once, however often the statement ran");
    pool.close().await;
    drop_database.await;
}
