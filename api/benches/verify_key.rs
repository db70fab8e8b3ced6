//! How long verifying a presented API key takes on the request path, with the key cached (the
//! steady state): parse, CRC check, cache lookup, HMAC-SHA256 and constant-time compare, expiry
//! and IP-allowlist checks. Target: under 5 µs. Run with `cargo bench -p herald-api`.

use std::net::IpAddr;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use herald_api::auth::{hash_key, KeyVerifier};
use herald_domain::api_key::{ApiKeyState, ApiKeyToken, IpAllowlist, KeyName, RateLimit};
use herald_domain::Scopes;

const PEPPER: &[u8] = b"benchmark-pepper-0123456789abcdef";

fn verifier_with(token: &ApiKeyToken, allowlist: IpAllowlist) -> KeyVerifier {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://unused@localhost/unused")
        .expect("a lazy pool never connects");
    let verifier = KeyVerifier::new(pool, PEPPER.to_vec());
    let now = Utc::now();
    let state = ApiKeyState {
        name: KeyName::parse("bench").unwrap(),
        description: None,
        project_id: None,
        scopes: Scopes::parse(["jobs:read", "jobs:write"]).unwrap(),
        key_hash: hash_key(PEPPER, token),
        start: token.start(),
        expires_at: None,
        expired_at: None,
        ip_allowlist: allowlist,
        rate_limit: RateLimit::default(),
        rotated_from: None,
        rotation_root: None,
        successor_id: None,
        revoked_at: None,
        created_at: now,
        updated_at: now,
    };
    verifier.prime(token.id(), state).expect("a valid hash");
    verifier
}

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let token = ApiKeyToken::generate();
    let client: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());

    let open = verifier_with(&token, IpAllowlist::default());
    assert!(open.verify_cached(token.expose(), client).is_ok());
    c.bench_function("verify a cached key", |b| {
        b.iter(|| open.verify_cached(black_box(token.expose()), client))
    });

    let listed = verifier_with(
        &token,
        IpAllowlist::parse(&["192.168.0.0/16", "10.0.0.0/8"]).unwrap(),
    );
    assert!(listed.verify_cached(token.expose(), client).is_ok());
    c.bench_function("verify a cached key with an IP allowlist", |b| {
        b.iter(|| listed.verify_cached(black_box(token.expose()), client))
    });

    let mut typo = token.expose().to_owned();
    typo.replace_range(30..31, if &typo[30..31] == "a" { "b" } else { "a" });
    c.bench_function("refuse a mistyped key (CRC)", |b| {
        b.iter(|| open.verify_cached(black_box(&typo), client))
    });
}

criterion_group!(benches, verification);
criterion_main!(benches);
