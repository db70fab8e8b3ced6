//! The OpenAPI document: served at /openapi.json, identical to the committed
//! docs/openapi.json (regenerate with `UPDATE_OPENAPI=1 cargo test -p herald-tests openapi`),
//! with Swagger UI and Redoc pages.

use reqwest::StatusCode;

use crate::support::TestApp;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = format!("{}\n", herald_api::openapi_document());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p herald-tests openapi` and commit it"
    );
}

/// A field the API sends as `null` when it has no value is declared so: clients generated from
/// the document (OpenAPI 3.0, where a property is not `null` unless it says `nullable`) must
/// accept it.
#[test]
fn fields_sent_as_null_are_declared_nullable() {
    let document: serde_json::Value =
        serde_json::from_str(&herald_api::openapi_document()).unwrap();
    let schemas = &document["components"]["schemas"];
    for (schema, field) in [
        ("UsageBucket", "actor_type"),
        ("UsageBucket", "project_id"),
        ("KeyDto", "description"),
        ("KeyDto", "expires_at"),
        ("RateLimitDto", "daily_quota"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(property["nullable"], true, "{schema}.{field}: {property}");
    }
    // A field that always has a value is not.
    assert!(schemas["UsageBucket"]["properties"]["start"]["nullable"].is_null());
}

#[tokio::test]
async fn the_document_and_its_viewers_are_served() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed_path()).unwrap()).unwrap();
    assert_eq!(served, committed);
    assert!(served["paths"]["/api/v1/jobs"]["post"].is_object());
    for page in ["/docs", "/redoc"] {
        let response = app.client.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert!(response.text().await.unwrap().contains("<html"), "{page}");
    }
}

/// The export answers NDJSON or CSV (`format=`), and its 200 declares both media types, with
/// the `Content-Disposition` header it sends.
#[test]
fn the_export_declares_both_of_its_media_types() {
    let document: serde_json::Value =
        serde_json::from_str(&herald_api::openapi_document()).unwrap();
    let ok = &document["paths"]["/api/v1/audit/requests/export"]["get"]["responses"]["200"];
    let content = ok["content"].as_object().expect("the 200 has content");
    let mut types: Vec<&str> = content.keys().map(String::as_str).collect();
    types.sort_unstable();
    assert_eq!(types, ["application/x-ndjson", "text/csv"], "{ok}");
    assert_eq!(content["text/csv"], content["application/x-ndjson"]);
    let headers = ok["headers"].as_object().expect("the 200 declares headers");
    assert!(
        headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("content-disposition")),
        "{ok}"
    );
}

/// Every property the document says a problem always has is in real problems of several kinds
/// (a client generated from it refuses a body missing a required property).
#[tokio::test]
async fn problems_hold_every_property_the_document_requires() {
    let app = TestApp::spawn().await;
    let document: serde_json::Value =
        serde_json::from_str(&herald_api::openapi_document()).unwrap();
    let required = document["components"]["schemas"]["Problem"]["required"]
        .as_array()
        .unwrap()
        .clone();
    assert!(required.contains(&"code".into()), "{required:?}");
    let problems = [
        app.get("/api/v1/jobs/not-a-job", &app.admin_key).await,
        app.get("/api/v1/jobs", "hrld_live_nope").await,
        app.post("/api/v1/jobs", &app.admin_key, serde_json::json!({}))
            .await,
    ];
    for response in problems {
        let status = response.status();
        let problem = crate::support::problem(response).await;
        for property in &required {
            let property = property.as_str().unwrap();
            assert!(
                problem.get(property).is_some(),
                "{status}: no {property} in {problem}"
            );
        }
    }
}
