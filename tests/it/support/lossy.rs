//! A relay in front of the tests' PostgreSQL that can lose an answer: once armed, the next
//! bytes PostgreSQL sends on a chosen connection that hold a given text (a command tag such as
//! `INSERT 0 1`, which PostgreSQL sends once the statement is done, with the commit's
//! `ReadyForQuery` after it) are kept from the client, and the client's side of that
//! connection is cut, as a network failing between the database's commit and its answer's
//! arrival would. The database's side is left open (its backend notices nothing until it next
//! writes), so only the client can end it. Connections are chosen by what their client sends
//! (its start-up message names its `application_name`), or all are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct LossyRelay {
    port: u16,
    target_url: String,
    state: Arc<Losing>,
}

/// What the relay's connections share.
struct Losing {
    /// What a client sends on a connection that can lose an answer (`None`: any connection).
    chosen: Option<&'static [u8]>,
    /// The text of the answer to lose next, once armed.
    armed: Mutex<Option<&'static str>>,
    lost: AtomicBool,
    /// The database's side of the connections whose client side was cut.
    left_open: Mutex<Vec<TcpStream>>,
}

impl LossyRelay {
    /// Relays to the server of `database_url`; only connections whose client sends `chosen`
    /// (every connection, without it) can lose an answer.
    pub async fn start(database_url: &str, chosen: Option<&'static [u8]>) -> Self {
        let (_, rest) = database_url.split_once('@').expect("a URL with a user");
        let (server, _) = rest.split_once('/').expect("a URL with a database");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Losing {
            chosen,
            armed: Mutex::new(None),
            lost: AtomicBool::new(false),
            left_open: Mutex::new(Vec::new()),
        });
        let (server, shared) = (server.to_owned(), state.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(&server).await else {
                    continue;
                };
                tokio::spawn(relay(client, upstream, shared.clone()));
            }
        });
        Self {
            port,
            target_url: database_url.to_owned(),
            state,
        }
    }

    /// `database_url` (as given to `start`) with the relay in its server's place.
    pub fn url(&self) -> String {
        let (user, rest) = self.target_url.split_once('@').unwrap();
        let (_, database) = rest.split_once('/').unwrap();
        format!("{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// A pool of one connection through the relay, never pinged: a lost answer and what follows
    /// it each find that one connection.
    pub async fn single_connection_pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect(&self.url())
            .await
            .unwrap()
    }

    /// The next answer holding `text` on a chosen connection is lost, and that connection cut.
    pub fn lose_next_answer_holding(&self, text: &'static str) {
        self.state.lost.store(false, Ordering::SeqCst);
        *self.state.armed.lock().unwrap() = Some(text);
    }

    /// Whether an answer was lost since `lose_next_answer_holding`.
    pub fn answer_lost(&self) -> bool {
        self.state.lost.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, mut upstream: TcpStream, state: Arc<Losing>) {
    let chosen = AtomicBool::new(state.chosen.is_none());
    let cut = {
        let (mut from_client, mut to_client) = client.split();
        let (mut from_server, mut to_server) = upstream.split();
        let outbound = async {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
                if state.chosen.is_some_and(|text| holds(&buffer[..n], text)) {
                    chosen.store(true, Ordering::SeqCst);
                }
                if to_server.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            false
        };
        let inbound = async {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buffer).await {
                if chosen.load(Ordering::SeqCst) && state.lose(&buffer[..n]) {
                    return true;
                }
                if to_client.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            false
        };
        tokio::select! {
            cut = outbound => cut,
            cut = inbound => cut,
        }
    };
    if cut {
        state.left_open.lock().unwrap().push(upstream);
    }
}

impl Losing {
    /// Whether `answer` is the one to lose (and then it is).
    fn lose(&self, answer: &[u8]) -> bool {
        let mut armed = self.armed.lock().unwrap();
        if !armed.is_some_and(|text| holds(answer, text.as_bytes())) {
            return false;
        }
        *armed = None;
        self.lost.store(true, Ordering::SeqCst);
        true
    }
}

fn holds(bytes: &[u8], text: &[u8]) -> bool {
    bytes.windows(text.len()).any(|window| window == text)
}
