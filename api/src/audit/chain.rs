//! The hash chain of the request log: each record's hash is SHA-256 over the previous hash and
//! the record's fields in a fixed order, so changing, removing or reordering any record breaks
//! every link after it, and verification names the first one.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One request, as recorded.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Record {
    pub seq: i64,
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
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of `record` chained to `prev_hash` (the record's own `hash` is not an input).
pub fn hash(prev_hash: &str, record: &Record) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields = [
        prev_hash.to_owned(),
        record.seq.to_string(),
        record
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        record.request_id.clone(),
        opt(&record.actor_type),
        opt(&record.actor_id),
        record.project_id.map(|p| p.to_string()).unwrap_or_default(),
        record.route.clone(),
        record.method.clone(),
        record.path.clone(),
        record.status.to_string(),
        record.latency_us.to_string(),
        record.request_bytes.to_string(),
        record.response_bytes.to_string(),
        opt(&record.client_ip),
        opt(&record.user_agent),
        record.outcome.clone(),
        opt(&record.error_code),
    ];
    let mut digest = Sha256::new();
    for field in fields {
        // Length-prefixed, so no two different field lists hash the same text.
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        if record.prev_hash != prev_hash {
            return Some((
                record.seq,
                "its link to the previous record does not match".into(),
            ));
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
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                record.hash = hash(&prev, &record);
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_edits_and_gaps_are_found() {
        let zero = "0".repeat(64);
        assert_eq!(first_break(zero.clone(), 0, &chain(5)), None);
        let mut edited = chain(5);
        edited[2].status = 500;
        assert_eq!(first_break(zero.clone(), 0, &edited).unwrap().0, 3);
        let mut gap = chain(5);
        gap.remove(1);
        assert_eq!(first_break(zero, 0, &gap).unwrap().0, 2);
    }
}
