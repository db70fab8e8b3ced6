//! The daily quota: an exact count per subject and UTC day, kept in memory and stored in
//! PostgreSQL (`rate_limit_daily`) every two seconds as one row per subject, day and replica.
//! Each replica (each process) writes its own count as an absolute number, so a flush retried
//! after a lost answer cannot count twice, a count is never missing while a flush is in flight,
//! and yesterday's last requests are still stored after midnight. The quota is the sum over
//! replicas: it is read back the first time a replica decides on a subject in a day, so it
//! survives restarts, then kept up with what the others store (`refresh_others`, every two
//! seconds), so a subject moving between replicas is held to the day's quota (with Redis, for
//! the decisions made here while Redis does not answer); and it seeds Redis when Redis has no
//! count.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;

use super::shared::{Known, Seed};
use super::{Applied, RateLimiter};

/// One subject's use of one UTC day, as this replica knows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct DayCount {
    /// Every replica's requests as Redis last counted them (with Redis), plus the requests this
    /// replica allowed since; without Redis, this replica's. What a call to Redis says this
    /// replica knows of (`take_known`).
    pub(super) used: u64,
    /// The requests this replica counted.
    pub(super) own: u64,
    /// `own` as last stored in PostgreSQL.
    pub(super) stored: u64,
    /// The other replicas' counts as they last stored them, once read (`others_read`) and then
    /// every two seconds: decisions made here count them (`effective`), but they are never
    /// told to Redis, whose count holds them already, or will once those replicas add what
    /// they allowed while it did not answer (told here too, they would count twice).
    pub(super) elsewhere: u64,
    /// Whether `elsewhere` has been read today.
    pub(super) others_read: bool,
    /// After a failed read of those counts: when a check may try again.
    pub(super) read_again_at: Option<Instant>,
    /// Requests this replica allowed on its own (limits shared, Redis not answering) that Redis
    /// has not counted yet: added to Redis's count when it answers again.
    pub(super) unshared: u64,
}

impl DayCount {
    pub(super) fn pending(&self) -> bool {
        self.own > self.stored
    }

    /// What a decision made here goes by: every replica's requests as far as this one knows,
    /// from Redis's last count or from what the others stored, whichever is further.
    pub(super) fn effective(&self) -> u64 {
        self.used.max(self.elsewhere + self.own)
    }
}

/// Rows of `rate_limit_daily` older than this many days are deleted (usage reads only today).
const KEEP_DAYS: u64 = 2;

/// How long after a failed read of the stored counts a check tries again (meanwhile checks
/// do not wait on a database that is failing).
const READ_AGAIN_AFTER: Duration = Duration::from_secs(5);

impl RateLimiter {
    /// Decides the daily policy on `count` and counts the request when it and `minute` (asked
    /// with `commit` when the day allows it) both allow it, all under the one lock on the counts,
    /// so concurrent requests cannot both take the last request of the day.
    pub(super) fn decide_day(
        &self,
        subject: &str,
        quota: u64,
        minute: impl FnOnce(bool) -> Applied,
    ) -> (Applied, Applied) {
        let today = Utc::now().date_naive();
        let mut daily = self.daily.lock().expect("lock");
        let count = daily.entry((subject.to_owned(), today)).or_default();
        let allowed = count.effective() < quota;
        let minute = minute(allowed);
        if allowed && minute.allowed {
            count.used += 1;
            count.own += 1;
            count.unshared += u64::from(self.shared.is_some());
        }
        let day = Applied {
            name: "daily",
            quota,
            window_seconds: 86_400,
            allowed,
            remaining: quota.saturating_sub(count.effective()),
            reset_at: next_midnight(),
        };
        (minute, day)
    }

    fn with_day<R>(&self, subject: &str, day: NaiveDate, f: impl FnOnce(&mut DayCount) -> R) -> R {
        let mut daily = self.daily.lock().expect("lock");
        f(daily.entry((subject.to_owned(), day)).or_default())
    }

