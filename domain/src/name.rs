//! Display names of projects and API keys: 1–100 characters after trimming, none of them a
//! control character (a name is shown in lists, logs and CSV exports, where a line break or a
//! terminal escape would forge or garble what follows). Names stored before this rule load as
//! they are.

use serde::{Deserialize, Serialize};

use crate::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 100 {
            return Err(FieldError::new("name", "must be 1-100 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not hold control characters (line breaks, tabs, escapes)",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::DisplayName;

    #[test]
    fn names_are_trimmed_sized_and_free_of_control_characters() {
        assert_eq!(
            DisplayName::parse("  Render farm ").unwrap().as_str(),
            "Render farm"
        );
        assert_eq!(
            DisplayName::parse("caf\u{e9} \u{1f3ac}").unwrap().as_str(),
            "caf\u{e9} \u{1f3ac}"
        );
        for bad in [
            "",
            "   ",
            &"x".repeat(101),
            "a\nb",
            "bell\u{7}",
            "tab\tname",
            "esc\u{1b}[31m",
        ] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
