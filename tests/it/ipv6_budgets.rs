//! Per-IP budgets for IPv6 clients are per /64: every address of one /64 spends the same
//! `unauthenticated` budget and the same login count, so a client holding a /64 cannot start
//! afresh by changing its address, while a neighbouring /64 has budgets of its own; with
//! `rate_limits.ipv6_prefix` set, per network of that size. The client address comes from
//! `X-Forwarded-For` through a trusted proxy (the test's loopback).

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn ipv6_clients_share_the_unauthenticated_budget_of_their_64() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.rate_limits.unauthenticated_per_minute = 3;
    })
    .await;
    let anonymous = |client: &str| {
        app.client
            .get(app.url("/api/v1/jobs"))
            .header("X-Forwarded-For", client)
            .send()
    };
    let mut statuses = Vec::new();
    for host in 1..=4 {
        let client = format!("2001:db8:1:2::{host:x}");
        statuses.push(anonymous(&client).await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "four addresses of one /64 had budgets of their own"
    );
    let far = anonymous("2001:db8:1:2:ffff:ffff:ffff:fffe").await.unwrap();
    assert_eq!(far.status(), StatusCode::TOO_MANY_REQUESTS);
    // The next /64, and an IPv4 client, each have a budget of their own.
    let neighbour = anonymous("2001:db8:1:3::1").await.unwrap();
    assert_eq!(neighbour.status(), StatusCode::UNAUTHORIZED);
    let v4 = anonymous("203.0.113.9").await.unwrap();
    assert_eq!(v4.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ipv6_clients_share_the_login_count_of_their_64() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.auth.login_attempts = 2;
    })
    .await;
    let attempt = |client: &str, email: &str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("X-Forwarded-For", client)
            .json(&json!({"email": email, "password": "not the password"}))
            .send()
    };
    // Other emails each time, so only the per-IP count can refuse.
    let first = attempt("2001:db8:9:9::1", "a@example.com").await.unwrap();
    let second = attempt("2001:db8:9:9::2", "b@example.com").await.unwrap();
    let third = attempt("2001:db8:9:9:1::3", "c@example.com").await.unwrap();
    assert_eq!(
        [first.status(), second.status(), third.status()],
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let neighbour = attempt("2001:db8:9:a::1", "d@example.com").await.unwrap();
    assert_eq!(neighbour.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_security_summary_counts_refusals_per_64_and_nat64_per_ipv4() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let refuse = |client: String| {
        app.client
            .get(app.url("/api/v1/jobs"))
            .header("X-Forwarded-For", client)
            .send()
    };
    // Five addresses of one /64, four calls from one IPv4 address, three NAT64 clients.
    for host in [":1", ":2", ":3", "ffff:ffff:ffff:ffff", "abcd:0:0:1"] {
        let refused = refuse(format!("2001:db8:10:1:{host}")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..4 {
        refuse("198.51.100.7".into()).await.unwrap();
    }
    for client in ["64:ff9b::1.1.1.1", "64:ff9b::1.1.1.1", "64:ff9b::9.9.9.9"] {
        refuse(client.into()).await.unwrap();
    }
    let security: serde_json::Value = app
        .get("/api/v1/admin/security", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let top: Vec<(String, i64)> = security["top_refused_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ip"].as_str().unwrap().to_owned(),
                e["refusals"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("2001:db8:10:1::/64", 5),
        ("198.51.100.7", 4),
        ("1.1.1.1", 2),
        ("9.9.9.9", 1),
    ];
    let expected: Vec<(String, i64)> = expected.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(top, expected, "{security}");
    // The request log keeps each client's own address.
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT client_ip) FROM request_log WHERE client_ip LIKE '2001:db8:10:1:%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 5);
}

#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.rate_limits.unauthenticated_per_minute = 2;
        c.rate_limits.ipv6_prefix = 56;
    })
    .await;
    let anonymous = |client: &str| {
        app.client
            .get(app.url("/api/v1/jobs"))
            .header("X-Forwarded-For", client)
            .send()
    };
    // Three /64s of one /56 share its budget; the next /56 has its own.
    let mut statuses = Vec::new();
    for client in [
        "2001:db8:1:200::1",
        "2001:db8:1:2aa::1",
        "2001:db8:1:2ff::1",
    ] {
        statuses.push(anonymous(client).await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let next = anonymous("2001:db8:1:300::1").await.unwrap();
    assert_eq!(next.status(), StatusCode::UNAUTHORIZED);
    // The security summary groups them the same way.
    let security: serde_json::Value = app
        .get("/api/v1/admin/security", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let top = &security["top_refused_ips"];
    assert_eq!(top[0]["ip"], "2001:db8:1:200::/56", "{security}");
    assert_eq!(top[0]["refusals"], 3, "{security}");
    assert_eq!(top[1]["ip"], "2001:db8:1:300::/56", "{security}");
}
