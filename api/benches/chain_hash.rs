//! What chaining a request-log record costs on the writer's path: its hash in the unkeyed
//! format 2 (SHA-256) and in the keyed format 3 (HMAC-SHA256 under the chain key, its key
//! schedule computed once). Run with `cargo bench -p herald-api --bench chain_hash`.

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use herald_api::audit::chain::{hash, Record};
use herald_api::audit::ChainKey;

/// A typical record: a key's read of one job, with a client address and user agent.
fn record(chain_format: i16) -> Record {
    Record {
        seq: 1_234_567,
        occurred_at: Utc::now(),
        request_id: "0193a5f2-7c1e-7b4a-9d2e-5f8a1b3c4d5e".into(),
        actor_type: Some("api_key".into()),
        actor_id: Some("k3Jx9QmZ2pL8vR4t".into()),
        project_id: Some(uuid::Uuid::now_v7()),
        route: "/api/v1/jobs/{id}".into(),
        method: "GET".into(),
        path: "/api/v1/jobs/0193a5f2-7c1e-7b4a-9d2e-5f8a1b3c4d5e".into(),
        status: 200,
        latency_us: 412,
        request_bytes: 0,
        response_bytes: 611,
        client_ip: Some("203.0.113.7".into()),
        user_agent: Some("herald-client/1.4 (python 3.12)".into()),
        outcome: "success".into(),
        error_code: None,
        chain_format,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn chaining(c: &mut Criterion) {
    let key = ChainKey::from_pepper(b"benchmark-pepper-0123456789abcdef");
    let prev = "ab".repeat(32);
    let unkeyed = record(2);
    c.bench_function("hash a record, format 2 (SHA-256)", |b| {
        b.iter(|| hash(&key, black_box(&prev), black_box(&unkeyed)))
    });
    let keyed = record(3);
    c.bench_function("hash a record, format 3 (HMAC-SHA256)", |b| {
        b.iter(|| hash(&key, black_box(&prev), black_box(&keyed)))
    });
}

criterion_group!(benches, chaining);
criterion_main!(benches);
