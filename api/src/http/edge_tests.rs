//! The edge on its own, without a database or a server: a call whose handler panics still gets
//! an answer, a problem+json 500 with the request's id, where the connection used to be dropped
//! without one (and so without a record); and the answer to a call abandoned at exit.

use std::time::Duration;

use poem::http::{StatusCode, Uri};
use poem::{handler, Endpoint, EndpointExt, Request};

use super::context::Edge;
use super::streamed_body::StreamedLimits;

#[handler]
fn fails() -> &'static str {
    panic!("a bug in a handler")
}

fn edge() -> Edge {
    Edge {
        max_body_bytes: 1024,
        timeout: Duration::from_secs(5),
        streamed: StreamedLimits {
            chunk_bytes: 1024,
            multipart_bytes: 1024,
            timeout: Duration::from_secs(5),
        },
        trusted_proxies: Vec::new(),
        audit: None,
        state: crate::offline_state(),
        routes: Default::default(),
    }
}

#[tokio::test]
async fn a_handler_that_panics_is_answered_with_a_problem() {
    let app = fails.with(edge());
    let request = Request::builder()
        .uri(Uri::from_static("/api/v1/jobs"))
        .finish();
    let mut response = app.call(request).await.expect("an answer, not an error");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.content_type(),
        Some("application/problem+json"),
        "{:?}",
        response.headers()
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.take_body().into_bytes().await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "INTERNAL");
    assert_eq!(problem["request_id"], request_id.as_str());
}

#[tokio::test]
async fn a_call_abandoned_at_exit_is_answered_with_its_request_id() {
    let mut response = super::edge_problems::abandoned("req-7");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-request-id"], "req-7");
    let body = response.take_body().into_bytes().await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "SHUTTING_DOWN");
    assert_eq!(problem["request_id"], "req-7");
}
