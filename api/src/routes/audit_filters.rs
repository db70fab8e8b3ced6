//! Checks the request log's list and export filters before anything is read: a value no record
//! can hold (an outcome or method that does not exist, a status outside 100–599, a range that
//! ends before it starts) is a mistake the caller should hear about, not an empty page.

use chrono::{DateTime, Datelike, Utc};

use crate::http::problem::ApiError;

/// The outcomes a record can have.
pub const OUTCOMES: [&str; 6] = [
    "success",
    "client_error",
    "denied",
    "rate_limited",
    "server_error",
    "replayed",
];

/// Whether `method` can be a recorded method: an HTTP token (RFC 9110), as any method a
/// client sent is recorded, `FOO` and `get` too, of at most the 16 bytes a record keeps.
fn is_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= crate::http::request_log::MAX_METHOD
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The time range: each end within the years RFC 3339 writes (0001–9999, which PostgreSQL
/// stores too), and `from` not after `to`.
pub fn range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    within_years("from", from)?;
    within_years("to", to)?;
    match (from, to) {
        (Some(from), Some(to)) if from > to => {
            Err(ApiError::field("from", "must not be after `to`"))
        }
        _ => Ok(()),
    }
}

/// `at`, if given, lies in the years 0001 to 9999.
pub fn within_years(field: &str, at: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match at.map(|at| at.year()) {
        Some(year) if !(1..=9999).contains(&year) => Err(ApiError::field(
            field,
            "must be a time in the years 0001 to 9999",
        )),
        _ => Ok(()),
    }
}

/// The actor named: a key's records (`api_key`) or a user's, an id naming one kind only.
pub fn actor(
    key_id: Option<String>,
    user_id: Option<String>,
) -> Result<(Option<&'static str>, Option<String>), ApiError> {
    match (key_id, user_id) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "user_id",
            "give `key_id` or `user_id`, not both",
        )),
        // An id that could name no caller is refused, not answered with an empty page.
        (Some(key), None) if herald_domain::KeyId::parse(&key).is_none() => Err(ApiError::field(
            "key_id",
            "must be a key id (16 letters and digits)",
        )),
        (Some(key), None) => Ok((Some("api_key"), Some(key))),
        // Any form of UUID, matched as records hold it (hyphenated, lower case).
        (None, Some(user)) => match uuid::Uuid::parse_str(&user) {
            Ok(user) => Ok((Some("user"), Some(user.to_string()))),
            Err(_) => Err(ApiError::field("user_id", "must be a user id (a UUID)")),
        },
        (None, None) => Ok((None, None)),
    }
}

/// The list's own filters besides the range.
pub fn list(
    method: Option<&str>,
    status: Option<i32>,
    outcome: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(method) = method {
        if !is_method(method) {
            return Err(ApiError::field(
                "method",
                "must be an HTTP method of at most 16 characters: letters, digits or !#$%&'*+-.^_`|~",
            ));
        }
    }
    if status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(ApiError::field(
            "status",
            "must be an HTTP status, 100 to 599",
        ));
    }
    if outcome.is_some_and(|o| !OUTCOMES.contains(&o)) {
        return Err(ApiError::field(
            "outcome",
            &format!("must be one of {}", OUTCOMES.join(", ")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_id_that_could_name_nobody_is_refused() {
        let user = "0195a3c4-2f4e-7b6a-8c1d-2e3f4a5b6c7d".to_owned();
        assert!(actor(Some("abcdefgh12345678".into()), None).is_ok());
        let simple = user.replace('-', "").to_uppercase();
        assert_eq!(
            actor(None, Some(simple)).unwrap(),
            (Some("user"), Some(user.clone()))
        );
        assert!(actor(None, None).is_ok());
        assert!(actor(Some("abc".into()), None).is_err());
        assert!(actor(Some("abcdefgh1234567!".into()), None).is_err());
        assert!(actor(None, Some("notauuid".into())).is_err());
    }

    #[test]
    fn values_no_record_can_hold_are_refused() {
        assert!(list(Some("get"), Some(404), Some("denied")).is_ok());
        assert!(list(None, None, None).is_ok());
        assert!(
            list(Some("FETCH"), None, None).is_ok(),
            "any token: a method sent"
        );
        assert!(list(Some("GE T"), None, None).is_err());
        assert!(list(Some(""), None, None).is_err());
        assert!(
            list(Some(&"X".repeat(16)), None, None).is_ok(),
            "recorded as sent"
        );
        assert!(
            list(Some(&"X".repeat(17)), None, None).is_err(),
            "no record keeps more"
        );
        assert!(list(None, Some(999), None).is_err());
        assert!(list(None, Some(99), None).is_err());
        assert!(list(None, None, Some("bogus")).is_err());
        let (early, late) = (Utc::now(), Utc::now() + chrono::Duration::hours(1));
        assert!(range(Some(early), Some(late)).is_ok());
        assert!(range(Some(early), Some(early)).is_ok());
        assert!(range(Some(late), Some(early)).is_err());
        assert!(range(Some(late), None).is_ok());
        let year = |text: &str| Some(text.parse::<DateTime<Utc>>().unwrap());
        assert!(range(year("0001-01-01T00:00:00Z"), year("9999-12-31T23:59:59Z")).is_ok());
        assert!(range(year("-4714-11-24T00:00:00Z"), None).is_err());
        assert!(range(None, year("+10000-01-01T00:00:00Z")).is_err());
    }
}
