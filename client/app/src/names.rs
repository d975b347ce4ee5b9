//! Validation of the names that become dict keys in the storage: wiki pages, counters, keys.

use crate::db::StoreError;

/// Longest page or counter name, in bytes.
pub const MAX_NAME: usize = 128;

/// Longest key-value key, in bytes.
pub const MAX_KEY: usize = 256;

/// A page or counter name: 1..=128 ASCII letters, digits, `-`, `_` or `.`, so that it is a
/// path segment as it is, and the HTML pages can print it without surprises.
///
/// # Errors
///
/// [`StoreError::Invalid`] explaining the rule.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok_char) || name.starts_with('.') {
        return Err(StoreError::Invalid(format!(
            "names are 1 to {MAX_NAME} letters, digits, '-', '_' or '.', not starting with '.'"
        )));
    }
    Ok(())
}

/// A key-value key: 1..=256 bytes without control characters.
///
/// # Errors
///
/// [`StoreError::Invalid`] explaining the rule.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!("keys are 1 to {MAX_KEY} bytes without control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(check_name("Front_Page-2.v1").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_key("any key/with é").is_ok());
        assert!(check_key("tab\there").is_err());
        assert!(check_key("").is_err());
    }
}
