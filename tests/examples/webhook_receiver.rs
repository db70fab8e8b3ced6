//! A fast local webhook receiver for `bench/webhooks.sh`: answers 200 to every POST and, for
//! each message, records how long after its event was recorded (the payload's `timestamp`, the
//! event's `recorded_at`, taken in the submitting transaction) it arrived: the end-to-end latency
//! from submission to arrival. `GET /stats` reports the count and percentiles since the last
//! `POST /reset`.
//!   usage: cargo run --release -p herald-tests --example webhook_receiver -- 127.0.0.1:19090

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use poem::listener::TcpListener;
use poem::web::{Data, Json};
use poem::{handler, EndpointExt, Route, Server};
use serde_json::{json, Value};

type Latencies = Arc<Mutex<Vec<f64>>>;

#[handler]
fn receive(body: Vec<u8>, Data(latencies): Data<&Latencies>) -> &'static str {
    let arrived = Utc::now();
    let sent = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
    });
    if let Some(sent) = sent {
        let ms = (arrived - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        latencies.lock().unwrap().push(ms);
    }
    "ok"
}

#[handler]
fn stats(Data(latencies): Data<&Latencies>) -> Json<Value> {
    let mut all = latencies.lock().unwrap().clone();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Json(
        json!({"count": all.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": all.last().copied().unwrap_or(0.0)}),
    )
}

#[handler]
fn reset(Data(latencies): Data<&Latencies>) -> &'static str {
    latencies.lock().unwrap().clear();
    "ok"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19090".into());
    let latencies: Latencies = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let app = Route::new()
        .at("/hook", poem::post(receive))
        .at("/stats", poem::get(stats))
        .at("/reset", poem::post(reset))
        .data(latencies);
    Server::new(TcpListener::bind(listen)).run(app).await
}
