//! Verification of the request log's hash chain, over all of it or a time range. A range names
//! records by time but the chain runs by position, and the two orders can differ a little (a
//! record's time is stamped when its request ends, its position when its batch is written), so
//! the range is widened to every record between the first and the last position it names:
//! nothing inside is skipped, which would read as a missing record. Records are read a page at
//! a time, so a long log does not have to fit in memory, and all in one snapshot, so that
//! retention pruning the range's start meanwhile does not read as a missing record either.
//! Both ends are linked: the range's first record to the one before it (or the anchor), and the
//! record after its last to that last, so records deleted from either end of a range, or all of
//! a range's records, leave a gap that is reported.
//!
//! The chain alone cannot show that its newest records were deleted: what is left still links
//! up. When nothing follows the range, or the range reaches now, the log's end is compared with
//! the usage checkpoint, which only moves forward and only over records that were written:
//! records it has passed (about a second behind the writers) that are no longer there were
//! deleted. Someone who can write to the database can move the checkpoint back as well; a
//! witness kept outside it cannot be: a record's position and hash from an earlier check
//! (`Witness`), which must still be there, unchanged, so neither the records up to it (which
//! its hash covers, through the chain) nor it can have been removed or rewritten since.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::chain::{self, Link, KEYED_FORMAT};
use super::witness::{witnessed, Witness};
use super::{ChainKey, Record};

/// Records read per query.
const PAGE: i64 = 5_000;

/// How far a record's time can lie from its position's: a record is stamped when its request
/// ends and positioned when its batch is written, well under a second later on any replica.
const SKEW: &str = "1 minute";

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The records found intact (before the first broken link, if there is one).
    pub checked: usize,
    /// The first broken link: its position and why.
    pub broken: Option<(i64, String)>,
    /// The last record found intact, as a witness for later checks.
    pub last: Option<Witness>,
}

