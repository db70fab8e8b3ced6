//! Request bodies that go to file storage are streamed, not read into memory: a resumable
//! upload's chunk (`PUT /api/v1/uploads/{id}/chunks/{n}`) and the multipart forms that carry
//! files (`POST /api/v1/jobs`, `POST /api/v1/jobs/{id}/complete`). The edge gives them their
//! own size limit, counted as the bytes flow (a lying or absent `Content-Length` cannot get
//! past it), and their own, longer, timeout. Every other body is read whole under
//! `http.max_body_bytes`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use poem::http::{header, Method};
use poem::{Body, Request, Response};

use super::edge_problems::too_large;

/// Limits for streamed bodies (from `[uploads]`).
#[derive(Debug, Clone)]
pub struct StreamedLimits {
    pub chunk_bytes: u64,
    pub multipart_bytes: u64,
    pub timeout: Duration,
}

/// What was read of a streamed body: its bytes so far (a chunked body declares none, and its
/// record counts what arrived), and whether it went past its limit.
#[derive(Debug, Default)]
pub struct Meter {
    pub read: AtomicU64,
    pub exceeded: AtomicBool,
}

/// Room for the form fields and part headers around a multipart file.
const FORM_OVERHEAD: u64 = 1024 * 1024;

impl StreamedLimits {
    /// The byte limit for this request's body when it is one that is streamed.
    pub fn for_request(&self, req: &Request) -> Option<u64> {
        let path = req.uri().path();
        let segments: Vec<&str> = path.strip_prefix("/api/v1/")?.split('/').collect();
        let multipart = super::payloads::is_form(req);
        match (req.method(), segments.as_slice()) {
            (&Method::PUT, ["uploads", _, "chunks", _]) => Some(self.chunk_bytes),
            // No body, but assembling a large file takes the streamed requests' time.
            (&Method::POST, ["uploads", _, "complete"]) => Some(self.chunk_bytes),
            (&Method::POST, ["jobs"]) | (&Method::POST, ["jobs", _, "complete"]) if multipart => {
                Some(self.multipart_bytes + FORM_OVERHEAD)
            }
            _ => None,
        }
    }
}

/// Leaves a streamed body unread but counted (`meter`): more than `limit` bytes fails the read
/// and sets `exceeded`. A declared length over the limit is refused at once (the refusal).
pub fn limit_streamed(req: &mut Request, limit: u64, meter: Arc<Meter>) -> Option<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Some(too_large(limit));
    }
    let body = limited(req.take_body(), limit, meter);
    req.set_body(body);
    None
}

/// Wraps `body` so that what is read is counted in `meter`, and reading past `limit` bytes
/// fails and sets `exceeded` (the edge then answers 413 whatever the handler made of the
/// failed read).
pub fn limited(body: Body, limit: u64, meter: Arc<Meter>) -> Body {
    let stream = body.into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        let seen = meter.read.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
        if seen > limit {
            meter.exceeded.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(
                "the request body is larger than allowed",
            ));
        }
        Ok(chunk)
    });
    Body::from_bytes_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::header;

    fn limits() -> StreamedLimits {
        StreamedLimits {
            chunk_bytes: 10,
            multipart_bytes: 100,
            timeout: Duration::from_secs(1),
        }
    }

    fn request(method: Method, path: &str, content_type: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path.parse().unwrap())
            .header(header::CONTENT_TYPE, content_type)
            .finish()
    }

    #[test]
    fn only_chunks_and_multipart_forms_that_carry_files_are_streamed() {
        let l = limits();
        let form = "multipart/form-data; boundary=x";
        let chunk = request(
            Method::PUT,
            "/api/v1/uploads/u/chunks/3",
            "application/octet-stream",
        );
        assert_eq!(l.for_request(&chunk), Some(10));
        let submit = request(Method::POST, "/api/v1/jobs", form);
        assert_eq!(l.for_request(&submit), Some(100 + FORM_OVERHEAD));
        let complete = request(Method::POST, "/api/v1/jobs/j/complete", form);
        assert_eq!(l.for_request(&complete), Some(100 + FORM_OVERHEAD));
        let json = request(Method::POST, "/api/v1/jobs", "application/json");
        assert_eq!(l.for_request(&json), None);
        let assembly = request(Method::POST, "/api/v1/uploads/u/complete", "");
        assert_eq!(l.for_request(&assembly), Some(10));
        let other = request(Method::POST, "/api/v1/webhooks", form);
        assert_eq!(l.for_request(&other), None);
    }

    #[tokio::test]
    async fn reading_past_the_limit_fails_and_says_so() {
        let meter = Arc::new(Meter::default());
        let body = limited(Body::from_vec(vec![0; 11]), 10, meter.clone());
        assert!(body.into_bytes().await.is_err());
        assert!(meter.exceeded.load(Ordering::Relaxed));
        let meter = Arc::new(Meter::default());
        let body = limited(Body::from_vec(vec![0; 10]), 10, meter.clone());
        assert_eq!(body.into_bytes().await.unwrap().len(), 10);
        assert!(!meter.exceeded.load(Ordering::Relaxed));
        assert_eq!(
            meter.read.load(Ordering::Relaxed),
            10,
            "what was read is counted"
        );
    }
}
