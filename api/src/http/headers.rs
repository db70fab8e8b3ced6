//! Security headers on every response: HSTS, no sniffing, no framing, no referrer, a
//! Content-Security-Policy (strict for the API, loose enough for the Swagger UI and Redoc pages)
//! and `Cache-Control: no-store` on everything but the documentation pages.

use poem::Response;

/// The interactive documentation pages need scripts, styles and images; nothing else does.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; \
     style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com data:; \
     img-src 'self' data: https:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

pub fn security_headers(path: &str, response: &mut Response) {
    use poem::http::HeaderValue;
    let is_docs = path == "/docs" || path.starts_with("/docs/") || path.starts_with("/redoc");
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    );
    set("x-content-type-options", "nosniff");
    set("x-frame-options", "DENY");
    set("referrer-policy", "no-referrer");
    set(
        "content-security-policy",
        if is_docs { DOCS_CSP } else { API_CSP },
    );
    if !is_docs {
        set("cache-control", "no-store");
    }
}