    /// Raises this replica's count for `day` to `used` (what Redis counted for every replica
    /// that day), so its own limits start from there if Redis fails. The day is the one the
    /// call asked Redis about, not the clock's when the answer came: one asked before midnight
    /// and answered after it must not start the new day from yesterday's count. (The others'
    /// stored counts are still read at the first decision made here: the subject may have
    /// moved to another replica since Redis last answered this one about it.)
    pub(super) fn note_used(&self, subject: &str, day: NaiveDate, used: u64) {
        self.with_day(subject, day, |count| count.used = count.used.max(used));
    }

    /// What each of the other replicas (this process's predecessors included) has stored for
    /// the day.
    async fn others_shares(
        &self,
        pool: &PgPool,
        subject: &str,
        day: NaiveDate,
    ) -> sqlx::Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT replica, used FROM rate_limit_daily \
             WHERE subject = $1 AND day = $2 AND replica <> $3",
        )
        .bind(subject)
        .bind(day)
        .bind(&self.replica)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(r, n)| (r, n.max(0) as u64))
            .collect())
    }

    /// What the other replicas have stored for the day, together.
    async fn others_stored(
        &self,
        pool: &PgPool,
        subject: &str,
        day: NaiveDate,
    ) -> sqlx::Result<u64> {
        let shares = self.others_shares(pool, subject, day).await?;
        Ok(shares.iter().map(|(_, n)| n).sum())
    }

    /// Every replica's requests of today as stored, with this replica's own count (the other
    /// replicas' last two seconds may be missing), and never less than this replica knows of;
    /// `None` when the stored counts could not be read.
    pub(super) async fn everyone_today(&self, pool: &PgPool, subject: &str) -> Option<u64> {
        self.shares_on(pool, subject, Utc::now().date_naive())
            .await
            .map(|seed| seed.total)
    }

    /// `everyone_today` for `day`, with each replica's share in it: what a day's count Redis
    /// lost starts again from, so that a replica adding what it allowed on its own meanwhile
    /// can tell how much of that its stored share already brought in.
    pub(super) async fn shares_on(
        &self,
        pool: &PgPool,
        subject: &str,
        today: NaiveDate,
    ) -> Option<Seed> {
        let mut shares = match self.others_shares(pool, subject, today).await {
            Ok(shares) => shares,
            Err(error) => {
                tracing::warn!(%error, "could not read the stored daily counts; deciding locally");
                return None;
            }
        };
        // A lookup: no entry is made here (the decisions make them).
        let key = (subject.to_owned(), today);
        let (own, used) = self
            .daily
            .lock()
            .expect("lock")
            .get(&key)
            .map_or((0, 0), |c| (c.own, c.used));
        let others: u64 = shares.iter().map(|(_, n)| n).sum();
        shares.push((self.replica.clone(), own));
        Some(Seed {
            total: (others + own).max(used),
            shares,
        })
    }

    /// The requests of `day` this replica knows `subject` made, for a call to Redis: what Redis
    /// last counted, plus what this replica allowed on its own since, which Redis has not
    /// counted (0 and 0 before it has seen the subject that day). The latter are taken out
    /// while the call is in flight, so that concurrent calls do not each add them again; the
    /// caller gives them back (`unshared_back`) when Redis does not answer. The minute policy's
    /// part is left for the caller.
    pub(super) fn take_known(&self, subject: &str, day: NaiveDate) -> Known {
        let key = (subject.to_owned(), day);
        self.daily
            .lock()
            .expect("lock")
            .get_mut(&key)
            .map_or(Known::default(), |c| Known {
                used: c.used,
                unshared: std::mem::take(&mut c.unshared),
                own: c.own,
                ..Known::default()
            })
    }

    /// Redis did not count the `unshared` requests a call took to it (`take_known`): they are
    /// still this replica's own, for the next call to add.
    pub(super) fn unshared_back(&self, subject: &str, day: NaiveDate, unshared: u64) {
        if unshared > 0 {
            self.with_day(subject, day, |count| count.unshared += unshared);
        }
    }

    /// Requests `subject` made today on every replica, as far as this one can tell: what the
    /// others have stored plus its own count, or the count it decides on if that is higher. A
    /// report's read: it leaves the counts decisions start from as they were.
    pub async fn used_today(&self, pool: &PgPool, subject: &str) -> u64 {
        let key = (subject.to_owned(), Utc::now().date_naive());
        let decided = self
            .daily
            .lock()
            .expect("lock")
            .get(&key)
            .map_or(0, DayCount::effective);
        decided.max(self.everyone_today(pool, subject).await.unwrap_or(0))
    }

    /// Requests counted against `subject`'s daily quota today, for a decision made here: this
    /// replica's count, which counts what the other replicas stored, read the first time a
    /// decision is made here that day (and again, every `READ_AGAIN_AFTER` at most, until that
    /// read succeeds: a database error is not taken for a fresh day), then every two seconds
    /// by `refresh_others`.
    pub async fn daily_used(&self, pool: &PgPool, subject: &str) -> u64 {
        let today = Utc::now().date_naive();
        let key = (subject.to_owned(), today);
        if let Some(count) = self.daily.lock().expect("lock").get(&key) {
            let waiting = count.read_again_at.is_some_and(|at| Instant::now() < at);
            if count.others_read || waiting {
                return count.effective();
            }
        }
        match self.others_stored(pool, subject, today).await {
            Ok(others) => self.with_day(subject, today, |count| {
                count.elsewhere = count.elsewhere.max(others);
                count.others_read = true;
                count.effective()
            }),
            Err(error) => {
                tracing::warn!(%error, "could not read the stored daily counts; will try again");
                self.with_day(subject, today, |count| {
                    count.read_again_at = Some(Instant::now() + READ_AGAIN_AFTER);
                    count.effective()
                })
            }
        }
    }

    /// Counts a request Redis allowed as this replica's own (to be stored). `used` is left to
    /// what Redis answers (`note_used`): counted here as well, a reply that arrives after a
    /// later one would count twice, and the count Redis is told this replica knows of would
    /// run ahead of the true one.
    pub(super) fn count_shared(&self, subject: &str, day: NaiveDate) {
        self.with_day(subject, day, |count| count.own += 1);
    }

    #[cfg(test)]
    pub(super) fn count_daily(&self, subject: &str) {
        self.count_daily_on(subject, Utc::now().date_naive());
    }

    #[cfg(test)]
    pub(super) fn count_daily_on(&self, subject: &str, day: NaiveDate) {
        self.with_day(subject, day, |count| {
            count.used += 1;
            count.own += 1;
        });
    }

    /// Stores this replica's counts that changed, in one statement; when it fails they stay
    /// pending for the next flush, and writing them again is harmless.
    pub async fn flush(&self, pool: &PgPool) -> sqlx::Result<()> {
        let pending: Vec<(String, NaiveDate, i64)> = {
            let daily = self.daily.lock().expect("lock");
            daily
                .iter()
                .filter(|(_, count)| count.pending())
                .map(|((subject, day), count)| (subject.clone(), *day, count.own as i64))
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let subjects: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        let days: Vec<NaiveDate> = pending.iter().map(|p| p.1).collect();
        let counts: Vec<i64> = pending.iter().map(|p| p.2).collect();
        sqlx::query(
            "INSERT INTO rate_limit_daily (subject, day, replica, used) \
             SELECT subject, day, $4, used \
             FROM unnest($1::text[], $2::date[], $3::bigint[]) AS t(subject, day, used) \
             ON CONFLICT (subject, day, replica) \
             DO UPDATE SET used = greatest(rate_limit_daily.used, excluded.used)",
        )
        .bind(&subjects)
        .bind(&days)
        .bind(&counts)
        .bind(&self.replica)
        .execute(pool)
        .await?;
        let mut daily = self.daily.lock().expect("lock");
        for (subject, day, own) in pending {
            if let Some(count) = daily.get_mut(&(subject, day)) {
                count.stored = count.stored.max(own as u64);
            }
        }
        Ok(())
    }

    /// Reads again what the other replicas have stored today for each subject this replica has
    /// read them for (`elsewhere`): the others' requests since the first read are not granted
    /// again when a subject moves here (a replica redeployed, a balancer's choice), with Redis
    /// or without it, while it does not answer. With Redis these counts only serve decisions
    /// made here; what this replica tells Redis leaves them out.
    pub async fn refresh_others(&self, pool: &PgPool) -> sqlx::Result<()> {
        let today = Utc::now().date_naive();
        let subjects: Vec<String> = {
            let daily = self.daily.lock().expect("lock");
            daily
                .iter()
                .filter(|((_, day), count)| *day == today && count.others_read)
                .map(|((subject, _), _)| subject.clone())
                .collect()
        };
        if subjects.is_empty() {
            return Ok(());
        }
        let others: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subject, sum(used)::bigint FROM rate_limit_daily \
             WHERE day = $1 AND replica <> $2 AND subject = ANY($3) GROUP BY subject",
        )
        .bind(today)
        .bind(&self.replica)
        .bind(&subjects)
        .fetch_all(pool)
        .await?;
        let mut daily = self.daily.lock().expect("lock");
        for (subject, stored) in others {
            if let Some(count) = daily.get_mut(&(subject, today)) {
                count.elsewhere = count.elsewhere.max(stored.max(0) as u64);
            }
        }
        Ok(())
    }

    /// Deletes the stored counts of days long past.
    pub async fn forget_old_days(&self, pool: &PgPool) -> sqlx::Result<u64> {
        let cutoff = Utc::now().date_naive() - chrono::Days::new(KEEP_DAYS);
        let deleted = sqlx::query("DELETE FROM rate_limit_daily WHERE day < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    /// Flushes every two seconds until cancelled, and once more on the way out, each time
    /// reading what the other replicas stored; deletes old days' counts at start and then
    /// hourly.
    pub async fn flush_periodically(
        self: std::sync::Arc<Self>,
        pool: PgPool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        const FLUSHES_PER_HOUR: u32 = 1800;
        for flushes in 0u32.. {
            if flushes % FLUSHES_PER_HOUR == 0 {
                let old = self.forget_old_days(&pool);
                bounded("could not delete old daily quota counts", old).await;
            }
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
            };
            // Before the flush, which waits on PostgreSQL: the maps stay bounded while it does.
            self.prune();
            bounded("could not record daily quota use", self.flush(&pool)).await;
            let others = self.refresh_others(&pool);
            bounded("could not read the other replicas' daily counts", others).await;
            if stop {
                return;
            }
        }
    }
}

/// How long each of the flusher's statements may take: a connection whose peer vanished would
/// otherwise hold the loop (its pruning, and shutdown) until TCP gives up. A flush cut short
/// keeps its counts pending (`flush` marks them stored only once answered).
const STATEMENT_TIME: Duration = Duration::from_secs(10);

/// Runs `work` for at most `STATEMENT_TIME`, logging `what` when it fails or takes longer.
async fn bounded<T>(what: &str, work: impl std::future::Future<Output = sqlx::Result<T>>) {
    match tokio::time::timeout(STATEMENT_TIME, work).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "{what}"),
        Err(_) => tracing::warn!("{what}: no answer within {STATEMENT_TIME:?}"),
    }
}

/// The next UTC midnight, when the daily quotas start again.
pub(super) fn next_midnight() -> std::time::SystemTime {
    next_midnight_after(Utc::now()).into()
}

/// The first UTC midnight after `now` (at midnight itself, the next day's).
pub(super) fn next_midnight_after(now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    tomorrow.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}
