//! Group-committed appends: commands running at the same moment share one `INSERT`, and the
//! primary key still decides every race. Twenty commands creating the same aggregate at once
//! (so most land in one batch) leave exactly one winner and nineteen conflicts; twenty
//! creating distinct aggregates alongside them all land.

use herald_domain::job::{JobCommand, JobKind, MaxAttempts, Metadata, Priority, SubmitJob};
use herald_domain::{JobId, ProjectId};
use herald_store::{CommandError, EventMetadata};
use serde_json::json;

use crate::support::{event_count, TestApp};

fn submit(project: uuid::Uuid) -> JobCommand {
    let submit = SubmitJob {
        project_id: ProjectId::from_uuid(project),
        kind: JobKind::parse("batched").unwrap(),
        input: json!({}),
        priority: Priority::default(),
        metadata: Metadata::default(),
        max_attempts: MaxAttempts::default(),
        input_files: vec![],
    };
    JobCommand::Submit(submit, chrono::Utc::now())
}

#[tokio::test]
async fn concurrent_appends_share_batches_and_the_primary_key_still_picks_one_winner() {
    let app = TestApp::spawn().await;
    let project = app.create_project("batched").await;
    let before = event_count(&app.pool).await;
    let metadata = EventMetadata::system("test");
    let contested = JobId::generate().to_string();
    let distinct: Vec<String> = (0..20).map(|_| JobId::generate().to_string()).collect();

    let same = (0..20).map(|_| {
        app.state
            .jobs
            .create(&contested, submit(project), &metadata)
    });
    let others = distinct
        .iter()
        .map(|id| app.state.jobs.create(id, submit(project), &metadata));
    let (same, others) = tokio::join!(
        futures::future::join_all(same),
        futures::future::join_all(others)
    );

    let won = same.iter().filter(|outcome| outcome.is_ok()).count();
    let conflicts = same
        .iter()
        .filter(|outcome| matches!(outcome, Err(CommandError::Conflict)))
        .count();
    assert_eq!(
        (won, conflicts),
        (1, 19),
        "one creation wins, the rest conflict"
    );
    assert!(
        others.iter().all(Result::is_ok),
        "distinct aggregates all land"
    );
    assert_eq!(event_count(&app.pool).await - before, 21);

    // The rows are the ones the commands decided, each in its own place.
    let stored: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_type FROM events \
          WHERE aggregate_type = 'job' AND aggregate_id = ANY($1) ORDER BY aggregate_id",
    )
    .bind(distinct.iter().chain([&contested]).collect::<Vec<_>>())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 21);
    assert!(stored
        .iter()
        .all(|(_, sequence, kind)| *sequence == 1 && kind == "job.queued"));
}
