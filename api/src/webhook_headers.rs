//! Seals the header values of webhook endpoints stored before values were sealed
//! (`herald_webhooks::header_seal`): each `webhook_endpoint.created` or `.updated` event whose
//! headers hold a plain value gets them sealed in place (the only update the log's append-only
//! rule lets through, migration 0031), and the endpoint's read-model copy, when it holds the
//! same headers, the same sealed ones, as the projection would write them from the sealed event.
//! Run at start, before anything is served; a no-op once done. Two servers starting together
//! each seal an event only if it is still as they read it.

use std::collections::BTreeMap;

use herald_webhooks::header_seal::{HeaderSeal, SEALED};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Seals every plain header value still in the log; returns how many events were sealed.
pub async fn seal_stored(pool: &PgPool, seal: &HeaderSeal) -> anyhow::Result<u64> {
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
        let before: BTreeMap<String, Value> = headers.clone().into_iter().collect();
        for (name, value) in headers.iter_mut() {
            if let Value::String(plain) = value {
                if !plain.starts_with(SEALED) {
                    *value = Value::String(seal.seal(endpoint, name, plain));
                }
            }
        }
        let after = Value::Object(headers.clone());
        let mut tx = pool.begin().await?;
        let done = sqlx::query(
            "UPDATE events SET payload = $4::json \
              WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1 \
                AND sequence = $2 AND payload::text = $3",
        )
        .bind(&aggregate_id)
        .bind(sequence)
        .bind(&text)
        .bind(serde_json::to_string(&payload)?)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE webhook_endpoints SET doc = jsonb_set(doc, '{headers}', $3) \
                  WHERE id = $1 AND doc -> 'headers' = $2",
            )
            .bind(endpoint)
            .bind(sqlx::types::Json(&before))
            .bind(sqlx::types::Json(&after))
            .execute(&mut *tx)
            .await?;
            sealed += 1;
        }
        tx.commit().await?;
    }
    if sealed > 0 {
        tracing::info!(
            events = sealed,
            "sealed webhook header values stored in plain text"
        );
    }
    Ok(sealed)
}
