//! Who caused an event, and through which request. Stored with every event (DESIGN invariant
//! 5), never containing a secret.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The caller behind a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An API key, by its public id.
    ApiKey(String),
    /// A logged-in user, by id.
    User(String),
    /// Herald itself: the command line or a background reconciler, by name.
    System(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: Actor,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl EventMetadata {
    /// Metadata for events that Herald issues itself (CLI, reconcilers).
    pub fn system(name: &str) -> Self {
        Self {
            actor: Actor::System(name.to_owned()),
            request_id: None,
            ip: None,
            user_agent: None,
        }
    }

    /// The flat string map cqrs-es stores in the `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let (actor_type, actor_id) = match &self.actor {
            Actor::ApiKey(id) => ("api_key", id),
            Actor::User(id) => ("user", id),
            Actor::System(name) => ("system", name),
        };
        let mut map = HashMap::from([
            ("actor_type".to_owned(), actor_type.to_owned()),
            ("actor_id".to_owned(), actor_id.clone()),
        ]);
        let optional = [
            ("request_id", &self.request_id),
            ("ip", &self.ip),
            ("user_agent", &self.user_agent),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value.clone());
            }
        }
        map
    }
}
