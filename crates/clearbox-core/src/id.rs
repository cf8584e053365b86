//! Container id validation.

use crate::error::Error;

/// Longest id accepted: a single path component on Linux file systems.
pub const MAX_ID_LEN: usize = 255;

/// Checks an id the way runc does: non-empty, at most [`MAX_ID_LEN`] bytes, only
/// `[A-Za-z0-9_+.-]`, and not `.` or `..` (it names a directory under `--root`).
pub fn validate(id: &str) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidId {
        id: shorten(id),
        reason: reason.to_string(),
    };
    if id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(&format!(
            "it is {} bytes long, the limit is {MAX_ID_LEN}",
            id.len()
        )));
    }
    if id == "." || id == ".." {
        return Err(invalid("it is not a valid file name"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(invalid(&format!(
            "it contains {c:?}; allowed are letters, digits and _ + - ."
        )));
    }
    Ok(())
}

/// Keeps error messages one line long even for a 1 KiB id.
fn shorten(id: &str) -> String {
    if id.len() <= 64 {
        return id.to_string();
    }
    let mut end = 48;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_style_ids() {
        for id in [
            "a",
            "abc-DEF_1.2+3",
            &"f".repeat(64),
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert!(validate(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        for id in ["", ".", "..", "../x", "a/b", "a b", "é", &"x".repeat(1024)] {
            let err = validate(id).expect_err(id).to_string();
            assert!(err.starts_with("invalid container id"), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
