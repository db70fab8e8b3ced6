//! Budgets shared through Redis besides the keys' (`shared_limits`): two `herald serve`
//! processes together allow one client IP's budget for bad credentials, and one login budget
//! per client IP and email, whichever process takes the requests.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::shared_limits::{redis_url, until_shared};
use crate::support::{herald_serve, TestApp};

/// Two `herald serve` processes on `setup`'s database, sharing their limits through Redis and
/// trusting the test as a proxy, with one more setting; and a client address of the test's own
/// (sent as `X-Forwarded-For`), so no other test's or run's refusals share its budgets.
struct Replicas {
    _processes: [tokio::process::Child; 2],
    bases: [String; 2],
    client_ip: String,
}

async fn two_replicas_behind_a_proxy(setup: &TestApp, setting: (&str, &str)) -> Replicas {
    let redis = redis_url();
    let env = [
        ("REDIS_URL", redis.as_str()),
        ("HERALD_TRUSTED_PROXIES", "127.0.0.1/32"),
        setting,
    ];
    let (first_process, first) = herald_serve(&setup.database_url, &env).await;
    let (second_process, second) = herald_serve(&setup.database_url, &env).await;
    until_shared(&first).await;
    until_shared(&second).await;
    let octets = uuid::Uuid::new_v4().into_bytes();
    Replicas {
        _processes: [first_process, second_process],
        bases: [first, second],
        client_ip: format!("10.{}.{}.{}", octets[0], octets[1], octets[2]),
    }
}

/// How many of `statuses` are 401 and how many 429.
fn refusals(statuses: &[StatusCode]) -> (usize, usize) {
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS),
    )
}

#[tokio::test]
async fn two_herald_processes_together_allow_one_budget_per_client_ip() {
    let setup = TestApp::spawn().await;
    let replicas = two_replicas_behind_a_proxy(
        &setup,
        ("HERALD_RATE_LIMITS__UNAUTHENTICATED_PER_MINUTE", "6"),
    )
    .await;
    let client = crate::support::http_client();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = client
            .get(format!("{}/api/v1/jobs", replicas.bases[i % 2]))
            .header("X-API-Key", "hk_not_a_key")
            .header("X-Forwarded-For", &replicas.client_ip)
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["violated-policies"], json!(["unauthenticated"]));
        }
    }
    assert_eq!(
        refusals(&statuses),
        (6, 6),
        "six bad attempts in all, whichever process took them: {statuses:?}"
    );
}

#[tokio::test]
async fn two_herald_processes_together_allow_one_login_budget() {
    let setup = TestApp::spawn().await;
    let replicas = two_replicas_behind_a_proxy(&setup, ("HERALD_AUTH__LOGIN_ATTEMPTS", "4")).await;
    // An email of this test's own too (attempts stay in Redis for the window).
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    let client = crate::support::http_client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let response = client
            .post(format!("{}/api/v1/auth/login", replicas.bases[i % 2]))
            .header("X-Forwarded-For", &replicas.client_ip)
            .json(&json!({"email": email, "password": "not the password"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=900).contains(&retry), "{retry}");
        }
    }
    assert_eq!(
        refusals(&statuses),
        (4, 4),
        "four attempts in all, whichever process took them: {statuses:?}"
    );
}
