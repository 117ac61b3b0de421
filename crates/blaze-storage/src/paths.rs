//! Path rules for files inside an app repository, enforced wherever a path
//! enters the system (model output, API requests, change sets): relative,
//! normalised, no traversal, nothing inside `.git`.

use crate::StorageError;

pub const MAX_PATH_LEN: usize = 512;

/// Validate and normalise a repository path (`./a//b` → `a/b`).
pub fn normalize(path: &str) -> Result<String, StorageError> {
    let bad = |why: &str| StorageError::InvalidPath(format!("{path:?}: {why}"));
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad("path too long"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("control characters"));
    }
    if path.contains('\\') {
        return Err(bad("backslashes are not allowed"));
    }
    if path.starts_with('/') || path.starts_with('~') || (path.len() > 1 && path.as_bytes()[1] == b':') {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(bad("path traversal is not allowed")),
            p if p.eq_ignore_ascii_case(".git") => return Err(bad(".git is not writable")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("no file name"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_rejected() {
        assert_eq!(normalize("src/App.tsx").unwrap(), "src/App.tsx");
        assert_eq!(normalize("./src//components/./x.ts").unwrap(), "src/components/x.ts");
        for hostile in
            ["../x", "src/../../etc/passwd", "/etc/passwd", ".git/config", "a/.GIT/hooks/x", "C:\\x", "a\\b", "", ".", "a/\0b", "~/x"]
        {
            assert!(normalize(hostile).is_err(), "{hostile:?}");
        }
        assert!(normalize(&"a".repeat(600)).is_err());
    }
}
