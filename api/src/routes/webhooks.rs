//! `/api/v1/webhooks` and `/api/v1/event-types`: endpoints (an aggregate, so every change is an
//! event), their signing secrets (kept beside the log), test sends and the event catalogue.
//! Scopes `webhooks:read` / `webhooks:write`.

use std::sync::Arc;

use chrono::{Duration, Utc};
use herald_domain::webhook_endpoint::{
    account_wide_only, EndpointCommand, EndpointSettings, EVENT_TYPES, PING,
};
use herald_domain::Scope;
use herald_webhooks::sender::Message;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use serde_json::json;
use uuid::Uuid;

use super::webhook_models::*;
use super::ApiTags;
use crate::app::webhooks as app;
use crate::auth::Credentials;
use crate::http::context::RequestContext;
use crate::http::cursor;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

pub struct WebhooksApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Created {
    /// The endpoint; `secret` is shown this once.
    #[oai(status = 201)]
    Created(Json<WebhookWithSecret>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum Deleted {
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Create a webhook endpoint
    ///
    /// Answers the endpoint plus its signing secret (`whsec_…`), shown once. Scope
    /// `webhooks:write`.
    #[oai(path = "/webhooks", method = "post", operation_id = "createWebhook")]
    async fn create(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<WebhookCreate>,
    ) -> ApiResult<Created> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let body = body.0;
        let project = app::target_project(&self.state, &caller, body.project_id).await?;
        let settings = EndpointSettings {
            url: body.url.trim().to_owned(),
            description: body.description,
            event_types: body.event_types,
            headers: body.headers.unwrap_or_default(),
            rate_limit_per_second: body.rate_limit_per_second,
            enabled: body.enabled.unwrap_or(true),
        };
        let errors = settings.validate_for(project, None);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors).into());
        }
        let (id, state, secret) =
            app::create(&self.state, &metadata(&caller, context), project, settings).await?;
        let endpoint = WebhookDto::render(id, &state, &self.state.header_seal);
        Ok(Created::Created(
            Json(WebhookWithSecret { endpoint, secret }),
            format!("/api/v1/webhooks/{id}"),
        ))
    }

    /// List webhook endpoints
    ///
    /// Newest first. Scope `webhooks:read`.
    #[oai(path = "/webhooks", method = "get", operation_id = "listWebhooks")]
    async fn list(
        &self,
        auth: Credentials,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<WebhookList>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksRead).await?;
        let limit = cursor::limit(limit.0)?;
        let after: Option<Uuid> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM webhook_endpoints WHERE NOT deleted AND ($1::uuid[] IS NULL OR project_id = ANY($1)) \
               AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(caller.visible_projects())
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.state.pool)
        .await?;
        let has_more = rows.len() as i64 > limit;
        let page: Vec<Uuid> = rows
            .into_iter()
            .take(limit as usize)
            .map(|(id,)| id)
            .collect();
        let mut data = Vec::new();
        for &id in &page {
            // An endpoint deleted since the read is left out of the page.
            if let Ok(state) = app::load(&self.state, &caller, id).await {
                data.push(WebhookDto::render(id, &state, &self.state.header_seal));
            }
        }
        // From the last endpoint read, shown or not, so paging goes on past any left out.
        let next_cursor = has_more.then(|| page.last().map(cursor::encode)).flatten();
        Ok(Json(WebhookList {
            data,
            has_more,
            next_cursor,
        }))
    }

    /// Get a webhook endpoint
    ///
    /// Scope `webhooks:read`.
    #[oai(path = "/webhooks/:id", method = "get", operation_id = "getWebhook")]
    async fn get(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<WebhookDto>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksRead).await?;
        let state = app::load(&self.state, &caller, id.0).await?;
        Ok(Json(WebhookDto::render(
            id.0,
            &state,
            &self.state.header_seal,
        )))
    }

    /// Change a webhook endpoint
    ///
    /// Only the given settings change; `"enabled": true` re-enables a disabled endpoint (then
    /// replay what it missed). Scope `webhooks:write`.
    #[oai(
        path = "/webhooks/:id",
        method = "patch",
        operation_id = "updateWebhook"
    )]
    async fn update(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<WebhookPatch>,
    ) -> ApiResult<Json<WebhookDto>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let current = app::load(&self.state, &caller, id.0).await?;
        let patch = body.0;
        let mut settings = current.settings.clone();
        if let Some(url) = patch.url {
            settings.url = url.trim().to_owned();
        }
        if patch.description.is_some() {
            settings.description = patch.description;
        }
        if let Some(types) = patch.event_types {
            settings.event_types = types;
        }
        let new_headers = patch.headers.is_some();
        if let Some(headers) = patch.headers {
            settings.headers = headers;
        }
        if patch.rate_limit_per_second.is_some() {
            settings.rate_limit_per_second = patch.rate_limit_per_second;
        }
        if let Some(enabled) = patch.enabled {
            settings.enabled = enabled;
        }
        // Checked by the endpoint itself, as of the command (`EndpointError::Invalid`); new
        // header values here first, while they are still plain text, and then sealed.
        if new_headers {
            let errors = settings.validate_for(current.project_id, Some(&current.settings));
            if !errors.is_empty() {
                return Err(ApiError::Validation(errors).into());
            }
            settings.headers = self.state.header_seal.seal_all(id.0, &settings.headers);
        }
        let command = EndpointCommand::Update {
            settings,
            now: Utc::now(),
        };
        let state = app::execute(
            &self.state,
            &caller,
            &metadata(&caller, context),
            id.0,
            command,
        )
        .await?;
        Ok(Json(WebhookDto::render(
            id.0,
            &state,
            &self.state.header_seal,
        )))
    }

    /// Delete a webhook endpoint
    ///
    /// Nothing more is sent to it. Scope `webhooks:write`.
    #[oai(
        path = "/webhooks/:id",
        method = "delete",
        operation_id = "deleteWebhook"
    )]
    async fn delete(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        app::delete(&self.state, &caller, &metadata(&caller, context), id.0).await?;
        Ok(Deleted::NoContent)
    }

    /// Rotate the signing secret
    ///
    /// Answers the new secret. The previous one keeps signing for the grace period (default
    /// 24 h, at most 7 days): meanwhile every delivery carries both signatures. Scope
    /// `webhooks:write`.
    #[oai(
        path = "/webhooks/:id/rotate-secret",
        method = "post",
        operation_id = "rotateWebhookSecret"
    )]
    async fn rotate_secret(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<RotateSecret>,
    ) -> ApiResult<Json<NewSecret>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let grace = body.0.grace_period_seconds.unwrap_or(86_400);
        if !(0..=604_800).contains(&grace) {
            return Err(
                ApiError::field("grace_period_seconds", "must be between 0 and 604800").into(),
            );
        }
        app::load(&self.state, &caller, id.0).await?;
        let until = Utc::now() + Duration::seconds(grace);
        let secret =
            app::rotate_secret(&self.state, &metadata(&caller, context), id.0, until).await?;
        Ok(Json(NewSecret {
            secret,
            previous_valid_until: until,
        }))
    }

    /// Send a test event
    ///
    /// Sends `webhook.ping` to the endpoint now, signed like every delivery, and answers what
    /// the receiver said. Scope `webhooks:write`.
    #[oai(
        path = "/webhooks/:id/test",
        method = "post",
        operation_id = "testWebhook"
    )]
    async fn test(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<AttemptDto>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let state = app::load(&self.state, &caller, id.0).await?;
        let secrets = herald_webhooks::dispatcher::active_secrets(&self.state.pool, id.0).await?;
        let webhook_id = format!("msg_{}", Uuid::now_v7().simple());
        let body = json!({"id": format!("evt_test_{}", Uuid::now_v7().simple()), "type": PING, "timestamp": Utc::now(), "data": {"webhook_endpoint_id": id.0, "project_id": state.project_id}});
        let body = serde_json::to_vec(&body).map_err(ApiError::internal)?;
        let attempted_at = Utc::now();
        let outcome = self
            .state
            .webhook_sender
            .send(Message {
                url: &state.settings.url,
                webhook_id: &webhook_id,
                body: &body,
                secrets: &secrets,
                endpoint: id.0,
                headers: &state.settings.headers,
            })
            .await;
        let mut attempt = AttemptDto::manual(attempted_at, outcome);
        attempt.response_body = attempt
            .response_body
            .map(|b| b.chars().take(1024).collect());
        Ok(Json(attempt))
    }

    /// The event catalogue
    ///
    /// Every event type an endpoint can subscribe to, with an example payload. Any valid
    /// credentials.
    #[oai(path = "/event-types", method = "get", operation_id = "listEventTypes")]
    async fn event_types(&self, auth: Credentials) -> ApiResult<Json<EventTypeList>> {
        self.state.authenticate(&auth).await?;
        let data = EVENT_TYPES
            .iter()
            .map(|t| EventTypeDto {
                event_type: (*t).to_owned(),
                account_wide_only: account_wide_only(t),
                example: app::example_payload(t),
            })
            .collect();
        Ok(Json(EventTypeList { data }))
    }
}
