//! The hash chain of the request log: each record's hash is SHA-256 over the previous hash and
//! the record's fields in a fixed order, so changing, removing or reordering any record breaks
//! every link after it, and verification names the first one. A record says which format its
//! hash has (`chain_format`): records are written in `CHAIN_FORMAT`, and those written before
//! it (format 1, migration 0023) are still verified as they were hashed.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One request, as recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Record {
    pub seq: i64,
    /// Serialized (in the NDJSON export) exactly as it is hashed: six fractional digits.
    #[serde(serialize_with = "micros")]
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub project_id: Option<Uuid>,
    pub route: String,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub latency_us: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub error_code: Option<String>,
    /// How `hash` was computed: 1 (a missing value hashed as an empty one) or `CHAIN_FORMAT`.
    pub chain_format: i16,
    /// The previous record's hash. Not stored (the chain implies it): the export selects it,
    /// other queries leave it empty.
    #[sqlx(default)]
    pub prev_hash: String,
    pub hash: String,
}

/// `at` as `hash` writes it (RFC 3339, microseconds, `Z`), so a record's export can be hashed
/// again from its text.
fn micros<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// The format records are written in: format 1, and before the fields the format's number, and
/// a missing optional value as a length no text has (`u64::MAX`, with no bytes after it).
pub const CHAIN_FORMAT: i16 = 2;

