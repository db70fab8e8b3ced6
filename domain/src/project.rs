//! The Project aggregate: the tenancy unit every job and key belongs to.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// A project's display name.
pub type ProjectName = crate::name::DisplayName;

#[derive(Debug, Clone, PartialEq)]
pub enum ProjectCommand {
    Create {
        name: ProjectName,
        now: DateTime<Utc>,
    },
    Rename {
        name: ProjectName,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProjectEvent {
    #[serde(rename = "project.created")]
    Created {
        name: ProjectName,
        at: DateTime<Utc>,
    },
    #[serde(rename = "project.renamed")]
    Renamed {
        name: ProjectName,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> String {
        match self {
            ProjectEvent::Created { .. } => "project.created".into(),
            ProjectEvent::Renamed { .. } => "project.renamed".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    #[error("project already exists")]
    AlreadyExists,
    #[error("project not found")]
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    pub name: ProjectName,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    state: Option<ProjectState>,
}

impl Project {
    pub fn state(&self) -> Option<&ProjectState> {
        self.state.as_ref()
    }

    pub fn decide(&self, command: ProjectCommand) -> Result<Vec<ProjectEvent>, ProjectError> {
        match command {
            ProjectCommand::Create { .. } if self.state.is_some() => {
                Err(ProjectError::AlreadyExists)
            }
            ProjectCommand::Create { name, now } => {
                Ok(vec![ProjectEvent::Created { name, at: now }])
            }
            ProjectCommand::Rename { .. } if self.state.is_none() => Err(ProjectError::NotFound),
            ProjectCommand::Rename { name, .. }
                if self.state.as_ref().is_some_and(|s| s.name == name) =>
            {
                Ok(vec![])
            }
            ProjectCommand::Rename { name, now } => {
                Ok(vec![ProjectEvent::Renamed { name, at: now }])
            }
        }
    }
}

impl Aggregate for Project {
    const TYPE: &'static str = "project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProjectEvent::Created { name, at } => {
                self.state = Some(ProjectState {
                    name,
                    created_at: at,
                })
            }
            ProjectEvent::Renamed { name, .. } => {
                if let Some(state) = &mut self.state {
                    state.name = name;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    #[test]
    fn a_project_is_created_once() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let name = ProjectName::parse("  Render farm ").unwrap();
        assert_eq!(name.as_str(), "Render farm");
        let created = ProjectEvent::Created {
            name: name.clone(),
            at: now,
        };
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::Create {
                name: name.clone(),
                now,
            })
            .then_expect_events(vec![created.clone()]);
        TestFramework::<Project>::with(())
            .given(vec![created])
            .when(ProjectCommand::Create { name, now })
            .then_expect_error(ProjectError::AlreadyExists);
    }
}
