//! Creating projects.

use chrono::Utc;
use herald_domain::project::{Project, ProjectCommand, ProjectError, ProjectName, ProjectState};
use herald_domain::ProjectId;
use herald_store::{AggregateStore, CommandError, EventMetadata};

pub async fn create(
    store: &AggregateStore<Project>,
    metadata: &EventMetadata,
    name: ProjectName,
) -> Result<(ProjectId, ProjectState), CommandError<ProjectError>> {
    let id = ProjectId::generate();
    let command = ProjectCommand::Create {
        name,
        now: Utc::now(),
    };
    let committed = store.create(&id.to_string(), command, metadata).await?;
    let state = committed
        .aggregate
        .state()
        .cloned()
        .expect("a created project has state");
    Ok((id, state))
}