/// Verifies the chain (keyed records under `key`) over the records from the first to the last
/// position that has `from <= occurred_at < to` (all when absent): the number of records found
/// intact (before the first broken link, if there is one) and that link.
pub async fn verify(
    pool: &PgPool,
    key: &ChainKey,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<(usize, Option<(i64, String)>)> {
    let verified = verify_with(pool, key, from, to, None).await?;
    Ok((verified.checked, verified.broken))
}

/// `verify`, also checking `witness` (in the same snapshot), and reporting the last record
/// found intact. Of two broken links, the earlier one is reported.
pub async fn verify_with(
    pool: &PgPool,
    key: &ChainKey,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    witness: Option<&Witness>,
) -> sqlx::Result<Verified> {
    let mut snapshot = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let (checked, mut broken, last) = verify_in(&mut snapshot, key, from, to).await?;
    if let Some(witness) = witness {
        if let Some(differs) = witnessed(&mut snapshot, witness).await? {
            if broken.as_ref().is_none_or(|b| differs.0 < b.0) {
                broken = Some(differs);
            }
        }
    }
    snapshot.commit().await?;
    Ok(Verified {
        checked,
        broken,
        last,
    })
}

/// The newest record's position when it is keyed and does not match its hash under `key`
/// (chained onto the record, or anchor, just before it), or, with no keyed record, the sealed
/// anchor's when its seal does not match: a server whose pepper differs from the one that
/// wrote the log would chain every record it writes under another key, so it says so when it
/// starts (`herald serve`). `None` when it matches, or cannot be checked alone.
pub async fn newest_under_other_key(pool: &PgPool, key: &ChainKey) -> sqlx::Result<Option<i64>> {
    let newest: Option<Record> =
        sqlx::query_as("SELECT * FROM request_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let Some(newest) = newest.filter(|r| r.chain_format >= KEYED_FORMAT) else {
        // No keyed record to check: retention's sealed anchor, if there is one, tells instead.
        let anchor: Option<(i64, String, Option<bool>, String)> = sqlx::query_as(
            "SELECT seq, hash, keyed, seal FROM request_log_anchor WHERE seal IS NOT NULL",
        )
        .fetch_optional(pool)
        .await?;
        return Ok(anchor
            .filter(|(seq, hash, keyed, seal)| {
                *seal != key.seal_anchor(*seq, hash, keyed.unwrap_or(false))
            })
            .map(|(seq, ..)| seq));
    };
    let before: Option<String> = sqlx::query_scalar(
        "SELECT hash FROM request_log WHERE seq = $1 \
         UNION ALL SELECT hash FROM request_log_anchor WHERE seq = $1 \
         UNION ALL SELECT repeat('0', 64) WHERE $1 = 0 LIMIT 1",
    )
    .bind(newest.seq - 1)
    .fetch_optional(pool)
    .await?;
    Ok(before
        .filter(|before| chain::hash(key, before, &newest) != newest.hash)
        .map(|_| newest.seq))
}

/// The chain's check (see `verify`), and the last record found intact.
async fn verify_in(
    db: &mut PgConnection,
    key: &ChainKey,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<(usize, Option<(i64, String)>, Option<Witness>)> {
    if let Err(broken) = anchor_link(db, key).await? {
        return Ok((0, Some(broken), None));
    }
    let (first, last) = span(db, from, to).await?;
    // The link into the range: the record before it, if it still exists, or the anchor that
    // retention left when it pruned that record (keyed as its seal says; unsealed: unkeyed).
    let before: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT seq, hash, keyed FROM (SELECT seq, hash, chain_format >= $2 AS keyed \
                                         FROM request_log WHERE seq < $1 \
                                       UNION ALL SELECT seq, hash, seal IS NOT NULL AND coalesce(keyed, false) \
                                         FROM request_log_anchor WHERE seq < $1) b \
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(first)
    .bind(KEYED_FORMAT)
    .fetch_optional(&mut *db)
    .await?;
    let mut at = match before {
        Some((seq, hash, keyed)) => Link { seq, hash, keyed },
        // The range starts the log: the chain starts from zeros.
        None if first == 1 => Link::start(),
        None => {
            let missing = format!("records 1 to {} are missing", first - 1);
            return Ok((0, Some((1, missing)), None));
        }
    };
    let mut checked = 0;
    while at.seq < last {
        let page: Vec<Record> = sqlx::query_as(
            "SELECT * FROM request_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(at.seq)
        .bind(last)
        .bind(PAGE)
        .fetch_all(&mut *db)
        .await?;
        if page.is_empty() {
            break;
        }
        let start = at.seq;
        let broken = chain::first_break(key, &mut at, &page);
        // Counted: the records found intact (all of the page's, or those before the break).
        checked += (at.seq - start) as usize;
        if broken.is_some() {
            return Ok((checked, broken, last_intact(&at)));
        }
    }
    // The link out of the range: the next record must follow the last one checked, so records
    // deleted from the range's end (or all of an otherwise empty range) leave a gap here.
    let next: Option<Record> =
        sqlx::query_as("SELECT * FROM request_log WHERE seq > $1 ORDER BY seq LIMIT 1")
            .bind(at.seq)
            .fetch_optional(&mut *db)
            .await?;
    let broken = match &next {
        Some(next) => chain::first_break(key, &mut at, std::slice::from_ref(next)),
        None => None,
    };
    // Nothing follows (the range ends the log), or the range reaches now: a record stamped
    // earlier may sit at a later position, so the log's end is checked either way.
    let last = last_intact(&at);
    if broken.is_none() && (next.is_none() || to.is_none_or(|to| to > Utc::now())) {
        return Ok((checked, missing_at_end(db).await?, last));
    }
    Ok((checked, broken, last))
}

/// The witness a walk that stopped at `at` leaves: none before the chain's first record.
fn last_intact(at: &Link) -> Option<Witness> {
    (at.seq > 0).then(|| Witness {
        seq: at.seq,
        hash: at.hash.clone(),
    })
}

/// The anchor: its position, hash, whether it was keyed and its seal (both absent before
/// migration 0025), and the format of the record after it, if any.
type AnchorRow = (i64, String, Option<bool>, Option<String>, Option<i16>);

/// The anchor as the link the chain goes on from (keyed as its seal says), or its broken link:
/// a seal that is not the anchor's under `key`, or no seal (an anchor written before seals,
/// migration 0025) without an unkeyed record right after it: servers of this version seal
/// every anchor they write, and those before keyed records did not exist followed theirs with
/// unkeyed ones. Either way the log's first records may have been deleted and the anchor moved
/// past them, which would read as retention. `Ok(None)`: no anchor.
pub(super) async fn anchor_link(
    db: &mut PgConnection,
    key: &ChainKey,
) -> sqlx::Result<Result<Option<Link>, (i64, String)>> {
    let anchor: Option<AnchorRow> = sqlx::query_as(
        "SELECT a.seq, a.hash, a.keyed, a.seal, \
                (SELECT chain_format FROM request_log WHERE seq = a.seq + 1) \
           FROM request_log_anchor a",
    )
    .fetch_optional(&mut *db)
    .await?;
    let broken = |seq: i64, why: &str| Err((seq, why.to_owned()));
    Ok(match anchor {
        None => Ok(None),
        Some((seq, hash, keyed, Some(seal), _)) => {
            let keyed = keyed.unwrap_or(false);
            if seal == key.seal_anchor(seq, &hash, keyed) {
                Ok(Some(Link { seq, hash, keyed }))
            } else {
                let moved = "the anchor retention left here is not sealed under this server's \
                             key (moved or edited)";
                broken(seq, moved)
            }
        }
        Some((seq, hash, _, None, Some(next))) if next < KEYED_FORMAT => Ok(Some(Link {
            seq,
            hash,
            keyed: false,
        })),
        Some((seq, _, _, None, Some(_))) => {
            let keyed = "the anchor before it is not sealed, but it is keyed (the log's first \
                         records deleted and the anchor moved?)";
            broken(seq + 1, keyed)
        }
        Some((seq, _, _, None, None)) => {
            let bare = "the anchor before it is not sealed and it is missing (the log emptied \
                        and the anchor moved?)";
            broken(seq + 1, bare)
        }
    })
}

/// The positions to check for `from <= occurred_at < to`: from the first to the last record in
/// the range or, for a range with no records, none: it starts after the last position among
/// the records stamped in the minute before it (`SKEW`; or where the log starts) and ends
/// there, so only its link out is checked.
async fn span(
    db: &mut PgConnection,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<(i64, i64)> {
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(seq), max(seq) FROM request_log \
          WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) \
            AND ($2::timestamptz IS NULL OR occurred_at < $2)",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut *db)
    .await?;
    if let (Some(first), Some(last)) = (first, last) {
        return Ok((first, last));
    }
    let first: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT max(seq) + 1 FROM request_log \
                           WHERE occurred_at < $1 AND occurred_at >= \
                                 (SELECT max(occurred_at) FROM request_log WHERE occurred_at < $1) \
                                 - $2::interval), \
                         (SELECT min(seq) FROM request_log), \
                         (SELECT seq + 1 FROM request_log_anchor), 1)",
    )
    .bind(from)
    .bind(SKEW)
    .fetch_one(&mut *db)
    .await?;
    Ok((first, first - 1))
}

/// The records past the log's end (its last record, or the anchor retention left) that usage
/// has already counted: deleted after they were written.
async fn missing_at_end(db: &mut PgConnection) -> sqlx::Result<Option<(i64, String)>> {
    let (end, counted): (i64, i64) = sqlx::query_as(
        "SELECT greatest((SELECT max(seq) FROM request_log), \
                         (SELECT seq FROM request_log_anchor), 0), \
                (SELECT seq FROM usage_checkpoint)",
    )
    .fetch_one(&mut *db)
    .await?;
    Ok((counted > end).then(|| {
        let first = end + 1;
        let what = match counted == first {
            true => format!("record {first} is missing"),
            false => format!("records {first} to {counted} are missing"),
        };
        (first, what)
    }))
}
