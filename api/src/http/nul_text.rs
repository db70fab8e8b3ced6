//! The NUL character in a request's path or query. No text PostgreSQL stores can hold it, so a
//! parameter carrying one (`%00`) would fail in the database as a 500; the edge refuses it
//! first, as a 400 naming the parameter, like a body holding `\u0000` (`json_body`).

use herald_domain::FieldError;
use poem::http::{StatusCode, Uri};
use poem::Response;

use super::edge_problems::problem_response;
use super::problem::Problem;
use super::redact::percent_decode as decode;

const MESSAGE: &str =
    "text must not contain the NUL character (%00), which PostgreSQL cannot store";

/// A 400 `VALIDATION_FAILED` naming the first query parameter (or `path`) whose decoded text
/// holds NUL; `None` when none does.
pub(super) fn refusal(uri: &Uri) -> Option<Response> {
    let field = if decode(uri.path()).contains(&0) {
        Some("path".to_owned())
    } else {
        uri.query().and_then(|query| {
            query.split('&').find_map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = decode(&value.replace('+', " "));
                let name = decode(&name.replace('+', " "));
                (value.contains(&0) || name.contains(&0))
                    .then(|| String::from_utf8_lossy(&name).replace('\0', "\u{FFFD}"))
            })
        })
    }?;
    let problem = Problem::new(
        StatusCode::BAD_REQUEST,
        "VALIDATION_FAILED",
        "the request has invalid fields",
    )
    .with_errors(vec![FieldError::new(field, MESSAGE)]);
    Some(problem_response(problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(uri: &str) -> Option<String> {
        let response = refusal(&uri.parse().unwrap())?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = futures::executor::block_on(response.into_body().into_vec()).unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "VALIDATION_FAILED");
        Some(problem["errors"][0]["field"].as_str().unwrap().to_owned())
    }

    #[test]
    fn a_nul_anywhere_in_a_parameter_or_the_path_is_named() {
        assert_eq!(
            refused_field("/api/v1/events?aggregate_id=%00").as_deref(),
            Some("aggregate_id")
        );
        assert_eq!(
            refused_field("/api/v1/events?limit=5&actor=a%00b").as_deref(),
            Some("actor")
        );
        assert_eq!(
            refused_field("/api/v1/webhooks/wh%00").as_deref(),
            Some("path")
        );
        assert_eq!(
            refused_field("/api/v1/events?ty%00pe=x").as_deref(),
            Some("ty\u{FFFD}pe")
        );
    }

    #[test]
    fn other_escapes_and_malformed_ones_pass() {
        assert_eq!(
            refused_field("/api/v1/events?actor=a%20b&type=%zz&x=%0"),
            None
        );
        assert_eq!(
            refused_field("/api/v1/events?from=2026-01-01T00%3A00%3A00%2B00%3A00"),
            None
        );
        assert_eq!(refused_field("/api/v1/jobs"), None);
        assert_eq!(refused_field("/api/v1/webhooks/a%+0"), None);
        assert_eq!(
            refused_field("/api/v1/events?actor=%2500"),
            None,
            "the text `%00`"
        );
    }
}
