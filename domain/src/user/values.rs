//! A user's email address and the rules a new password must meet. Passwords themselves never
//! reach the domain's events: only their argon2id hash is stored, outside the log.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// A normalised (trimmed, lower-case) email address; the login name of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = || FieldError::new("email", "must be an email address");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const PASSWORD_MIN_CHARS: usize = 10;
pub const PASSWORD_MAX_BYTES: usize = 256;

/// Checks a new password: at least 10 characters, not all of them white space, at most 256
/// bytes (hashing cost is bounded). No other rule: spaces inside are fine (passphrases).
pub fn check_new_password(field: &str, password: &str) -> Result<(), FieldError> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if password.trim().is_empty() {
        return Err(FieldError::new(field, "must not be only spaces"));
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {PASSWORD_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn passwords_have_a_floor_and_a_ceiling() {
        assert!(check_new_password("password", "short").is_err());
        assert!(check_new_password("password", "long enough!").is_ok());
        assert!(check_new_password("password", &"x".repeat(257)).is_err());
        assert!(check_new_password("password", &" ".repeat(12)).is_err());
        assert!(check_new_password("password", "\t \n        ").is_err());
        assert!(check_new_password("password", "correct horse battery").is_ok());
    }
}
