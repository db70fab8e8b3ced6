//! The generic cell rate algorithm: a limit of `quota` requests per `window` is enforced exactly
//! by remembering, per subject, one instant: the theoretical arrival time (TAT) of the next
//! request if requests came at the steady rate. A request is allowed when the TAT it would push
//! forward stays within one window of now; a burst can use the whole quota at once, and then
//! capacity comes back at one request per `window / quota`, never faster. Times are in
//! nanoseconds since an arbitrary origin, so the algorithm is pure and testable.

/// The state of one subject: its TAT (0 = never seen).
pub type Tat = u128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u64,
    /// Nanoseconds until the subject is back to a full quota.
    pub reset_in: u128,
    /// Nanoseconds until one more request would be allowed (0 when allowed).
    pub retry_in: u128,
}

/// Decides one request at `now` for a subject whose TAT is `tat`; returns the verdict and the
/// new TAT (unchanged when refused).
pub fn check(tat: Tat, now: u128, quota: u64, window: u128) -> (Verdict, Tat) {
    let interval = interval(quota, window);
    let quota = u128::from(quota.max(1));
    // The burst tolerance: exactly `quota` intervals, so rounding the interval down can never
    // let one more request through (with 700 million per minute, `window / interval` is 5% more).
    let window = interval * quota;
    let start = tat.max(now);
    let new_tat = start + interval;
    if new_tat - now > window {
        let retry_in = new_tat - now - window;
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            reset_in: start - now,
            retry_in,
        };
        return (verdict, tat);
    }
    let used = new_tat - now;
    let remaining = ((window - used) / interval) as u64;
    (
        Verdict {
            allowed: true,
            remaining,
            reset_in: used,
            retry_in: 0,
        },
        new_tat,
    )
}

/// The time one request takes back under a quota of `quota` per `window` (at least 1).
pub(super) fn interval(quota: u64, window: u128) -> u128 {
    (window / u128::from(quota.max(1))).max(1)
}

/// A TAT kept under a quota of `from` per `window`, carried over to a quota of `to`: the same
/// number of requests still owed, each now taking the new interval to come back, but never
/// more than the new quota (a full window). So a raised limit frees the difference at once,
/// and a lowered one counts what was used against it: no more than the new limit passes. What
/// the cap leaves out is still owed (`wait_if_cut`), so a refusal keeps the stored TAT.
pub fn rescale(tat: Tat, now: u128, from: u64, to: u64, window: u128) -> Tat {
    if from == to || tat <= now {
        return tat;
    }
    let (to_interval, from_interval) = (interval(to, window), interval(from, window));
    let owed = ((tat - now) * to_interval).div_ceil(from_interval);
    now + owed.min(to_interval * u128::from(to.max(1)))
}

