//! `JsonBody<T>`: the request-body extractor for every JSON endpoint.
//!
//! poem-openapi's own `Json<T>` coerces (a number is accepted where a string is expected) and
//! its errors do not name the offending field. `JsonBody` documents the same schema (from the
//! poem-openapi `Type` of `T`) but parses with serde, strictly, through `serde_path_to_error`,
//! so a refusal says exactly which field is wrong: `{"field": "priority", "message": "invalid
//! type: string \"high\", expected i64"}`; an array where the schema wants an object, which
//! serde would take field by field, is refused first (`json_shape`). An empty body without a content type counts as `{}`,
//! so `POST /jobs/{id}/cancel`-style calls need no body.

use poem::http::StatusCode;
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use super::edge_problems::{problem_response, BeforeHandler};
use super::problem::Problem;
use herald_domain::FieldError;

pub struct JsonBody<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn invalid_body(field: String, message: String) -> poem::Error {
    let problem = Problem::new(
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
        "the request body is not valid JSON for this endpoint",
    )
    .with_errors(vec![FieldError::new(field, message)]);
    refusal(problem)
}

fn refusal(problem: Problem) -> poem::Error {
    let mut error = poem::Error::from_response(problem_response(problem));
    // (The error's own extensions replace the response's when it turns back into one.)
    error.set_data(BeforeHandler);
    error
}

fn unsupported(content_type: &str) -> poem::Error {
    let problem = Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        format!("send the body as application/json, not {content_type}"),
    );
    refusal(problem)
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        is_json(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        let data: &[u8] = if data.is_empty() { b"{}" } else { &data };
        if herald_store::has_nul_escape(data) {
            return Err(invalid_body(
                "body".into(),
                "text must not contain the NUL character (\\u0000), which PostgreSQL cannot store"
                    .into(),
            ));
        }
        if data.contains(&b'[') {
            let shaped = serde_json::from_slice(data).ok();
            if let Some(field) = shaped.and_then(|v| super::json_shape::array_for_object::<T>(&v)) {
                let message = "invalid type: sequence, expected an object".to_owned();
                return Err(invalid_body(field, message));
            }
        }
        let mut deserializer = serde_json::Deserializer::from_slice(data);
        serde_path_to_error::deserialize(&mut deserializer)
            .map(JsonBody)
            .map_err(|error| {
                let path = error.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                invalid_body(field, error.into_inner().to_string())
            })
    }
}

impl<'a, T: Type + DeserializeOwned> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if is_json(content_type) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            Some(content_type) => Err(unsupported(content_type)),
            None => {
                let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
                if data.is_empty() {
                    <Self as ParsePayload>::from_request(
                        request,
                        &mut RequestBody::new(poem::Body::empty()),
                    )
                    .await
                } else {
                    Err(unsupported("a body without Content-Type"))
                }
            }
        }
    }
}
