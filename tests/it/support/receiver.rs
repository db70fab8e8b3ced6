//! A real local HTTP receiver for webhook tests: it records every request it gets and answers
//! as told (always 200, a fixed status, or failing every other request).

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{handler, web::Data, EndpointExt, Request, Response, Route, Server};

#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub custom: Option<String>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
pub struct Behaviour {
    /// 0: answer 200. Otherwise answer this status.
    pub status: AtomicU16,
    /// When set, every other request fails with 500 (starting with the first).
    pub flaky: std::sync::atomic::AtomicBool,
    /// Milliseconds to wait before answering.
    pub delay_ms: AtomicU64,
    /// When set, the answer's status line and the first bytes of its body go out at once and
    /// the rest of the body this many milliseconds later.
    pub stall_body_ms: AtomicU64,
    pub calls: AtomicU64,
}

/// What the handler shares with the test: the log of requests and how to answer.
type Shared = (Arc<Mutex<Vec<Received>>>, Arc<Behaviour>);

pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub behaviour: Arc<Behaviour>,
}

#[handler]
async fn receive(req: &Request, body: Vec<u8>, Data(state): Data<&Shared>) -> Response {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (received, behaviour) = state;
    let call = behaviour.calls.fetch_add(1, Ordering::SeqCst);
    let delay = behaviour.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fixed = behaviour.status.load(Ordering::SeqCst);
    let status = if fixed != 0 {
        fixed
    } else if behaviour.flaky.load(Ordering::SeqCst) && call % 2 == 0 {
        500
    } else {
        200
    };
    if status == 200 {
        received.lock().unwrap().push(Received {
            webhook_id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
            custom: req
                .headers()
                .get("x-custom")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    let answer = Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap());
    match behaviour.stall_body_ms.load(Ordering::SeqCst) {
        0 => answer.body("ok"),
        stall => answer.body(poem::Body::from_bytes_stream(stalled_body(stall))),
    }
}

/// A body whose first bytes come at once and whose last come `stall_ms` later.
fn stalled_body(
    stall_ms: u64,
) -> impl futures::Stream<Item = Result<&'static [u8], std::io::Error>> + Send + 'static {
    futures::stream::once(async { Ok(&b"accepted, "[..]) }).chain(futures::stream::once(
        async move {
            tokio::time::sleep(Duration::from_millis(stall_ms)).await;
            Ok(&b"and the rest"[..])
        },
    ))
}

impl Receiver {
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        Self::serve(acceptor, "http")
    }

    /// A receiver on https, with a certificate for 127.0.0.1 signed by `authority`.
    pub async fn start_tls(authority: &super::tls::TestAuthority) -> Self {
        let inner = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(authority.server.clone());
        Self::serve(super::tls::TlsAcceptor { inner, tls }, "https")
    }

    fn serve(acceptor: impl Acceptor + 'static, scheme: &str) -> Self {
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Behaviour::default());
        let app = Route::new()
            .at("/hook", poem::post(receive))
            .data((received.clone(), behaviour.clone()));
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self {
            url: format!("{scheme}://127.0.0.1:{port}/hook"),
            received,
            behaviour,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` successful deliveries arrived (up to `within`), then returns them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.all();
            if all.len() >= n || tokio::time::Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies a Standard Webhooks signature header, written from the specification (not with
/// Herald's code): any `v1,` entry must equal base64(HMAC-SHA256(base64-decoded secret,
/// "id.timestamp.body")).
pub fn signature_valid(secret: &str, received: &Received) -> bool {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.webhook_id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received.signature.split(' ').any(|s| s == expected)
}