/// When `rescale` cuts what is owed (a TAT kept under `from` owes more than a window of `to`):
/// how long until that TAT, left under `from`, owes little enough for one request under `to`
/// (nanoseconds). `None` when nothing is cut. A cut TAT is a decision's view, never to be kept
/// in place of the stored one: keys that share a budget under different quotas would each
/// find less owed than was spent (one key's cut, carried back to the other's higher quota,
/// frees most of that quota again).
pub fn wait_if_cut(tat: Tat, now: u128, from: u64, to: u64, window: u128) -> Option<u128> {
    if from == to || tat <= now {
        return None;
    }
    let (to_interval, from_interval) = (interval(to, window), interval(from, window));
    let full = to_interval * u128::from(to.max(1));
    if ((tat - now) * to_interval).div_ceil(from_interval) <= full {
        return None;
    }
    // One request passes once no more than `full - to_interval` is owed under `to`.
    let room = (full - to_interval) * from_interval / to_interval;
    Some((tat - now).saturating_sub(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u128 = 1_000_000_000;
    const MINUTE: u128 = 60 * SECOND;

    #[test]
    fn a_full_quota_is_usable_at_once_and_not_one_more() {
        let (mut tat, now) = (0, 1_000 * SECOND);
        for i in 0..20 {
            let (verdict, next) = check(tat, now, 20, MINUTE);
            assert!(verdict.allowed, "request {i}");
            assert_eq!(verdict.remaining, 19 - i);
            tat = next;
        }
        let (refused, unchanged) = check(tat, now, 20, MINUTE);
        assert!(!refused.allowed);
        assert_eq!(unchanged, tat);
        assert_eq!(refused.retry_in, 3 * SECOND, "one slot frees every 60/20 s");
        assert_eq!(refused.reset_in, MINUTE);
    }

    #[test]
    fn capacity_returns_at_the_steady_rate_and_never_overshoots() {
        let (mut tat, start) = (0, 1_000 * SECOND);
        let mut allowed = 0;
        // Hammer it every 100 ms for five minutes: at most the quota plus one per interval.
        for step in 0..3000 {
            let (verdict, next) = check(tat, start + step * SECOND / 10, 20, MINUTE);
            if verdict.allowed {
                allowed += 1;
                tat = next;
            }
        }
        assert_eq!(
            allowed,
            20 + 100 - 1,
            "burst of 20, then one per 3 s over 300 s"
        );
    }

    #[test]
    fn a_quota_that_does_not_divide_the_window_still_allows_exactly_the_quota() {
        let (mut tat, mut allowed) = (0, 0);
        while let (Verdict { allowed: true, .. }, next) = check(tat, MINUTE, 7, MINUTE) {
            (tat, allowed) = (next, allowed + 1);
        }
        assert_eq!(allowed, 7);
        // 700 million a minute: after 699,999,999 requests at once, one more and no more.
        let quota = 700_000_000;
        let interval = MINUTE / u128::from(quota);
        let after = |n: u128| MINUTE + n * interval;
        assert!(
            check(after(u128::from(quota) - 1), MINUTE, quota, MINUTE)
                .0
                .allowed
        );
        assert!(
            !check(after(u128::from(quota)), MINUTE, quota, MINUTE)
                .0
                .allowed
        );
    }

    #[test]
    fn a_changed_quota_counts_what_was_used_against_the_new_one() {
        let spend = |count, quota| (0..count).fold(0, |tat, _| check(tat, MINUTE, quota, MINUTE).1);
        // Three of three used, then the limit is raised to 100: 97 are left at once.
        let raised = rescale(spend(3, 3), MINUTE, 3, 100, MINUTE);
        assert_eq!(check(raised, MINUTE, 100, MINUTE).0.remaining, 96);
        // Ten of 100 used, then lowered to 20: ten are left, not one more.
        let mut lowered = rescale(spend(10, 100), MINUTE, 100, 20, MINUTE);
        let mut allowed = 0;
        while let (Verdict { allowed: true, .. }, next) = check(lowered, MINUTE, 20, MINUTE) {
            (lowered, allowed) = (next, allowed + 1);
        }
        assert_eq!(allowed, 10);
        // All 100 of 100 used, then lowered to 3: refused, but full again within a minute,
        // not after the 33 minutes 100 requests take at 3 a minute.
        let cut = rescale(spend(100, 100), MINUTE, 100, 3, MINUTE);
        let (refused, _) = check(cut, MINUTE, 3, MINUTE);
        assert!(!refused.allowed);
        assert_eq!((refused.reset_in, refused.retry_in), (MINUTE, 20 * SECOND));
        // A TAT in the past owes nothing, whatever the quota.
        assert_eq!(rescale(5, MINUTE, 3, 100, MINUTE), 5);
    }

    #[test]
    fn a_cut_debt_is_owed_until_the_tat_kept_under_the_other_quota_pays_it() {
        let spent = (0..100).fold(0, |tat, _| check(tat, MINUTE, 100, MINUTE).1);
        // Nothing is cut carrying a debt up, or down while it fits the lower quota.
        assert_eq!(wait_if_cut(spent, MINUTE, 100, 200, MINUTE), None);
        let ten = (0..10).fold(0, |tat, _| check(tat, MINUTE, 100, MINUTE).1);
        assert_eq!(wait_if_cut(ten, MINUTE, 100, 20, MINUTE), None);
        // 100 of 100 spent, asked under 10 a minute: cut to one window. One request passes
        // once the stored TAT owes at most 9 of 10, 54 s of 60 under 10, 5.4 s under 100.
        let wait = wait_if_cut(spent, MINUTE, 100, 10, MINUTE).unwrap();
        assert_eq!(wait, MINUTE - 5_400_000_000);
        let later = MINUTE + wait;
        let carried = rescale(spent, later, 100, 10, MINUTE);
        assert!(check(carried, later, 10, MINUTE).0.allowed);
        let carried = rescale(spent, later - 1, 100, 10, MINUTE);
        assert!(!check(carried, later - 1, 10, MINUTE).0.allowed);
    }

    #[test]
    fn an_idle_subject_is_full_again_after_one_window() {
        let mut tat = 0;
        for _ in 0..5 {
            tat = check(tat, 0, 5, MINUTE).1;
        }
        assert!(!check(tat, 0, 5, MINUTE).0.allowed);
        assert_eq!(check(tat, MINUTE, 5, MINUTE).0.remaining, 4);
    }
}
