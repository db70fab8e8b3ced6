//! A resource's history as the API shows it: its events, oldest first, each with who caused it
//! (from the event metadata). Shared by `GET /jobs/{id}/events` and `GET /api-keys/{id}/history`.

use chrono::{DateTime, Utc};
use herald_store::StoredEvent;
use poem_openapi::Object;

/// One event of a resource's history.
#[derive(Debug, Object)]
pub struct HistoryEvent {
    /// Position in the global log (also the SSE id for streams).
    pub global_position: i64,
    /// Position in the resource's own history, from 1.
    pub sequence: i64,
    #[oai(rename = "type")]
    pub event_type: String,
    /// The event's data.
    pub data: serde_json::Value,
    #[oai(nullable)]
    pub actor_type: Option<String>,
    #[oai(nullable)]
    pub actor_id: Option<String>,
    #[oai(nullable)]
    pub request_id: Option<String>,
    #[oai(nullable)]
    pub ip: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct HistoryList {
    pub data: Vec<HistoryEvent>,
}

impl HistoryList {
    /// The events as shown to callers, without the `type` tag (it is `type` above) and without
    /// what is never shown outside the log (`herald_domain::redact_event_fields`).
    pub fn render(events: Vec<StoredEvent>) -> Self {
        let data = events
            .into_iter()
            .map(|event| {
                let mut data = event.payload;
                if let Some(object) = data.as_object_mut() {
                    object.remove("type");
                    herald_domain::redact_event_fields(&event.aggregate_type, object);
                }
                let meta = |key: &str| event.metadata.get(key).cloned();
                HistoryEvent {
                    global_position: event.global_position,
                    sequence: event.sequence,
                    event_type: event.event_type.clone(),
                    actor_type: meta("actor_type"),
                    actor_id: meta("actor_id"),
                    request_id: meta("request_id"),
                    ip: meta("ip"),
                    data,
                    recorded_at: event.recorded_at,
                }
            })
            .collect();
        Self { data }
    }
}
