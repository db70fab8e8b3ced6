//! Credentials kept out of the request log (and the server's log lines): an API key's secret
//! (`hrld_live_<id>_<secret>`: the id, which is public, stays) and a session token (a JWT:
//! `eyJ…` in three dot-separated parts) wherever a client put them, in a path it pasted one
//! into or its user agent; and a client's `X-Request-Id` that holds one is not adopted.

use std::borrow::Cow;

const KEY_PREFIX: &str = "hrld_live_";

/// `text` with every API key's secret and every session token in it redacted. Either may come
/// percent-encoded (`hrld%5Flive%5F…`, `eyJ…%2EeyJ…`, even encoded twice), as routing would
/// decode it: text holding one is matched, and kept, decoded, its control characters (a NUL,
/// a line break) written back as `%XX`, so a record can always be stored and a log line
/// cannot be split. Text holding none is kept as it came.
pub(crate) fn redact_secrets(text: &str) -> Cow<'_, str> {
    let decoded = fully_decoded(text);
    if !decoded.contains(KEY_PREFIX) && !decoded.contains("eyJ") {
        return text.into();
    }
    let redacted = redact_tokens(&redact_keys(&decoded)).into_owned();
    if redacted == decoded {
        return text.into();
    }
    escape_controls(&redacted).into()
}

/// Whether `text` holds an API key or a session token.
pub(crate) fn holds_secret(text: &str) -> bool {
    let decoded = fully_decoded(text);
    decoded.contains(KEY_PREFIX) || redact_tokens(&decoded) != decoded
}

/// `text` percent-decoded again while that changes it (three times at most).
fn fully_decoded(text: &str) -> Cow<'_, str> {
    let mut decoded = Cow::Borrowed(text);
    for _ in 0..3 {
        if !decoded.contains('%') {
            break;
        }
        let again = percent_decoded(&decoded).into_owned();
        if again == decoded {
            break;
        }
        decoded = again.into();
    }
    decoded
}

/// `text` with each control character written as `%XX`.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() {
            escaped.push_str(&format!("%{:02X}", c as u8));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// `decoded` with the secret of every API key in it (`hrld_live_<id>_<secret>`, pasted where
/// an id belongs, say) replaced by `[redacted]`. The key id, which is public, stays, so the
/// record still says which key it was.
fn redact_keys(decoded: &str) -> Cow<'_, str> {
    const PREFIX: &str = KEY_PREFIX;
    if !decoded.contains(PREFIX) {
        return decoded.into();
    }
    let mut kept = String::with_capacity(decoded.len());
    let mut rest = decoded;
    while let Some(at) = rest.find(PREFIX) {
        let (before, key) = rest.split_at(at + PREFIX.len());
        kept.push_str(before);
        let token = key
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(key.len());
        // The id is the token's first part; whatever follows its `_` is secret.
        let id = key[..token].find('_').map_or(0, |end| end + 1);
        kept.push_str(&key[..id]);
        if id < token {
            kept.push_str("[redacted]");
        }
        rest = &key[token..];
    }
    kept.push_str(rest);
    kept.into()
}

/// `text` with each `%XX` turned into its byte (other `%`s kept), read as UTF-8 (lossily).
fn percent_decoded(text: &str) -> Cow<'_, str> {
    String::from_utf8_lossy(&percent_decode(text))
        .into_owned()
        .into()
}

/// Percent-decoding to bytes: `%XX` (two hex digits) becomes its byte; anything else, a
/// malformed escape included, stays as it is.
pub(super) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        // Two hex digits (`from_str_radix` alone would take `+0` for a number).
        let hex = bytes
            .get(at + 1..at + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    out
}

