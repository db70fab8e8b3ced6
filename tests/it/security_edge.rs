//! The security edge on every endpoint: IP allowlists with real CIDR matching (v4 and v6),
//! `X-Forwarded-For` believed only from trusted proxies, security headers, CORS from an explicit
//! allowlist, bounded JSON depth.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

async fn key_with_allowlist(app: &TestApp, allowlist: &[&str]) -> String {
    let (_, manager) = app.project_with_key(&["keys:write", "jobs:read"]).await;
    let created: Value = app
        .post(
            "/api/v1/api-keys",
            &manager,
            json!({"name": "ip", "scopes": ["jobs:read"], "ip_allowlist": allowlist}),
        )
        .await
        .json()
        .await
        .unwrap();
    created["key"].as_str().unwrap().to_owned()
}

async fn status_from(app: &TestApp, key: &str, forwarded_for: Option<&str>) -> StatusCode {
    let mut request = app.request(Method::GET, "/api/v1/jobs", key);
    if let Some(xff) = forwarded_for {
        request = request.header("X-Forwarded-For", xff);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn allowlists_match_v4_and_v6_prefixes_of_the_client_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let key = key_with_allowlist(&app, &["10.0.0.0/8", "2001:db8::/32"]).await;
    assert_eq!(
        status_from(&app, &key, Some("10.1.2.3")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_from(&app, &key, Some("2001:db8:abcd::7")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_from(&app, &key, Some("11.0.0.1")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status_from(&app, &key, Some("2001:db9::1")).await,
        StatusCode::FORBIDDEN
    );
    // Only the hop added by the trusted proxy counts: a client-supplied left-most entry doesn't.
    assert_eq!(
        status_from(&app, &key, Some("10.9.9.9, 11.0.0.1")).await,
        StatusCode::FORBIDDEN
    );
    // Without the header the client is the proxy itself, which is not allowed.
    assert_eq!(status_from(&app, &key, None).await, StatusCode::FORBIDDEN);
    // A garbled hop from the proxy leaves no client address: denied.
    assert_eq!(
        status_from(&app, &key, Some("not-an-ip")).await,
        StatusCode::FORBIDDEN
    );
    let refused = app
        .request(Method::GET, "/api/v1/jobs", &key)
        .header("X-Forwarded-For", "11.0.0.1")
        .send()
        .await
        .unwrap();
    let body = problem(refused).await;
    assert!(
        body["detail"].as_str().unwrap().contains("IP address"),
        "{body}"
    );
}

#[tokio::test]
async fn a_spoofed_forwarded_for_is_ignored_without_trusted_proxies() {
    let app = TestApp::spawn().await;
    let key = key_with_allowlist(&app, &["10.0.0.0/8"]).await;
    assert_eq!(
        status_from(&app, &key, Some("10.1.2.3")).await,
        StatusCode::FORBIDDEN
    );
    let local = key_with_allowlist(&app, &["127.0.0.0/8"]).await;
    assert_eq!(
        status_from(&app, &local, Some("10.1.2.3")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for (path, with_key) in [
        ("/api/v1/jobs", true),
        ("/api/v1/jobs", false),
        ("/nowhere", false),
        ("/live", false),
    ] {
        let mut request = app.client.get(app.url(path));
        if with_key {
            request = request.header("X-API-Key", &key);
        }
        let response = request.send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age="));
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_eq!(headers["cache-control"], "no-store");
    }
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let app =
        TestApp::spawn_with(|c| c.cors_allowed_origins = vec!["https://app.example".into()]).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let get = |origin: &'static str| {
        app.request(Method::GET, "/api/v1/jobs", &key)
            .header("Origin", origin)
            .send()
    };
    let listed = get("https://app.example").await.unwrap();
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // A browser's script may read the request id and the rate-limit headers.
    let exposed = listed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "x-request-id",
        "retry-after",
        "x-ratelimit-remaining",
        "ratelimit-policy",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let unlisted = get("https://evil.example").await.unwrap();
    assert!(!unlisted
        .headers()
        .contains_key("access-control-allow-origin"));

    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/v1/jobs"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type, x-api-key")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    assert!(!refused.status().is_success());

    let closed = TestApp::spawn().await;
    let (_, key) = closed.project_with_key(&["jobs:read"]).await;
    let response = closed
        .request(Method::GET, "/api/v1/jobs", &key)
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn deeply_nested_json_is_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let deep = format!(
        "{{\"kind\": \"render\", \"input\": {}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let response = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await["code"], "INVALID_BODY");
}
