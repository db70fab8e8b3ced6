//! Request and response bodies of the webhook endpoints. An endpoint's signing secret appears
//! only in the answers to create and rotate-secret.

use herald_webhooks::header_seal::HeaderSeal;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use herald_domain::webhook_endpoint::EndpointState;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::Object;
use serde::Deserialize;
use uuid::Uuid;

/// `POST /webhooks` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    #[oai(nullable)]
    pub description: Option<String>,
    /// Event types from `GET /event-types`, or `["*"]` for every type. A project's endpoint
    /// cannot list types marked `account_wide_only` (user events; 400).
    pub event_types: Vec<String>,
    /// Extra headers sent with every delivery.
    #[oai(nullable)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Most deliveries per second to this endpoint (default: no limit).
    #[oai(nullable)]
    pub rate_limit_per_second: Option<u32>,
    /// Default true.
    #[oai(nullable)]
    pub enabled: Option<bool>,
    /// Required unless the caller is a key bound to one project. `null` (admins only) makes an
    /// account-wide endpoint: it hears every project's events and the account's own
    /// (`user.created`, `project.created`).
    #[serde(default)]
    #[oai(nullable)]
    pub project_id: MaybeUndefined<Uuid>,
}

/// `PATCH /webhooks/{id}` body: only the given settings change.
#[derive(Debug, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[oai(nullable)]
    pub url: Option<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    /// Replaces the list; a project's endpoint cannot add types marked `account_wide_only`.
    #[oai(nullable)]
    pub event_types: Option<Vec<String>>,
    #[oai(nullable)]
    pub headers: Option<BTreeMap<String, String>>,
    #[oai(nullable)]
    pub rate_limit_per_second: Option<u32>,
    /// `true` re-enables a disabled endpoint.
    #[oai(nullable)]
    pub enabled: Option<bool>,
}

/// A webhook endpoint.
#[derive(Debug, Object)]
pub struct WebhookDto {
    pub id: Uuid,
    /// `null` for an account-wide endpoint.
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    pub url: String,
    #[oai(nullable)]
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub headers: BTreeMap<String, String>,
    #[oai(nullable)]
    pub rate_limit_per_second: Option<u32>,
    pub enabled: bool,
    /// Why Herald disabled it, if it did.
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookDto {
    /// The endpoint as its managers see it: header values opened (`HeaderSeal`).
    pub fn render(id: Uuid, state: &EndpointState, seal: &HeaderSeal) -> Self {
        let s = &state.settings;
        Self {
            id,
            project_id: state.project_id.map(|p| p.as_uuid()),
            url: s.url.clone(),
            description: s.description.clone(),
            event_types: s.event_types.clone(),
            headers: seal.open_all(id, &s.headers),
            rate_limit_per_second: s.rate_limit_per_second,
            enabled: s.enabled,
            disabled_reason: state.disabled_reason.clone(),
            created_at: state.created_at,
            updated_at: state.updated_at,
        }
    }
}

/// An endpoint plus its signing secret, shown once.
#[derive(Debug, Object)]
pub struct WebhookWithSecret {
    #[oai(flatten)]
    pub endpoint: WebhookDto,
    /// `whsec_…`: verify signatures with it. It is not shown again.
    pub secret: String,
}

#[derive(Debug, Object)]
pub struct WebhookList {
    pub data: Vec<WebhookDto>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// `POST /webhooks/{id}/rotate-secret` body.
#[derive(Debug, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing: default 86400, at most 604800.
    #[oai(nullable)]
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Object)]
pub struct NewSecret {
    pub secret: String,
    /// Until when the previous secret also signs.
    pub previous_valid_until: DateTime<Utc>,
}

/// The answer of a test send or a resend.
#[derive(Debug, Object)]
pub struct AttemptDto {
    pub attempted_at: DateTime<Utc>,
    pub succeeded: bool,
    #[oai(nullable)]
    pub status_code: Option<i32>,
    pub duration_ms: f64,
    /// `http_status`, `timeout`, `connect`, `refused_address`, ... (`null` on success).
    #[oai(nullable)]
    pub error_class: Option<String>,
    /// The start of the receiver's answer (at most 20 kB).
    #[oai(nullable)]
    pub response_body: Option<String>,
    /// True for resends and tests, false for the dispatcher's attempts.
    pub manual: bool,
}

impl AttemptDto {
    /// A manual attempt (a resend or a test send) made at `attempted_at`.
    pub fn manual(attempted_at: DateTime<Utc>, outcome: herald_webhooks::sender::Outcome) -> Self {
        Self {
            attempted_at,
            succeeded: outcome.succeeded(),
            status_code: outcome.status.map(i32::from),
            duration_ms: outcome.duration.as_secs_f64() * 1000.0,
            error_class: outcome.error_class,
            response_body: outcome.body,
            manual: true,
        }
    }
}

/// One entry of the event catalogue.
#[derive(Debug, Object)]
pub struct EventTypeDto {
    #[oai(rename = "type")]
    pub event_type: String,
    /// Sent only to account-wide endpoints (`"project_id": null`): a project's endpoints
    /// cannot subscribe to it (a user's events).
    pub account_wide_only: bool,
    /// A payload as a receiver gets it.
    pub example: serde_json::Value,
}

#[derive(Debug, Object)]
pub struct EventTypeList {
    pub data: Vec<EventTypeDto>,
}
