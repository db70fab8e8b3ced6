//! Removing file bytes when the object store fails: the job is still deleted (204), the file's
//! row stays marked with its bytes not yet gone, and the janitor's sweeps retry it (at most
//! once a minute) until the store cooperates, then count it once. The store is the real local
//! one; a delete is made to fail by putting a directory where the object's file was (unlink
//! refuses directories, even for root).

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::job_files::finished_job_with_files;
use crate::support::TestApp;

async fn removal(app: &TestApp, id: Uuid) -> (String, bool) {
    sqlx::query_as("SELECT state, removed_at IS NOT NULL FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_removal_the_store_refuses_is_retried_by_the_janitor() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let job = finished_job_with_files(&app, &key, &worker).await;
    let input: Uuid = job["input_files"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let result: Uuid = job["result_files"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let object = std::path::Path::new(&app.state.config.storage.path)
        .join(herald_api::storage::file_key(input).as_ref());
    std::fs::remove_file(&object).unwrap();
    std::fs::create_dir(&object).unwrap();
    std::fs::write(object.join("in-the-way"), b"x").unwrap();

    let id = job["id"].as_str().unwrap();
    let response = app
        .request(Method::DELETE, &format!("/api/v1/jobs/{id}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(removal(&app, input).await, ("removed".into(), false));
    assert_eq!(removal(&app, result).await, ("removed".into(), true));

    // While the store keeps refusing, a sweep goes on and the file stays due.
    let sweeper = herald_api::expiry::ExpirySweeper::new(app.state.clone());
    let swept = sweeper.run_once(Utc::now()).await.unwrap();
    assert_eq!(swept.files, 0);
    assert_eq!(removal(&app, input).await, ("removed".into(), false));

    // A refused removal is retried a minute later at the earliest, so a sweep two minutes on
    // retries it; the store still refuses, and the refusal is noted again.
    let later = || Utc::now() + Duration::minutes(2);
    assert_eq!(sweeper.run_once(later()).await.unwrap().files, 0);
    assert_eq!(removal(&app, input).await, ("removed".into(), false));

    std::fs::remove_dir_all(&object).unwrap();
    std::fs::write(&object, b"the bytes again").unwrap();
    let soon = sweeper.run_once(Utc::now()).await.unwrap();
    assert_eq!(
        soon.files, 0,
        "retried less than a minute after it was refused"
    );
    let swept = sweeper.run_once(later()).await.unwrap();
    assert_eq!(swept.files, 1);
    assert_eq!(removal(&app, input).await, ("removed".into(), true));
    let storage = &app.state.storage;
    assert!(!storage
        .exists(&herald_api::storage::file_key(input))
        .await
        .unwrap());
    assert_eq!(sweeper.run_once(later()).await.unwrap().files, 0);
    app.stop().await;
}
