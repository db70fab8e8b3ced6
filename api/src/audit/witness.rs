//! Witnesses: a record's position and hash as a check reported them, kept outside the
//! database by whoever runs the checks, and checked again later: the record must still be
//! there with that hash, or have been pruned by retention (behind the sealed anchor). Through
//! the chain, its hash stands for every record before it, so a witness shows what the chain
//! alone cannot: the log's end cut off (with the usage checkpoint moved back), or the whole log
//! hashed again.

use sqlx::PgConnection;

/// A record's position and hash as an earlier check reported them (`Verified::last`), kept
/// outside the database: the record must still be there with that hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Witness {
    pub seq: i64,
    pub hash: String,
}

impl std::str::FromStr for Witness {
    type Err = &'static str;

    /// `SEQ:HASH`, as `herald audit verify` prints them: a position of 1 or more and 64
    /// lowercase hex digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "must be SEQ:HASH, a position and its record's 64-digit hex hash";
        let (seq, hash) = text.split_once(':').ok_or(FORM)?;
        let seq: i64 = seq.parse().map_err(|_| FORM)?;
        let hex = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if seq < 1 || !hex {
            return Err(FORM);
        }
        Ok(Self {
            seq,
            hash: hash.to_owned(),
        })
    }
}

/// Whether `witness` still holds: its record is there with its hash, or retention pruned it
/// (the sealed anchor is at or past it, with the same hash when at it).
pub(super) async fn witnessed(
    db: &mut PgConnection,
    witness: &Witness,
) -> sqlx::Result<Option<(i64, String)>> {
    // Only a sealed anchor (checked by `anchor_link`) stands for records that retention
    // pruned: no witness is older than seals.
    let (stored, anchor): (Option<String>, Option<(i64, String)>) = (
        sqlx::query_scalar("SELECT hash FROM request_log WHERE seq = $1")
            .bind(witness.seq)
            .fetch_optional(&mut *db)
            .await?,
        sqlx::query_as("SELECT seq, hash FROM request_log_anchor WHERE seal IS NOT NULL")
            .fetch_optional(&mut *db)
            .await?,
    );
    let differs = |what: &str| Some((witness.seq, what.to_owned()));
    Ok(match (stored, anchor) {
        (Some(hash), _) if hash == witness.hash => None,
        (Some(_), _) => differs("its hash is not the one witnessed"),
        (None, Some((seq, hash)))
            if seq > witness.seq || (seq, &hash) == (witness.seq, &witness.hash) =>
        {
            None
        }
        (None, _) => differs("the witnessed record is missing"),
    })
}