/// `text` with every JWT-shaped token (`eyJ` then base64url text holding two dots) replaced
/// by `[redacted]`.
fn redact_tokens(text: &str) -> Cow<'_, str> {
    if !text.contains("eyJ") {
        return text.into();
    }
    let is_token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let (bytes, mut kept, mut from, mut at) = (text.as_bytes(), String::new(), 0, 0);
    while let Some(found) = text[at..].find("eyJ") {
        let start = at + found;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| is_token_byte(**b))
                .count();
        if bytes[start..end].iter().filter(|b| **b == b'.').count() >= 2 {
            kept.push_str(&text[from..start]);
            kept.push_str("[redacted]");
            from = end;
        }
        at = end.max(start + 3);
    }
    if from == 0 {
        return text.into();
    }
    kept.push_str(&text[from..]);
    kept.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_in_a_path_keeps_its_id_and_loses_its_secret() {
        let key = "hrld_live_AbCdEfGh12345678_s3cretS3cretS3cretS3cretS3cretS3cretS3cr000000";
        assert_eq!(
            redact_secrets(&format!("/api/v1/api-keys/{key}/rotate")),
            "/api/v1/api-keys/hrld_live_AbCdEfGh12345678_[redacted]/rotate"
        );
        assert_eq!(
            redact_secrets(&format!("/api/v1/jobs/{key}{key}")),
            "/api/v1/jobs/hrld_live_AbCdEfGh12345678_[redacted]"
        );
        // Something like a key without its id: all of it may be secret.
        assert_eq!(
            redact_secrets("/x/hrld_live_abc"),
            "/x/hrld_live_[redacted]"
        );
        assert_eq!(redact_secrets("/x/hrld_live_"), "/x/hrld_live_");
        assert_eq!(redact_secrets("/api/v1/jobs"), "/api/v1/jobs");
        // Percent-encoded, as routing would decode it: matched and kept decoded.
        let encoded = key.replace('_', "%5F").replacen('h', "%68", 1);
        assert_eq!(
            redact_secrets(&format!("/api/v1/api-keys/{encoded}")),
            "/api/v1/api-keys/hrld_live_AbCdEfGh12345678_[redacted]"
        );
        // Encoded twice: decoded twice.
        assert_eq!(
            redact_secrets(&format!("/api/v1/jobs/{}", key.replace('_', "%255F"))),
            "/api/v1/jobs/hrld_live_AbCdEfGh12345678_[redacted]"
        );
        // A path with a `%` and no key is kept as sent.
        assert_eq!(
            redact_secrets("/api/v1/jobs/a%20b%zz"),
            "/api/v1/jobs/a%20b%zz"
        );
    }

    #[test]
    fn a_session_token_anywhere_is_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        assert_eq!(
            redact_secrets(&format!("/api/v1/x/{jwt}")),
            "/api/v1/x/[redacted]"
        );
        assert_eq!(
            redact_secrets(&format!("client token={jwt}; v=1")),
            "client token=[redacted]; v=1"
        );
        let key = "hrld_live_AbCdEfGh12345678_s3cret";
        assert_eq!(
            redact_secrets(&format!("tool/1.0 key={key} {jwt}")),
            "tool/1.0 key=hrld_live_AbCdEfGh12345678_[redacted] [redacted]"
        );
        // Not a token: one dot, or none.
        assert_eq!(redact_secrets("eyJabc.def"), "eyJabc.def");
        assert_eq!(redact_secrets("curl/8.5.0"), "curl/8.5.0");
        assert!(holds_secret(key) && holds_secret(jwt) && holds_secret("hrld_live_"));
        assert!(!holds_secret("req-0001.a.b"));
    }

    #[test]
    fn an_encoded_secret_is_found_and_its_control_characters_stay_escaped() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        let encoded = jwt.replace('.', "%2E");
        assert_eq!(
            redact_secrets(&format!("/api/v1/jobs/{encoded}")),
            "/api/v1/jobs/[redacted]"
        );
        let key = "hrld_live_abcdefghijklmnop_XXXXXXXXXXXX";
        assert_eq!(
            redact_secrets(&format!("/api/v1/jobs/{key}%00")),
            "/api/v1/jobs/hrld_live_abcdefghijklmnop_[redacted]%00"
        );
        assert_eq!(
            redact_secrets(&format!("/x/{key}%0A2026 INFO fake")),
            "/x/hrld_live_abcdefghijklmnop_[redacted]%0A2026 INFO fake"
        );
        // Nothing secret: kept as it came, encoded.
        assert_eq!(
            redact_secrets("/api/v1/jobs/a%00b%0A"),
            "/api/v1/jobs/a%00b%0A"
        );
    }
}
