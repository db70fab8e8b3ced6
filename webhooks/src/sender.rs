//! Sending one message: sign it with every active secret, POST it through the guarded client
//! (no redirects, a timeout), and describe what came back. Used by the dispatcher and by
//! `POST /webhooks/{id}/test` and resends. The endpoint's header values arrive as stored (sealed,
//! `header_seal`) and are opened here, the one place they are used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::guard::AddressPolicy;
use crate::header_seal::HeaderSeal;
use crate::signature::{signature_header, SigningSecret};

/// Longest response body kept with an attempt.
pub const RESPONSE_BODY_LIMIT: usize = 20 * 1024;

pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    seal: HeaderSeal,
}

/// One message to send.
pub struct Message<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    pub body: &'a [u8],
    pub secrets: &'a [SigningSecret],
    /// The endpoint's custom headers as stored (values sealed for `endpoint`).
    pub endpoint: uuid::Uuid,
    pub headers: &'a std::collections::BTreeMap<String, String>,
}

/// What happened to one attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Option<u16>,
    pub duration: Duration,
    /// `None` on a 2xx; otherwise `http_status`, `timeout`, `connect`, `refused_address`, ...
    pub error_class: Option<String>,
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.error_class.is_none()
    }
}

impl Sender {
    /// `extra_ca_pem`: certificate authorities trusted on top of the platform's store.
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        extra_ca_pem: Option<&[u8]>,
        seal: HeaderSeal,
    ) -> anyhow::Result<Self> {
        // TLS for https endpoints: rustls with the ring provider, certificates checked against
        // the platform's trust store. Installing the provider twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(policy);
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = extra_ca_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .dns_resolver(policy.resolver())
            .no_proxy()
            .pool_max_idle_per_host(16)
            .build()?;
        Ok(Self {
            client,
            policy,
            seal,
        })
    }

    pub async fn send(&self, message: Message<'_>) -> Outcome {
        let started = Instant::now();
        let refused = |class: &str, detail: String| Outcome {
            status: None,
            duration: started.elapsed(),
            error_class: Some(class.to_owned()),
            body: Some(detail),
            retry_after: None,
        };
        let url = match reqwest::Url::parse(message.url) {
            Ok(url) => url,
            Err(e) => return refused("invalid_url", e.to_string()),
        };
        if let Err(refusal) = self.policy.check_url(&url) {
            return refused("refused_address", refusal.to_string());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        for (name, value) in &self.seal.open_all(message.endpoint, message.headers) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(name, value);
            }
        }
        let signature =
            signature_header(message.secrets, message.webhook_id, timestamp, message.body);
        let request = self
            .client
            .post(url)
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", message.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.to_vec());
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let chain = format!("{error:?}");
                let class = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    if chain.contains("NoAllowedAddress") {
                        "refused_address"
                    } else if chain.contains("InvalidCertificate") {
                        "tls_certificate"
                    } else {
                        "connect"
                    }
                } else {
                    "request"
                };
                return refused(class, error.to_string());
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, chrono::Utc::now()));
        let (body, timed_out) = read_limited(response).await;
        Outcome {
            status: Some(status.as_u16()),
            duration: started.elapsed(),
            // A 2xx status line is the receiver's acceptance: a body that then stalls past
            // the timeout does not undo it (sent again, the message would arrive twice).
            error_class: if status.is_success() {
                None
            } else if timed_out {
                Some("timeout".into())
            } else {
                Some("http_status".into())
            },
            body: Some(body),
            retry_after,
        }
    }
}

/// Reads at most `RESPONSE_BODY_LIMIT` bytes of the body (the rest is dropped unread).
async fn read_limited(response: reqwest::Response) -> (String, bool) {
    let mut stream = response.bytes_stream();
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_BODY_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => kept.extend_from_slice(&chunk),
            Some(Err(error)) => {
                return (
                    String::from_utf8_lossy(&kept).into_owned(),
                    error.is_timeout(),
                )
            }
            None => break,
        }
    }
    kept.truncate(RESPONSE_BODY_LIMIT);
    (String::from_utf8_lossy(&kept).into_owned(), false)
}

/// A `Retry-After` value as a wait from `now`: whole seconds, or an HTTP date in any of the
/// three forms RFC 9110 has recipients accept (IMF-fixdate, and the obsolete RFC 850 and
/// asctime forms; a date already past is no wait at all); `None` when it is neither.
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let obsolete = |format| chrono::NaiveDateTime::parse_from_str(value, format).ok();
    let at = match chrono::DateTime::parse_from_rfc2822(value) {
        Ok(at) => at.to_utc(),
        Err(_) => obsolete("%A, %d-%b-%y %H:%M:%S GMT")
            .or_else(|| obsolete("%a %b %e %H:%M:%S %Y"))?
            .and_utc(),
    };
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T08:49:37Z")
            .unwrap()
            .to_utc();
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 08:51:07 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 08:49:37 GMT", now),
            Some(Duration::ZERO),
            "a date past"
        );
        assert_eq!(
            retry_after("Monday, 07-Dec-26 08:50:37 GMT", now),
            Some(Duration::from_secs(60)),
            "RFC 850"
        );
        assert_eq!(
            retry_after("Mon Dec  7 08:50:07 2026", now),
            Some(Duration::from_secs(30)),
            "asctime"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }
}
