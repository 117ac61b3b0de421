//! Guardrails on what a model turn may do: which paths it may touch, which
//! package specs it may install, how much it may write, which commands it may
//! ask for.
//!
//! Everything the model emits is untrusted input that will end up in a git
//! tree and in `npm install` arguments, so validation is an allow-list of
//! shapes rather than a deny-list of known tricks.

use serde::{Deserialize, Serialize};

/// Limits applied to one turn. Deserialises with defaults for missing fields
/// so configuration only has to mention what it changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Guardrails {
    /// Largest content a single file may end up with.
    pub max_file_bytes: usize,
    /// Largest total of written file contents in one turn.
    pub max_turn_bytes: usize,
    /// Bare names (deny every version) or exact `name@version` specs.
    pub denied_packages: Vec<String>,
    pub allowed_commands: Vec<String>,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024,
            max_turn_bytes: 8 * 1024 * 1024,
            // Packages that shipped malware or protestware. Versioned entries
            // only block the compromised release.
            denied_packages: [
                "node-ipc",
                "flatmap-stream",
                "peacenotwar",
                "event-stream@3.3.6",
                "eslint-scope@3.7.2",
                "ua-parser-js@0.7.29",
                "coa@2.0.3",
                "rc@1.2.9",
                "colors@1.4.1",
                "faker@6.6.6",
            ]
            .map(String::from)
            .to_vec(),
            allowed_commands: ["install", "build", "dev", "lint", "typecheck", "rebuild", "restart", "refresh"].map(String::from).to_vec(),
        }
    }
}

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// npm's limit on package name length.
const MAX_PACKAGE_NAME: usize = 214;

/// The normalised relative form of `path`, or why it is refused.
///
/// Refused: empty, longer than [`MAX_PATH_BYTES`], control characters,
/// backslashes, absolute forms (`/x`, `~`, `C:`), any `..` segment, any
/// `.git` or `node_modules` segment (case-insensitive, since the checkout may
/// live on a case-insensitive filesystem), and the project root itself.
/// Normalised: surrounding whitespace trimmed (a model artefact, never part
/// of a real name), `.` and empty segments dropped (`./a//b` → `a/b`), and a
/// trailing `/` removed so directory paths compare equal to their plain form.
/// The normalised form is checked again, so `./~` is refused like `~` and
/// `./ a /` becomes `a`.
pub fn check_path(path: &str) -> Result<String, String> {
    let p = path.trim();
    if p.is_empty() {
        return Err("path is empty".into());
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(format!("path is longer than {MAX_PATH_BYTES} bytes"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("path {p:?} contains control characters"));
    }
    if p.contains('\\') {
        return Err(format!("path {p:?} contains a backslash; use forward slashes"));
    }
    if p.starts_with('/') || p.starts_with('~') {
        return Err(format!("path {p:?} must be relative to the project root"));
    }
    let bytes = p.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(format!("path {p:?} looks like a Windows drive path"));
    }
    let mut segments = Vec::new();
    for segment in p.split('/') {
        match segment {
            // `a//b` and `./a` are harmless spellings of `a/b` and `a`.
            "" | "." => continue,
            ".." => return Err(format!("path {p:?} escapes the project with '..'")),
            s if s.eq_ignore_ascii_case(".git") => return Err(format!("path {p:?} touches the .git directory")),
            s if s.eq_ignore_ascii_case("node_modules") => {
                return Err(format!("path {p:?} is inside node_modules, which is managed by the package manager"));
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Err(format!("path {p:?} names the project root"));
    }
    let normalised = segments.join("/");
    // Dropping `.` and empty segments can expose a form refused above
    // (`./~`, `./C:/x`) or edge whitespace (`./ a`). Checking the result
    // again refuses those and makes it a fixed point: a path checked twice
    // names the same file.
    if normalised != p {
        return check_path(&normalised);
    }
    Ok(normalised)
}

/// Validate a package spec: `name`, `name@version`, `@scope/name` or
/// `@scope/name@version`, from the public registry only. Returns the
/// trimmed spec.
///
/// Names must follow npm's rules for new packages (lowercase `a-z 0-9 - . _`,
/// not starting with `.` or `_`, at most 214 characters), which also rules
/// out every shell metacharacter. URLs and protocol specs (`git+…`, `file:`,
/// `link:`, `npm:` aliases …) and anything with whitespace are refused, as is
/// any name or exact spec on the deny list. A version must use only
/// `0-9 A-Z a-z . ^ ~ < > = * | -`, which covers semver versions, ranges
/// without spaces and dist-tags like `latest` or `next`. Because that set
/// admits `< > | *`, specs must be passed to the package manager as separate
/// argv entries, never through a shell.
pub fn check_package(spec: &str, guard: &Guardrails) -> Result<String, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("package spec is empty".into());
    }
    if spec.chars().any(char::is_whitespace) {
        return Err(format!("package spec {spec:?} contains whitespace"));
    }
    // `:` never occurs in a registry name or semver range, but every
    // non-registry spec form has one (https:, git+ssh:, file:, link:, npm:,
    // workspace:, github:).
    if spec.contains(':') {
        return Err(format!("package spec {spec:?} is a URL or protocol spec; only registry packages are allowed"));
    }
    let (name, version) = split_spec(spec);
    check_package_name(name, spec)?;
    if let Some(version) = version {
        check_version(version, spec)?;
    }
    let lowered_spec = spec.to_ascii_lowercase();
    for denied in &guard.denied_packages {
        let denied = denied.trim().to_ascii_lowercase();
        let hit = match split_spec(&denied) {
            (_, Some(_)) => lowered_spec == denied,
            (denied_name, None) => name == denied_name,
        };
        if hit {
            return Err(format!("package {spec:?} is on the deny list"));
        }
    }
    Ok(spec.to_owned())
}

