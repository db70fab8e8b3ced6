//! Two request-body extractors for endpoints that take files. `RawBody` hands the handler the
//! body as a stream, whatever its content type (curl `-T`, Python `requests` and `fetch` send
//! chunks with none, or with their own). `JsonOrForm` takes either the endpoint's JSON body
//! (through `JsonBody`, so its errors are the same) or a `multipart/form-data` form that also
//! carries files; the OpenAPI document lists both media types.

use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use super::json_body::JsonBody;

/// The request body, unread.
pub struct RawBody(pub Body);

impl<'a> ApiExtractor<'a> for RawBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/octet-stream",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format(
                    "string", "binary",
                ))),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(RawBody(body.take()?))
    }
}

pub enum JsonOrForm<J, F> {
    Json(J),
    Form(F),
}

/// Whether the request's body is a `multipart/form-data` form (the one test for it: the edge,
/// the idempotency middleware and `JsonOrForm` must agree on which bodies are forms).
pub fn is_form(request: &Request) -> bool {
    request.content_type().is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    })
}

impl<'a, J, F> ApiExtractor<'a> for JsonOrForm<J, F>
where
    J: Type + DeserializeOwned,
    F: Payload + ParsePayload,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        J::register(registry);
        F::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![
                MetaMediaType {
                    content_type: "application/json",
                    schema: J::schema_ref(),
                },
                MetaMediaType {
                    content_type: F::CONTENT_TYPE,
                    schema: F::schema_ref(),
                },
            ],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if is_form(request) {
            return F::from_request(request, body).await.map(JsonOrForm::Form);
        }
        <JsonBody<J> as ApiExtractor>::from_request(request, body, options)
            .await
            .map(|JsonBody(json)| JsonOrForm::Json(json))
    }
}
