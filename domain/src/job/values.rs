//! Value types of a job, each parsed once from raw input ("parse, don't validate").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// What kind of work a job is, e.g. `captions.generate`: 1–100 characters of lowercase
/// letters, digits, `.`, `_` and `-`, so workers can filter on it reliably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobKind(String);

impl JobKind {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if raw.is_empty() || raw.len() > 100 || !raw.chars().all(valid_char) {
            return Err(FieldError::new(
                "kind",
                "must be 1-100 characters of lowercase letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Scheduling priority, 0 (lowest) to 9 (highest); 5 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        u8::try_from(raw)
            .ok()
            .filter(|p| *p <= 9)
            .map(Self)
            .ok_or_else(|| FieldError::new("priority", "must be between 0 and 9"))
    }
    pub fn value(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self(5)
    }
}

/// How many times a job may be started before it fails for good: 1–100, 3 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxAttempts(u32);

impl MaxAttempts {
    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        u32::try_from(raw)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .map(Self)
            .ok_or_else(|| FieldError::new("max_attempts", "must be between 1 and 100"))
    }
    pub fn value(self) -> u32 {
        self.0
    }
}

impl Default for MaxAttempts {
    fn default() -> Self {
        Self(3)
    }
}

/// Progress in percent, 0–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(u8);

impl Percent {
    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        u8::try_from(raw)
            .ok()
            .filter(|p| *p <= 100)
            .map(Self)
            .ok_or_else(|| FieldError::new("progress", "must be between 0 and 100"))
    }
    pub fn value(self) -> u8 {
        self.0
    }
}

/// A short free-text field (a progress stage or message, a review comment, an error): trimmed
/// to nothing is `None`, longer than `max` characters is refused.
pub fn parse_text(
    field: &str,
    raw: Option<String>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match raw {
        Some(text) if text.chars().count() > max => Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        )),
        other => Ok(other.filter(|t| !t.trim().is_empty())),
    }
}

const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

fn check_metadata_entry(key: &str, value: Option<&str>) -> Result<(), FieldError> {
    let field = format!("metadata.{key}");
    if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN {
        return Err(FieldError::new(
            field,
            format!("keys must be 1-{MAX_METADATA_KEY_LEN} characters"),
        ));
    }
    if value.is_some_and(|v| v.len() > MAX_METADATA_VALUE_LEN) {
        return Err(FieldError::new(
            field,
            format!("values must be at most {MAX_METADATA_VALUE_LEN} characters"),
        ));
    }
    Ok(())
}

/// Free-form string labels on a job: at most 50 keys of up to 40 characters, values of up to
/// 500 characters (the limits Stripe users know).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn parse(raw: BTreeMap<String, String>) -> Result<Self, FieldError> {
        for (key, value) in &raw {
            check_metadata_entry(key, Some(value))?;
        }
        let metadata = Self(raw);
        metadata.check_size()?;
        Ok(metadata)
    }

    fn check_size(&self) -> Result<(), FieldError> {
        if self.0.len() > MAX_METADATA_KEYS {
            return Err(FieldError::new(
                "metadata",
                format!("at most {MAX_METADATA_KEYS} keys"),
            ));
        }
        Ok(())
    }

    /// The metadata after merging `patch` (a `None` value removes the key), or an error if the
    /// result would be too large.
    pub fn merged(&self, patch: &MetadataPatch) -> Result<Self, FieldError> {
        let mut merged = self.0.clone();
        for (key, value) in &patch.0 {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let merged = Self(merged);
        merged.check_size()?;
        Ok(merged)
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// A merge patch for metadata: a value sets the key, `null` removes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetadataPatch(BTreeMap<String, Option<String>>);

impl MetadataPatch {
    pub fn parse(raw: BTreeMap<String, Option<String>>) -> Result<Self, FieldError> {
        for (key, value) in &raw {
            check_metadata_entry(key, value.as_deref())?;
        }
        Ok(Self(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_priorities_and_attempts_are_range_checked() {
        assert!(JobKind::parse("captions.generate").is_ok());
        assert!(JobKind::parse("Captions").is_err());
        assert!(JobKind::parse("").is_err());
        assert_eq!(Priority::parse(9).unwrap().value(), 9);
        assert!(Priority::parse(10).is_err());
        assert!(Priority::parse(-1).is_err());
        assert!(MaxAttempts::parse(0).is_err());
        assert!(Percent::parse(101).is_err());
    }

    #[test]
    fn metadata_patch_sets_and_removes_keys() {
        let base =
            Metadata::parse([("a".into(), "1".into()), ("b".into(), "2".into())].into()).unwrap();
        let patch =
            MetadataPatch::parse([("a".into(), None), ("c".into(), Some("3".into()))].into())
                .unwrap();
        let merged = base.merged(&patch).unwrap();
        let keys: Vec<_> = merged.as_map().keys().cloned().collect();
        assert_eq!(keys, ["b", "c"]);
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let too_many = (0..51)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(Metadata::parse(too_many).is_err());
        let long_value = [("k".to_string(), "x".repeat(501))].into();
        assert_eq!(Metadata::parse(long_value).unwrap_err().field, "metadata.k");
    }
}
