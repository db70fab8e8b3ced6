//! Seals the header values of webhook endpoints stored before values were sealed
//! (`herald_webhooks::header_seal`): each `webhook_endpoint.created` or `.updated` event whose
//! headers hold a plain value gets them sealed in place (the only update the log's append-only
//! rule lets through, migration 0031), and each endpoint's read-model copy holding a plain value
//! takes the sealed headers of its latest settings event, as the projection writes them.
//! Run at start, before anything is served; a no-op once done. Two servers starting together
//! each seal an event only if it is still as they read it.

use herald_webhooks::header_seal::{HeaderSeal, SEALED};

use crate::audit::ChainKey;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Seals every plain header value still in the log; returns how many events were sealed.
/// Nothing is sealed by a server whose pepper is not the one the log was written under (the
/// request log's newest record does not match under its chain key, or a value sealed already
/// does not open): its key would seal them for good under a key no other server holds.
pub async fn seal_stored(
    pool: &PgPool,
    seal: &HeaderSeal,
    chain: &ChainKey,
) -> anyhow::Result<u64> {
    if !same_pepper(pool, seal, chain).await? {
        tracing::error!(
            "not sealing stored webhook header values: this server's pepper is not the one the \
             database was written under"
        );
        return Ok(0);
    }
    let plain: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, payload::text FROM events \
          WHERE aggregate_type = 'webhook_endpoint' \
            AND event_type IN ('webhook_endpoint.created', 'webhook_endpoint.updated') \
            AND json_typeof(payload -> 'headers') = 'object' \
            AND EXISTS (SELECT 1 FROM json_each_text(payload -> 'headers') h \
                         WHERE NOT starts_with(h.value, $1)) \
          ORDER BY aggregate_id, sequence",
    )
    .bind(SEALED)
    .fetch_all(pool)
    .await?;
    let mut sealed = 0;
    for (aggregate_id, sequence, text) in plain {
        let Ok(endpoint) = aggregate_id.parse::<Uuid>() else {
            continue;
        };
        let mut payload: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
        let Some(Value::Object(headers)) = payload.get_mut("headers") else {
            continue;
        };
        for (name, value) in headers.iter_mut() {
            if let Value::String(plain) = value {
                if !plain.starts_with(SEALED) {
                    *value = Value::String(seal.seal(endpoint, name, plain));
                }
            }
        }
        let done = sqlx::query(
            "UPDATE events SET payload = $4::json \
              WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1 \
                AND sequence = $2 AND payload::text = $3",
        )
        .bind(&aggregate_id)
        .bind(sequence)
        .bind(&text)
        .bind(serde_json::to_string(&payload)?)
        .execute(pool)
        .await?;
        sealed += done.rows_affected();
    }
    // Each endpoint's read-model copy whose headers are not all sealed takes those of its
    // latest settings event, as the projection writes them (a projector that read an event
    // before it was sealed may have written it plain meanwhile: the next start mends that).
    sqlx::query(
        "UPDATE webhook_endpoints w SET doc = jsonb_set(w.doc, '{headers}', latest.headers) \
           FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id, payload::jsonb -> 'headers' AS headers \
                   FROM events WHERE aggregate_type = 'webhook_endpoint' \
                    AND event_type IN ('webhook_endpoint.created', 'webhook_endpoint.updated') \
                  ORDER BY aggregate_id, sequence DESC) latest \
          WHERE latest.aggregate_id = w.id::text \
            AND jsonb_typeof(w.doc -> 'headers') = 'object' \
            AND jsonb_typeof(latest.headers) = 'object' \
            AND EXISTS (SELECT 1 FROM jsonb_each_text(w.doc -> 'headers') h \
                         WHERE NOT starts_with(h.value, $1)) \
            AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(latest.headers) h \
                             WHERE NOT starts_with(h.value, $1))",
    )
    .bind(SEALED)
    .execute(pool)
    .await?;
    if sealed > 0 {
        tracing::info!(
            events = sealed,
            "sealed webhook header values stored in plain text"
        );
    }
    Ok(sealed)
}

/// Whether this server's pepper is the one the database was written under, as far as the
/// request log's newest record and one sealed header value can tell.
async fn same_pepper(pool: &PgPool, seal: &HeaderSeal, chain: &ChainKey) -> anyhow::Result<bool> {
    if crate::audit::newest_under_other_key(pool, chain)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let sealed: Option<(String, String, String)> = sqlx::query_as(
        "SELECT e.aggregate_id, h.key, h.value FROM events e, json_each_text(e.payload -> 'headers') h \
          WHERE e.aggregate_type = 'webhook_endpoint' \
            AND e.event_type IN ('webhook_endpoint.created', 'webhook_endpoint.updated') \
            AND json_typeof(e.payload -> 'headers') = 'object' AND starts_with(h.value, $1) \
          LIMIT 1",
    )
    .bind(SEALED)
    .fetch_optional(pool)
    .await?;
    Ok(match sealed {
        Some((endpoint, name, value)) => endpoint
            .parse::<Uuid>()
            .is_ok_and(|endpoint| seal.open(endpoint, &name, &value).is_some()),
        None => true,
    })
}
