//! The chain's hashes in each format, pinned, and what verification finds in edited chains.

use super::*;

fn key() -> ChainKey {
    ChainKey::from_pepper(b"a pepper of the tests, 0123456789")
}

/// `n` records chained from the start in `format`.
fn chain_in(n: i64, format: i16) -> Vec<Record> {
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
                chain_format: format,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            record.hash = hash(&key(), &prev, &record);
            prev = record.hash.clone();
            record
        })
        .collect()
}

fn chain(n: i64) -> Vec<Record> {
    chain_in(n, CHAIN_FORMAT)
}

/// Hashes `records` again from the one at index `from` on, each in the format it says.
fn rehash(records: &mut [Record], from: usize, key: &ChainKey) {
    let mut prev = match from {
        0 => "0".repeat(64),
        from => records[from - 1].hash.clone(),
    };
    for record in &mut records[from..] {
        record.hash = hash(key, &prev, record);
        prev = record.hash.clone();
    }
}

fn verify(records: &[Record]) -> Option<(i64, String)> {
    first_break(&key(), &mut Link::start(), records)
}

/// Records already stored were hashed by earlier versions: the hash of a record with every
/// field set is pinned in each format, so a change to the hashing that would break those chains
/// fails here.
#[test]
fn the_hash_of_a_known_record_never_changes() {
    let mut record = known_record();
    let prev = "ab".repeat(32);
    record.chain_format = 1;
    assert_eq!(
        hash(&key(), &prev, &record),
        "ac34fc85371f1162d9023bf68b009219c0d0523c7fbd59de98906426adf7563b"
    );
    record.chain_format = 2;
    assert_eq!(
        hash(&key(), &prev, &record),
        "3a8a6c882a15ff9ca5f7f7a5863fbce0e104b9f5b0b8c3a505e2b74c8e27bc5a"
    );
    record.chain_format = 3;
    assert_eq!(
        hash(&key(), &prev, &record),
        "903832dea760a26f3190839201f9ff24418bf7c07e423d5d5b2b7dd34479b111"
    );
    // And with every optional value missing.
    (record.actor_type, record.actor_id, record.project_id) = (None, None, None);
    (record.client_ip, record.user_agent, record.error_code) = (None, None, None);
    record.chain_format = 2;
    assert_eq!(
        hash(&key(), &prev, &record),
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
/// went unseen; since the second they differ, and a record moved back to an older format no
/// longer matches its hash either.
#[test]
fn a_missing_value_and_an_empty_one_hash_apart() {
    let mut first = chain_in(1, 1);
    first[0].error_code = Some(String::new());
    assert_eq!(verify(&first), None);

    for format in [2, CHAIN_FORMAT] {
        let written = chain_in(3, format);
        for edit in [
            |r: &mut Record| r.error_code = Some(String::new()),
            |r: &mut Record| r.actor_type = None,
            |r: &mut Record| r.project_id = Some(Uuid::nil()),
            |r: &mut Record| r.chain_format -= 1,
        ] {
            let mut edited = written.clone();
            edit(&mut edited[1]);
            assert_eq!(verify(&edited).unwrap().0, 2, "format {format}");
        }
    }
}

#[test]
fn an_intact_chain_verifies_and_edits_and_gaps_are_found() {
    assert_eq!(verify(&chain(5)), None);
    let mut edited = chain(5);
    edited[2].status = 500;
    assert_eq!(verify(&edited).unwrap().0, 3);
    // Rewritten together with a matching hash of its own, the record after it breaks.
    let mut rewritten = chain(5);
    rewritten[1].status = 500;
    rewritten[1].hash = hash(&key(), &rewritten[0].hash, &rewritten[1]);
    assert_eq!(verify(&rewritten).unwrap().0, 3);
    let mut gap = chain(5);
    gap.remove(1);
    assert_eq!(verify(&gap).unwrap().0, 2);
    // The walk is left at the last record found intact.
    let mut at = Link::start();
    assert!(first_break(&key(), &mut at, &edited).is_some());
    assert_eq!((at.seq, at.keyed), (2, true));
}

/// Without the key, an edit cannot be hidden: every later hash computed again under another
/// key, or in the unkeyed format (as the chain's description allows anyone to), still breaks
/// at the edited record.
#[test]
fn edits_hashed_again_without_the_key_are_found() {
    let mut guessed = chain(4);
    guessed[1].status = 500;
    rehash(
        &mut guessed,
        1,
        &ChainKey::from_pepper(b"another pepper, 0123456789"),
    );
    assert_eq!(verify(&guessed).unwrap().0, 2);

    let mut downgraded = chain(4);
    downgraded[2].status = 500;
    for record in &mut downgraded[2..] {
        record.chain_format = 2;
    }
    rehash(&mut downgraded, 2, &key());
    let (seq, why) = verify(&downgraded).unwrap();
    assert_eq!(seq, 3);
    assert!(why.contains("not keyed"), "{why}");
    // The holder of the key can: that is what the key is for.
    let mut rekeyed = chain(4);
    rekeyed[2].status = 500;
    rehash(&mut rekeyed, 2, &key());
    assert_eq!(verify(&rekeyed), None);
}

/// A log written before keyed records existed goes on with keyed ones (an upgrade): unkeyed
/// records before keyed ones verify.
#[test]
fn unkeyed_records_before_keyed_ones_verify() {
    let mut upgraded = chain_in(2, 1);
    upgraded.extend(chain_in(4, 2).into_iter().skip(2));
    upgraded.extend(chain_in(6, CHAIN_FORMAT).into_iter().skip(4));
    rehash(&mut upgraded, 0, &key());
    assert_eq!(verify(&upgraded), None);
    let formats: Vec<i16> = upgraded.iter().map(|r| r.chain_format).collect();
    assert_eq!(formats, [1, 1, 2, 2, 3, 3]);
}

/// Formats no version has written are broken links, whatever their hash.
#[test]
fn an_unknown_format_is_a_broken_link() {
    for format in [0, -1, 4, i16::MAX] {
        let mut records = chain(3);
        records[1].chain_format = format;
        rehash(&mut records, 1, &key());
        let (seq, why) = verify(&records).unwrap();
        assert_eq!(seq, 2, "{format}");
        assert!(why.contains("is unknown"), "{why}");
    }
}