/// The hash of `record` chained to `prev_hash` (the record's own `hash` is not an input), in
/// the record's `chain_format`: the fields in a fixed order, each as text prefixed by its length
/// in bytes (so no two different field lists hash the same bytes), written straight into the
/// digest. Format 1 hashes a missing optional value as an empty one; any later format hashes
/// its own number first and a missing value as a length no text has.
pub fn hash(prev_hash: &str, record: &Record) -> String {
    let mut number = Decimal::new();
    let mut uuid = Uuid::encode_buffer();
    let mut fields = Fields {
        digest: Sha256::new(),
        absent_differs: record.chain_format != 1,
    };
    if fields.absent_differs {
        fields.text(number.format(i64::from(record.chain_format)).as_bytes());
    }
    fields.text(prev_hash.as_bytes());
    fields.text(number.format(record.seq).as_bytes());
    let occurred = record
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    fields.text(occurred.as_bytes());
    fields.text(record.request_id.as_bytes());
    fields.optional(record.actor_type.as_deref().map(str::as_bytes));
    fields.optional(record.actor_id.as_deref().map(str::as_bytes));
    let project = record
        .project_id
        .map(|p| p.hyphenated().encode_lower(&mut uuid).as_bytes());
    fields.optional(project);
    fields.text(record.route.as_bytes());
    fields.text(record.method.as_bytes());
    fields.text(record.path.as_bytes());
    fields.text(number.format(i64::from(record.status)).as_bytes());
    fields.text(number.format(record.latency_us).as_bytes());
    fields.text(number.format(record.request_bytes).as_bytes());
    fields.text(number.format(record.response_bytes).as_bytes());
    fields.optional(record.client_ip.as_deref().map(str::as_bytes));
    fields.optional(record.user_agent.as_deref().map(str::as_bytes));
    fields.text(record.outcome.as_bytes());
    fields.optional(record.error_code.as_deref().map(str::as_bytes));
    let mut hex = String::with_capacity(64);
    for byte in fields.digest.finalize() {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}

/// The digest of a record's fields, as `hash` writes them.
struct Fields {
    digest: Sha256,
    /// A missing value hashed unlike an empty one (every format after the first).
    absent_differs: bool,
}

impl Fields {
    fn text(&mut self, text: &[u8]) {
        self.digest.update((text.len() as u64).to_be_bytes());
        self.digest.update(text);
    }

    fn optional(&mut self, text: Option<&[u8]>) {
        match text {
            None if self.absent_differs => self.digest.update(u64::MAX.to_be_bytes()),
            text => self.text(text.unwrap_or_default()),
        }
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Formats integers as decimal text without allocating.
struct Decimal([u8; 20]);

impl Decimal {
    fn new() -> Self {
        Self([0; 20])
    }

    fn format(&mut self, n: i64) -> &str {
        let mut at = self.0.len();
        let mut rest = n.unsigned_abs();
        loop {
            at -= 1;
            self.0[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if n < 0 {
            at -= 1;
            self.0[at] = b'-';
        }
        std::str::from_utf8(&self.0[at..]).expect("ASCII digits")
    }
}

/// The first broken link in `records` (ordered by `seq`), given the hash and seq before them.
pub fn first_break(
    mut prev_hash: String,
    mut prev_seq: i64,
    records: &[Record],
) -> Option<(i64, String)> {
    for record in records {
        if record.seq != prev_seq + 1 {
            return Some((prev_seq + 1, format!("record {} is missing", prev_seq + 1)));
        }
        if hash(&prev_hash, record) != record.hash {
            return Some((record.seq, "its contents do not match its hash".into()));
        }
        prev_hash = record.hash.clone();
        prev_seq = record.seq;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = "0".repeat(64);
        (1..=n)
            .map(|seq| {
                let mut record = Record {
                    seq,
                    occurred_at: DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap(),
                    request_id: format!("r{seq}"),
                    actor_type: Some("api_key".into()),
                    actor_id: Some("k".into()),
                    project_id: None,
                    route: "/api/v1/jobs".into(),
                    method: "GET".into(),
                    path: "/api/v1/jobs".into(),
                    status: 200,
                    latency_us: 10,
                    request_bytes: 0,
                    response_bytes: 2,
                    client_ip: None,
                    user_agent: None,
                    outcome: "success".into(),
                    error_code: None,
                    chain_format: CHAIN_FORMAT,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                record.hash = hash(&prev, &record);
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    /// Records already stored were hashed by earlier versions: the hash of a record with every
    /// field set is pinned in each format, so a change to the hashing that would break those
    /// chains fails here.
    #[test]
    fn the_hash_of_a_known_record_never_changes() {
        let mut record = known_record();
        record.chain_format = 1;
        assert_eq!(
            hash(&"ab".repeat(32), &record),
            "ac34fc85371f1162d9023bf68b009219c0d0523c7fbd59de98906426adf7563b"
        );
        record.chain_format = 2;
        assert_eq!(
            hash(&"ab".repeat(32), &record),
            "3a8a6c882a15ff9ca5f7f7a5863fbce0e104b9f5b0b8c3a505e2b74c8e27bc5a"
        );
        // And with every optional value missing.
        (record.actor_type, record.actor_id, record.project_id) = (None, None, None);
        (record.client_ip, record.user_agent, record.error_code) = (None, None, None);
        assert_eq!(
            hash(&"ab".repeat(32), &record),
            "231ce2a7704d8563995177d9802845c47e91d4e68a1aa006d2c783f2674eb341"
        );
        for n in [i64::MIN, -1, 0, 7, i64::MAX] {
            assert_eq!(Decimal::new().format(n), n.to_string());
        }
    }

    /// A record with every field set.
    fn known_record() -> Record {
        let mut record = chain(1).remove(0);
        record.seq = 42;
        record.occurred_at = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        record.project_id = Some(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        record.client_ip = Some("203.0.113.7".into());
        record.user_agent = Some("curl/8.5".into());
        record.error_code = Some("JOB_NOT_FOUND".into());
        record.status = 404;
        record.latency_us = 1234;
        record.request_bytes = 56;
        record.response_bytes = -1;
        record
    }

    /// In the first format a missing value and an empty one hash alike, so an edit between them
    /// went unseen; since the second they differ, and a record moved back to the first format
    /// no longer matches its hash either.
    #[test]
    fn a_missing_value_and_an_empty_one_hash_apart() {
        let zero = "0".repeat(64);
        let mut first = chain(1).remove(0);
        first.chain_format = 1;
        first.hash = hash(&zero, &first);
        let mut emptied = first.clone();
        emptied.error_code = Some(String::new());
        assert_eq!(first_break(zero.clone(), 0, &[emptied]), None);

        let written = chain(3);
        for edit in [
            |r: &mut Record| r.error_code = Some(String::new()),
            |r: &mut Record| r.actor_type = None,
            |r: &mut Record| r.project_id = Some(Uuid::nil()),
            |r: &mut Record| r.chain_format = 1,
        ] {
            let mut edited = written.clone();
            edit(&mut edited[1]);
            assert_eq!(first_break(zero.clone(), 0, &edited).unwrap().0, 2);
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_edits_and_gaps_are_found() {
        let zero = "0".repeat(64);
        assert_eq!(first_break(zero.clone(), 0, &chain(5)), None);
        let mut edited = chain(5);
        edited[2].status = 500;
        assert_eq!(first_break(zero.clone(), 0, &edited).unwrap().0, 3);
        // Rewritten together with a matching hash of its own, the record after it breaks.
        let mut rewritten = chain(5);
        rewritten[1].status = 500;
        rewritten[1].hash = hash(&rewritten[0].hash, &rewritten[1]);
        assert_eq!(first_break(zero.clone(), 0, &rewritten).unwrap().0, 3);
        let mut gap = chain(5);
        gap.remove(1);
        assert_eq!(first_break(zero, 0, &gap).unwrap().0, 2);
    }
}
