//! Credentials are checked before an `Idempotency-Key` claim is written: a request refused for
//! them (an unknown key, none at all, a key used outside its IP allowlist) writes no claim, not
//! even one released afterwards, and the check counts no use of a key it accepts.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

/// From now on, writing any claim fails its request (500).
async fn refuse_every_claim(app: &TestApp) {
    for statement in [
        "CREATE FUNCTION refuse_claims() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'a claim was written'; END $$",
        "CREATE TRIGGER refuse_claims BEFORE INSERT ON idempotency_keys \
         FOR EACH ROW EXECUTE FUNCTION refuse_claims()",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
}

#[tokio::test]
async fn refused_credentials_write_no_claim_and_the_check_counts_no_use() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write", "keys:write"]).await;
    let id = key.split('_').nth(2).unwrap().to_owned();
    let fenced: Value = app
        .post(
            "/api/v1/api-keys",
            &key,
            json!({"name": "fenced", "scopes": ["jobs:write"], "ip_allowlist": ["10.0.0.0/8"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let fenced = fenced["key"].as_str().unwrap().to_owned();
    refuse_every_claim(&app).await;
    let submit = |credentials: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/api/v1/jobs"))
            .header("Idempotency-Key", "frame-9")
            .json(&json!({"kind": "render"}));
        if let Some(credentials) = credentials {
            request = request.header("X-API-Key", credentials);
        }
        request.send()
    };

    for (credentials, status, code) in [
        (Some("hrld_live_not-a-key"), 401, "UNAUTHENTICATED"),
        (None, 401, "UNAUTHENTICATED"),
        (Some(fenced.as_str()), 403, "FORBIDDEN"),
    ] {
        let refused = submit(credentials).await.unwrap();
        assert_eq!(refused.status().as_u16(), status, "{credentials:?}");
        assert_eq!(problem(refused).await["code"], code, "{credentials:?}");
    }
    // The trigger does catch a claim: accepted credentials get one written.
    let claimed = submit(Some(&key)).await.unwrap();
    assert_eq!(claimed.status(), StatusCode::INTERNAL_SERVER_ERROR);

    sqlx::query("DROP TRIGGER refuse_claims ON idempotency_keys")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        submit(Some(&key)).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    app.state.verifier.flush_usage(&app.pool).await.unwrap();
    let uses: i64 = sqlx::query_scalar("SELECT usage_count FROM api_key_usage WHERE key_id = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Creating the fenced key, then the job: the two checks before claims counted nothing.
    assert_eq!(uses, 2);
}
