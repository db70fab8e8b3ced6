//! The hash chain of the request log: each record's hash covers the previous hash and the
//! record's fields in a fixed order, so changing, removing or reordering any record breaks
//! every link after it, and verification names the first one. A record says which format its
//! hash has (`chain_format`): records are written in `CHAIN_FORMAT`, HMAC-SHA256 under the
//! chain key (`key`), and those written before it are still verified as they were hashed:
//! SHA-256 without a key, format 1 (migration 0023) or 2. A chain never goes back from keyed
//! records to unkeyed ones: an unkeyed record after a keyed one is a broken link, so edits
//! cannot be hidden by hashing the records after them again in an older format.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::Mac;
use sha2::digest::Update;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::key::ChainKey;

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

/// The format records are written in: format 2's fields, hashed with HMAC-SHA256 under the
/// chain key instead of SHA-256. Format 2 was format 1 with the format's number before the
/// fields and a missing optional value as a length no text has (`u64::MAX`, no bytes after it).
pub const CHAIN_FORMAT: i16 = 3;

/// The first keyed format: records of it and later formats are hashed under the chain key.
pub const KEYED_FORMAT: i16 = 3;

/// The hash of `record` chained to `prev_hash` (the record's own `hash` is not an input), in
/// the record's `chain_format`: the fields in a fixed order, each as text prefixed by its length
/// in bytes (so no two different field lists hash the same bytes), written straight into the
/// digest. Format 1 hashes a missing optional value as an empty one; any later format hashes
/// its own number first and a missing value as a length no text has; keyed formats
/// (`KEYED_FORMAT` on) are HMAC-SHA256 under `key`, the others SHA-256.
pub fn hash(key: &ChainKey, prev_hash: &str, record: &Record) -> String {
    let digest: [u8; 32] = if record.chain_format >= KEYED_FORMAT {
        let mut fields = Fields {
            digest: key.mac(),
            absent_differs: true,
        };
        fields.record(prev_hash, record);
        fields.digest.finalize().into_bytes().into()
    } else {
        let mut fields = Fields {
            digest: Sha256::new(),
            absent_differs: record.chain_format != 1,
        };
        fields.record(prev_hash, record);
        fields.digest.finalize().into()
    };
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}

/// The digest (or MAC) of a record's fields, as `hash` writes them.
struct Fields<D> {
    digest: D,
    /// A missing value hashed unlike an empty one (every format after the first).
    absent_differs: bool,
}

impl<D: Update> Fields<D> {
    fn record(&mut self, prev_hash: &str, record: &Record) {
        let mut number = Decimal::new();
        let mut uuid = Uuid::encode_buffer();
        if self.absent_differs {
            self.text(number.format(i64::from(record.chain_format)).as_bytes());
        }
        self.text(prev_hash.as_bytes());
        self.text(number.format(record.seq).as_bytes());
        let occurred = record
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        self.text(occurred.as_bytes());
        self.text(record.request_id.as_bytes());
        self.optional(record.actor_type.as_deref().map(str::as_bytes));
        self.optional(record.actor_id.as_deref().map(str::as_bytes));
        let project = record
            .project_id
            .map(|p| p.hyphenated().encode_lower(&mut uuid).as_bytes());
        self.optional(project);
        self.text(record.route.as_bytes());
        self.text(record.method.as_bytes());
        self.text(record.path.as_bytes());
        self.text(number.format(i64::from(record.status)).as_bytes());
        self.text(number.format(record.latency_us).as_bytes());
        self.text(number.format(record.request_bytes).as_bytes());
        self.text(number.format(record.response_bytes).as_bytes());
        self.optional(record.client_ip.as_deref().map(str::as_bytes));
        self.optional(record.user_agent.as_deref().map(str::as_bytes));
        self.text(record.outcome.as_bytes());
        self.optional(record.error_code.as_deref().map(str::as_bytes));
    }

    fn text(&mut self, text: &[u8]) {
        self.digest.update(&(text.len() as u64).to_be_bytes());
        self.digest.update(text);
    }

    fn optional(&mut self, text: Option<&[u8]>) {
        match text {
            None if self.absent_differs => self.digest.update(&u64::MAX.to_be_bytes()),
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

/// Where a walk along the chain stands: the last record found intact (or the chain's start).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub seq: i64,
    pub hash: String,
    /// Whether that record was keyed: then every later record must be too.
    pub keyed: bool,
}

impl Link {
    /// Before the chain's first record: position 0, a hash of zeros.
    pub fn start() -> Self {
        Self {
            seq: 0,
            hash: "0".repeat(64),
            keyed: false,
        }
    }
}

/// The first broken link in `records` (ordered by `seq`), walking on from `at`, which is left
/// at the last record found intact.
pub fn first_break(key: &ChainKey, at: &mut Link, records: &[Record]) -> Option<(i64, String)> {
    for record in records {
        if record.seq != at.seq + 1 {
            return Some((at.seq + 1, format!("record {} is missing", at.seq + 1)));
        }
        if !(1..=CHAIN_FORMAT).contains(&record.chain_format) {
            let why = format!(
                "its chain format ({}) is unknown (records have formats 1 to {CHAIN_FORMAT})",
                record.chain_format
            );
            return Some((record.seq, why));
        }
        if at.keyed && record.chain_format < KEYED_FORMAT {
            let why = "it is not keyed but follows keyed records (hashed again in an older \
                       format, or written by a server older than this version)";
            return Some((record.seq, why.into()));
        }
        if hash(key, &at.hash, record) != record.hash {
            let why = match record.chain_format >= KEYED_FORMAT {
                true => {
                    "its contents do not match its hash (or it was chained under another pepper)"
                }
                false => "its contents do not match its hash",
            };
            return Some((record.seq, why.into()));
        }
        *at = Link {
            seq: record.seq,
            hash: record.hash.clone(),
            keyed: record.chain_format >= KEYED_FORMAT,
        };
    }
    None
}

#[cfg(test)]
mod tests;
