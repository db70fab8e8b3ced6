//! The limiter's own bookkeeping: pruning, the daily reset, counts kept through a failed
//! flush, and the count local limits start from after Redis.

use chrono::TimeZone;

use super::daily::seconds_to_midnight_from;
use super::*;

#[test]
fn pruning_forgets_only_what_no_longer_limits() {
    let config = crate::Config::defaults().rate_limits;
    let limiter = RateLimiter::new(config, "");
    let start = MINUTE;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        limiter.minute_policy(&format!("ip:{ip}"), "unauthenticated", 60, start, true);
    }
    let today = Utc::now().date_naive();
    limiter.count_daily("key:a");
    limiter
        .daily
        .lock()
        .unwrap()
        .insert("key:old".into(), (today - chrono::Days::new(1), 5, 0));
    // One request of 60 per minute pushes the TAT one second ahead.
    limiter.prune_at(start + 500_000_000, today);
    assert_eq!(limiter.tats.lock().unwrap().len(), 2, "still limiting");
    limiter.prune_at(start + 1_000_000_001, today);
    assert!(limiter.tats.lock().unwrap().is_empty());
    let daily = limiter.daily.lock().unwrap();
    assert!(daily.contains_key("key:a") && !daily.contains_key("key:old"));
}

#[test]
fn the_daily_reset_is_rounded_up_to_the_next_whole_second() {
    let at = |h, m, s, ms| {
        chrono::Utc.with_ymd_and_hms(2026, 11, 24, h, m, s).unwrap()
            + chrono::Duration::milliseconds(ms)
    };
    assert_eq!(seconds_to_midnight_from(at(23, 59, 59, 300)), 1);
    assert_eq!(seconds_to_midnight_from(at(23, 59, 58, 999)), 2);
    assert_eq!(seconds_to_midnight_from(at(0, 0, 0, 0)), 86_400);
}

#[tokio::test]
async fn counts_a_failed_flush_could_not_store_are_kept_for_the_next() {
    let limiter = RateLimiter::new(crate::Config::defaults().rate_limits, "");
    limiter.count_daily("key:a");
    limiter.count_daily("key:a");
    let unreachable = unreachable_pool();
    assert!(limiter.flush(&unreachable).await.is_err());
    assert_eq!(limiter.unflushed("key:a"), 2);
}

#[tokio::test]
async fn local_limits_start_from_what_redis_counted_for_everyone() {
    let limiter = RateLimiter::new(crate::Config::defaults().rate_limits, "");
    limiter.count_daily("key:a");
    limiter.note_used("key:a", 40);
    limiter.note_used("key:a", 12);
    let unreachable = unreachable_pool();
    assert_eq!(limiter.daily_used(&unreachable, "key:a").await, 40);
    assert_eq!(
        limiter.unflushed("key:a"),
        1,
        "only this replica's share is flushed"
    );
}

/// A pool whose every query fails: nothing listens on port 9.
fn unreachable_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://herald@127.0.0.1:9/herald")
        .unwrap()
}
