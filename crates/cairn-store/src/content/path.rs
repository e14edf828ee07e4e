//! Names and paths. A path is `/Root` followed by `/name` segments; paths are unique
//! case-insensitively, which the store enforces through a lower-cased key column.

use crate::error::{Result, StoreError};

/// The longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest path accepted, in characters.
pub const MAX_PATH_CHARS: usize = 450;

/// Characters that may not appear in a name: path separators and characters that are
/// reserved in URLs, OData keys or file systems.
const FORBIDDEN: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

/// Checks that `name` can name a content item.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("the name is longer than 100 characters");
    }
    if name.chars().any(char::is_control) {
        return bad("the name holds a control character");
    }
    if name.contains(FORBIDDEN) {
        return bad("the name holds one of / \\ : * ? \" < > |");
    }
    if name == "." || name == ".." {
        return bad("the name cannot be . or ..");
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return bad("the name starts or ends with white space");
    }
    if name.ends_with('.') {
        return bad("the name ends with a dot");
    }
    Ok(())
}

/// Checks that `path` is `/Root` or below it, with valid names, and returns it unchanged.
pub fn validate_path(path: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.chars().count() > MAX_PATH_CHARS {
        return bad("the path is longer than 450 characters");
    }
    let Some(rest) = path.strip_prefix('/') else {
        return bad("a path starts with /Root");
    };
    let mut segments = rest.split('/');
    if !segments
        .next()
        .is_some_and(|root| root.eq_ignore_ascii_case("Root"))
    {
        return bad("a path starts with /Root");
    }
    for segment in segments {
        if segment.is_empty() {
            return bad("the path has an empty segment");
        }
        validate_name(segment)?;
    }
    Ok(())
}

/// The case-insensitive key of a path, as stored in `nodes.path_key` and in the index.
pub fn path_key(path: &str) -> String {
    path.to_lowercase()
}

/// The parent of a path, or `None` for `/Root`.
pub fn parent_path(path: &str) -> Option<&str> {
    let cut = path.rfind('/')?;
    (cut > 0).then(|| &path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("Hello world").is_ok());
        assert!(validate_name("árvíztűrő").is_ok());
        for bad in ["", "a/b", "a\u{7}", ".", "..", " a", "a ", "a.", "a:b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"x".repeat(100)).is_ok());
        assert!(validate_name(&"x".repeat(101)).is_err());
    }

    #[test]
    fn paths() {
        assert!(validate_path("/Root").is_ok());
        assert!(validate_path("/root/A/b").is_ok());
        for bad in [
            "",
            "/",
            "Root",
            "/Other",
            "/Root/",
            "/Root//a",
            "/Root/a/..",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parent_path("/Root/a/b"), Some("/Root/a"));
        assert_eq!(parent_path("/Root"), None);
    }
}
