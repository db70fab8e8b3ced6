//! `/api/v1/audit/*`: the request log (every API call, newest first, filtered) and the check of
//! its hash chain. Scope `audit:read`; a project key sees its project's records, a member those
//! of the projects where a role of theirs holds `audit:read`, admins all.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::Scope;
use poem::{Body, IntoResponse};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::payload::{Binary, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::audit_filters;
use super::ApiTags;
use crate::audit::{export, verify_with, Record, Resume, Walk, Witness};
use crate::auth::Credentials;
use crate::http::cursor;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct AuditApi {
    pub state: Arc<AppState>,
}

/// One recorded API call. Never a body or a secret.
#[derive(Debug, Object)]
pub struct RequestRecord {
    /// Position in the log (and in the hash chain).
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
    /// `api_key` or `user`; `null` when the credentials were refused.
    #[oai(nullable)]
    pub actor_type: Option<String>,
    #[oai(nullable)]
    pub actor_id: Option<String>,
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    /// The route template that served the call (`/api/v1/jobs/{id}`), or `unmatched` for a
    /// path no route serves.
    pub route: String,
    pub method: String,
    /// The path, without its query string.
    pub path: String,
    pub status: i32,
    pub latency_us: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    #[oai(nullable)]
    pub client_ip: Option<String>,
    #[oai(nullable)]
    pub user_agent: Option<String>,
    /// `success`, `client_error`, `denied`, `rate_limited`, `server_error`, or `replayed` (an
    /// answer an `Idempotency-Key` replayed from its store).
    pub outcome: String,
    #[oai(nullable)]
    pub error_code: Option<String>,
    pub hash: String,
    /// How `hash` was computed: 3 (HMAC-SHA256 under the chain key), or 2 or 1 (SHA-256) for
    /// records written by older servers (docs/API.md, the request log).
    pub chain_format: i16,
}

impl From<Record> for RequestRecord {
    fn from(r: Record) -> Self {
        Self {
            seq: r.seq,
            occurred_at: r.occurred_at,
            request_id: r.request_id,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            project_id: r.project_id,
            route: r.route,
            method: r.method,
            path: r.path,
            status: r.status,
            latency_us: r.latency_us,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            client_ip: r.client_ip,
            user_agent: r.user_agent,
            outcome: r.outcome,
            error_code: r.error_code,
            hash: r.hash,
            chain_format: r.chain_format,
        }
    }
}

#[derive(Debug, Object)]
pub struct RequestRecordList {
    pub data: Vec<RequestRecord>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct ChainCheck {
    /// True when every record in the range links to the one before and matches its hash.
    pub ok: bool,
    /// The records found intact (before the first broken link, when there is one).
    pub checked: i64,
    /// The first record whose link is broken.
    #[oai(nullable)]
    pub first_broken_seq: Option<i64>,
    #[oai(nullable)]
    pub reason: Option<String>,
    /// The last record found intact, as `SEQ:HASH`: keep it outside the database and pass it
    /// as `witness` to a later check (null when no record was checked).
    #[oai(nullable)]
    pub last: Option<String>,
}

/// The export's answer as derived: its 200 declares the NDJSON body only (a derived response
/// has one media type per status); `Export` adds the CSV one.
#[derive(ApiResponse)]
enum NdjsonExport {
    /// The records, oldest first: one JSON object per line (`format=ndjson`, the default), or
    /// CSV with a header line (`format=csv`, RFC 4180). An export that failed once begun ends
    /// with an `EXPORT_INCOMPLETE` line in place of the rest.
    #[oai(status = 200, content_type = "application/x-ndjson")]
    Records(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// The export's answer: its body, its `Content-Disposition`, and a 200 that declares both
/// media types the route answers with (`application/x-ndjson` and `text/csv`), so a client
/// generated from the document accepts either.
pub struct Export(NdjsonExport);

impl Export {
    fn new(body: Body, disposition: String) -> Self {
        Self(NdjsonExport::Records(Binary(body), disposition))
    }
}

impl ApiResponse for Export {
    fn meta() -> MetaResponses {
        let mut meta = NdjsonExport::meta();
        for response in &mut meta.responses {
            if let Some(ndjson) = response.content.first() {
                let schema = ndjson.schema.clone();
                response.content.push(MetaMediaType {
                    content_type: "text/csv",
                    schema,
                });
            }
        }
        meta
    }

    fn register(registry: &mut Registry) {
        NdjsonExport::register(registry);
    }
}

impl IntoResponse for Export {
    fn into_response(self) -> poem::Response {
        self.0.into_response()
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Audit")]
impl AuditApi {
    /// List recorded API calls
    ///
    /// Newest first. Filters: `key_id`, `user_id`, `project`, `route`, `method`, `status`,
    /// `outcome`, `from`, `to`. Scope `audit:read`.
    #[oai(
        path = "/audit/requests",
        method = "get",
        operation_id = "listRequestRecords"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Credentials,
        key_id: Query<Option<String>>,
        user_id: Query<Option<String>>,
        project: Query<Option<Uuid>>,
        route: Query<Option<String>>,
        method: Query<Option<String>>,
        status: Query<Option<i32>>,
        outcome: Query<Option<String>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<RequestRecordList>> {
        let caller = self.state.authorize(&auth, Scope::AuditRead).await?;
        let limit = cursor::limit(limit.0)?;
        let resume: Option<Resume> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let before = resume.map(Resume::before);
        if before.is_some_and(|seq| seq < 1) {
            return Err(ApiError::field("cursor", "not a cursor returned by this API").into());
        }
        audit_filters::list(method.0.as_deref(), status.0, outcome.0.as_deref())?;
        audit_filters::range(from.0, to.0)?;
        let (actor_type, actor) = audit_filters::actor(key_id.0, user_id.0)?;
        // A caller's or a project's own index beats reading every tenant's records of a window.
        let indexed = actor.is_some() || project.0.is_some();
        let walk = crate::audit::walk(&self.state.pool, from.0, to.0, indexed, resume).await?;
        let mut query = sqlx::query_as(walk.statement())
            .persistent(false)
            .bind(actor)
            .bind(project.0)
            .bind(route.0)
            .bind(method.0)
            .bind(status.0)
            .bind(outcome.0)
            .bind(from.0)
            .bind(to.0)
            .bind(before)
            .bind(caller.visible_projects())
            .bind(limit + 1)
            .bind(actor_type);
        if let Walk::Between(first, last) = walk {
            query = query.bind(first).bind(last);
        }
        let mut rows: Vec<Record> = query.fetch_all(&self.state.pool).await?;
        let has_more = cursor::page(&mut rows, limit);
        let next_cursor = has_more
            .then(|| {
                rows.last()
                    .map(|r| cursor::encode(&walk.resume(r.seq, from.0, to.0)))
            })
            .flatten();
        Ok(Json(RequestRecordList {
            data: rows.into_iter().map(Into::into).collect(),
            has_more,
            next_cursor,
        }))
    }

    /// Export recorded API calls
    ///
    /// Streams every record with `from <= occurred_at < to` (everything by default) that
    /// matches the list's filters (`key_id`, `user_id`, `project`, `route`, `method`,
    /// `status`, `outcome`, checked as the list checks them), oldest first, as NDJSON (default)
    /// or CSV (`format=csv`, RFC 4180: CRLF line ends), up to where the log ended when the
    /// export began (records appended meanwhile are left to the next export). Scope
    /// `audit:read`; a project key exports its project's records.
    #[oai(
        path = "/audit/requests/export",
        method = "get",
        operation_id = "exportRequestRecords"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        auth: Credentials,
        key_id: Query<Option<String>>,
        user_id: Query<Option<String>>,
        project: Query<Option<Uuid>>,
        route: Query<Option<String>>,
        method: Query<Option<String>>,
        status: Query<Option<i32>>,
        outcome: Query<Option<String>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        format: Query<Option<String>>,
    ) -> ApiResult<Response<Export>> {
        let caller = self.state.authorize(&auth, Scope::AuditRead).await?;
        let (format, content_type, extension) = match format.0.as_deref() {
            None | Some("ndjson") => (export::Format::Ndjson, "application/x-ndjson", "ndjson"),
            Some("csv") => (export::Format::Csv, "text/csv; charset=utf-8", "csv"),
            Some(_) => return Err(ApiError::field("format", "must be `ndjson` or `csv`").into()),
        };
        audit_filters::list(method.0.as_deref(), status.0, outcome.0.as_deref())?;
        audit_filters::range(from.0, to.0)?;
        let (actor_type, actor) = audit_filters::actor(key_id.0, user_id.0)?;
        let range = export::Range {
            from: from.0,
            to: to.0,
            projects: caller.visible_projects(),
            filters: export::Filters {
                actor_type,
                actor,
                project: project.0,
                route: route.0,
                method: method.0,
                status: status.0,
                outcome: outcome.0,
            },
        };
        let records = export::stream(self.state.pool.clone(), range, format).await?;
        let body = Body::from_bytes_stream(records);
        let disposition = format!("attachment; filename=\"herald-requests.{extension}\"");
        Ok(Response::new(Export::new(body, disposition)).header("Content-Type", content_type))
    }

    /// Verify the request log's hash chain
    ///
    /// Recomputes the chain over the records from the first to the last position with
    /// `from <= occurred_at < to` (everything by default) and reports the first broken link:
    /// an edited, removed or reordered record. With `witness=SEQ:HASH` (the `last` of an
    /// earlier check), the record at SEQ must still be there with that hash (or pruned by
    /// retention). Scope `audit:read` on an admin key or admin user.
    #[oai(
        path = "/audit/verify",
        method = "get",
        operation_id = "verifyRequestLog"
    )]
    async fn verify(
        &self,
        auth: Credentials,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        witness: Query<Option<String>>,
    ) -> ApiResult<Json<ChainCheck>> {
        let caller = self.state.authorize(&auth, Scope::AuditRead).await?;
        if caller.visible_projects().is_some() {
            return Err(ApiError::Forbidden("the whole chain is checked by admins".into()).into());
        }
        audit_filters::range(from.0, to.0)?;
        let witness = (witness.0.as_deref().map(str::parse::<Witness>).transpose())
            .map_err(|message| ApiError::field("witness", message))?;
        let key = &self.state.chain_key;
        let verified = verify_with(&self.state.pool, key, from.0, to.0, witness.as_ref()).await?;
        Ok(Json(ChainCheck {
            ok: verified.broken.is_none(),
            checked: verified.checked as i64,
            first_broken_seq: verified.broken.as_ref().map(|b| b.0),
            reason: verified.broken.map(|b| b.1),
            last: verified.last.map(|w| format!("{}:{}", w.seq, w.hash)),
        }))
    }
}
