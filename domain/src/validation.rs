//! Field-level validation errors produced when raw input is parsed into domain value types.
//! The API maps a list of these to the `errors` member of a problem+json answer.

use serde::Serialize;

/// One refused input field: which one and why, in words meant for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
