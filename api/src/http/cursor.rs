//! Opaque pagination cursors: the keyset position of the last item, as base64url JSON.
//! Clients must treat them as opaque; a cursor that does not decode is a 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::problem::ApiError;

pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("cursor positions serialize"))
}

pub fn decode<T: DeserializeOwned>(cursor: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::field("cursor", "not a cursor returned by this API"))
}

/// A list's `limit` parameter: 1–100, 20 when absent.
pub fn limit(asked: Option<i64>) -> Result<i64, ApiError> {
    limit_within(asked, 20, 100)
}

/// A `limit` parameter of 1–`most`, `default` when absent.
pub fn limit_within(asked: Option<i64>, default: i64, most: i64) -> Result<i64, ApiError> {
    let limit = asked.unwrap_or(default);
    if !(1..=most).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            &format!("must be between 1 and {most}"),
        ));
    }
    Ok(limit)
}

/// Cuts `rows` (fetched with `limit + 1`) to one page; true when there are more after it.
pub fn page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    has_more
}