/// Split at the `@` that starts the version, skipping a scope's leading `@`.
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    let search_from = usize::from(spec.starts_with('@'));
    match spec[search_from..].find('@') {
        Some(i) => (&spec[..search_from + i], Some(&spec[search_from + i + 1..])),
        None => (spec, None),
    }
}

fn check_package_name(name: &str, spec: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("package spec {spec:?} has no name"));
    }
    if name.len() > MAX_PACKAGE_NAME {
        return Err(format!("package name in {spec:?} is longer than {MAX_PACKAGE_NAME} characters"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("package name {name:?} contains uppercase letters"));
    }
    let parts: Vec<&str> = match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, pkg)) => vec![scope, pkg],
            None => return Err(format!("scoped package {name:?} must look like @scope/name")),
        },
        None => vec![name],
    };
    for part in parts {
        if part.is_empty() {
            return Err(format!("package name {name:?} has an empty component"));
        }
        if part.starts_with('.') || part.starts_with('_') {
            return Err(format!("package name {name:?} may not start with '.' or '_'"));
        }
        if let Some(bad) = part.chars().find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))) {
            return Err(format!("package name {name:?} contains the disallowed character {bad:?}"));
        }
    }
    Ok(())
}

fn check_version(version: &str, spec: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err(format!("package spec {spec:?} has an empty version"));
    }
    // Dist-tags such as `latest`/`next` are plain alphanumerics and pass the
    // same charset as ranges like `^3.22.0`, `>=1.2.0<2`, `1.x||2.x`.
    if let Some(bad) =
        version.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '^' | '~' | '<' | '>' | '=' | '*' | '|' | '-')))
    {
        return Err(format!("version in {spec:?} contains the disallowed character {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_rejected() {
        for p in [
            "",
            "   ",
            "../x",
            "/etc/passwd",
            ".git/config",
            "src/.GIT/hooks/pre-commit",
            "node_modules/x/index.js",
            "packages/a/node_modules/b.js",
            "a/../../b",
            "a/..",
            "C:\\x",
            "C:/x",
            "~/x",
            "src\\x.ts",
            "a\0b",
            "a\nb",
            ".",
            "./",
            "//",
        ] {
            assert!(check_path(p).is_err(), "{p:?} should be rejected");
        }
        assert!(check_path(&"a/".repeat(300)).is_err());
    }

    #[test]
    fn good_paths_are_normalised() {
        assert_eq!(check_path("src/App.tsx"), Ok("src/App.tsx".into()));
        assert_eq!(check_path("./src//components/./Button.tsx"), Ok("src/components/Button.tsx".into()));
        assert_eq!(check_path(" src/dir/ "), Ok("src/dir".into()));
        assert_eq!(check_path(".github/workflows/ci.yml"), Ok(".github/workflows/ci.yml".into()));
        assert_eq!(check_path(".gitignore"), Ok(".gitignore".into()));
        assert_eq!(check_path("a..b/c"), Ok("a..b/c".into()));
        assert_eq!(check_path("public/my file.png"), Ok("public/my file.png".into()));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        // Found by fuzzing: dropping `.`/empty segments used to leave edge
        // whitespace behind (`A /` gave `A `, and checking that gave `A`).
        assert_eq!(check_path("A /"), Ok("A".into()));
        assert_eq!(check_path("./ src/a.ts"), Ok("src/a.ts".into()));
        assert_eq!(check_path("src/a.ts /."), Ok("src/a.ts".into()));
        assert!(check_path("./ /etc/passwd").is_err());
        assert!(check_path("./ ../x").is_err());
        // `.` segments used to hide the absolute forms refused up front.
        assert!(check_path("./~").is_err());
        assert!(check_path(".//~/x").is_err());
        assert!(check_path("./C:/x").is_err());
        for p in ["A /", "./ src/a.ts", "a/ b /c "] {
            let once = check_path(p).expect("accepted");
            assert_eq!(check_path(&once), Ok(once.clone()), "{p:?}");
        }
    }

    #[test]
    fn good_packages() {
        let g = Guardrails::default();
        for spec in [
            "react-icons",
            "@tanstack/react-query@5.0.0",
            "zod@^3.22.0",
            "zod@3.23.8",
            "react@latest",
            "next@next",
            "lodash.debounce@~4.0.8",
            "typescript@>=5.0.0<6",
            "a@1.x||2.x",
            "@types/node@20.1.0-beta.1",
            "colors@1.4.0",
        ] {
            assert_eq!(check_package(spec, &g), Ok(spec.to_owned()), "{spec}");
        }
        assert_eq!(check_package("  zod  ", &g), Ok("zod".into()));
    }

    #[test]
    fn bad_packages() {
        let g = Guardrails::default();
        for spec in [
            "",
            "http://evil/x.tgz",
            "https://evil/x.tgz",
            "git+https://github.com/evil/x.git",
            "git://github.com/evil/x",
            "github:evil/x",
            "file:../x",
            "link:../x",
            "npm:react@18",
            "a b",
            "Uppercase",
            "rm -rf",
            "$(x)",
            "`x`",
            "x;y",
            "x&&y",
            "x|y",
            ".hidden",
            "_private",
            "@scope",
            "@/x",
            "@scope/",
            "@scope/.x",
            "x@",
            "x@1.0.0;rm",
            "x@$(id)",
            "x@1.0.0+build",
            "node-ipc",
            "node-ipc@9.2.2",
            "event-stream@3.3.6",
            "colors@1.4.1",
            "../x",
            "./x",
        ] {
            assert!(check_package(spec, &g).is_err(), "{spec:?} should be rejected");
        }
        assert!(check_package(&"a".repeat(215), &g).is_err());
        assert!(check_package(&"a".repeat(214), &g).is_ok());
    }

    #[test]
    fn deny_list_is_configurable() {
        let g = Guardrails { denied_packages: vec!["@evil/pkg".into(), "left-pad@1.0.0".into()], ..Guardrails::default() };
        assert!(check_package("@evil/pkg@1.0.0", &g).is_err());
        assert!(check_package("@evil/pkg", &g).is_err());
        assert!(check_package("left-pad@1.0.0", &g).is_err());
        assert!(check_package("left-pad@1.3.0", &g).is_ok());
        assert!(check_package("node-ipc", &g).is_ok());
    }

    #[test]
    fn guardrails_deserialise_with_defaults() {
        let g: Guardrails = serde_json::from_str(r#"{"max_file_bytes": 10}"#).expect("valid config");
        assert_eq!(g.max_file_bytes, 10);
        assert_eq!(g.max_turn_bytes, 8 * 1024 * 1024);
        assert!(g.allowed_commands.iter().any(|c| c == "rebuild"));
    }
}
