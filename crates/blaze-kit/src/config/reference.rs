//! The configuration reference (`docs/configuration.md`, written by
//! `blaze config-reference`): every setting's path, variable and default from
//! [`Config::reference`], described by the `///` comment of its field.
//!
//! Rust keeps no doc comments at run time, so they are read from the source
//! of `config.rs`, compiled in. That file is rustfmt-formatted, which is all
//! the reading relies on: a `pub struct Name {` line opens a struct, `}`
//! closes it, `///` lines document the `pub field: Type,` line they precede.
//! A setting whose field has no comment is an error, so a new setting can
//! not ship undocumented.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Config, is_map_setting};

const SOURCE: &str = include_str!("../config.rs");

/// One field of a config struct as written in the source.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// Struct name → its `pub` fields, in source order.
fn structs(source: &str) -> BTreeMap<String, Vec<Field>> {
    let mut out: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut doc: Vec<&str> = Vec::new();
    for line in source.lines() {
        if let Some(name) = line.strip_prefix("pub struct ").and_then(|rest| rest.strip_suffix(" {")) {
            current = Some(name.trim().to_owned());
            doc.clear();
            continue;
        }
        let Some(name) = &current else { continue };
        let trimmed = line.trim();
        if line == "}" {
            current = None;
        } else if let Some(text) = trimmed.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text));
        } else if trimmed.starts_with("#[") {
            // attributes sit between a field's comment and the field
        } else if let Some((field, ty)) = trimmed.strip_prefix("pub ").and_then(|f| f.split_once(": ")) {
            let text = doc.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default().push(Field { name: field.to_owned(), ty: ty.trim_end_matches(',').to_owned(), doc: text });
            doc.clear();
        } else {
            doc.clear();
        }
    }
    out
}

/// The config struct a field's type names: itself, or a map's value type.
fn struct_of<'a>(ty: &'a str, structs: &BTreeMap<String, Vec<Field>>) -> Option<&'a str> {
    let inner = ty.strip_prefix("BTreeMap<String, ").and_then(|t| t.strip_suffix('>')).unwrap_or(ty);
    structs.contains_key(inner).then_some(inner)
}

/// `Struct.field` of every field reachable from `root` that has no comment.
fn undocumented(structs: &BTreeMap<String, Vec<Field>>, root: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut pending = vec![root.to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        for f in structs.get(&name).into_iter().flatten() {
            if f.doc.is_empty() {
                missing.push(format!("{name}.{}", f.name));
            }
            if let Some(inner) = struct_of(&f.ty, structs) {
                pending.push(inner.to_owned());
            }
        }
    }
    missing.sort();
    missing
}

/// One documented setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Dotted path, e.g. `database.max_connections`.
    pub path: String,
    /// The variable that sets it (`<env>_FILE` names a file holding the value).
    pub env: String,
    /// Holds a secret (itself, or in its map entries).
    pub secret: bool,
    pub default: Value,
    pub doc: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("settings without a `///` comment in crates/blaze-kit/src/config.rs: {}", .0.join(", "))]
    Undocumented(Vec<String>),
    #[error("setting {0} has no field in crates/blaze-kit/src/config.rs (is the file still rustfmt-formatted?)")]
    NoField(String),
}

/// The field a setting path names, and its position in source order (the
/// order of the reference, whatever order `serde_json::Map` keeps).
fn field_of<'a>(path: &str, structs: &'a BTreeMap<String, Vec<Field>>) -> Result<(&'a Field, Vec<usize>), ReferenceError> {
    let mut owner = "Config";
    let mut found: Option<&Field> = None;
    let mut position = Vec::new();
    for part in path.split('.') {
        let (index, field) = structs
            .get(owner)
            .and_then(|fields| fields.iter().enumerate().find(|(_, f)| f.name == part))
            .ok_or_else(|| ReferenceError::NoField(path.to_owned()))?;
        owner = struct_of(&field.ty, structs).unwrap_or_default();
        found = Some(field);
        position.push(index);
    }
    Ok((found.ok_or_else(|| ReferenceError::NoField(path.to_owned()))?, position))
}

fn describe(field: &Field, path: &str, structs: &BTreeMap<String, Vec<Field>>) -> (String, bool) {
    let mut doc = field.doc.clone();
    let mut secret = field.ty == "Secret";
    // A map setting (`llm.providers`) describes the shape of its entries.
    if let Some(entry) = struct_of(&field.ty, structs).filter(|_| is_map_setting(path)) {
        let fields = &structs[entry];
        secret |= fields.iter().any(|f| f.ty == "Secret");
        let shape: Vec<String> = fields.iter().map(|f| format!("`{}`: {}", f.name, f.doc)).collect();
        doc = format!("{doc} Each entry: {}", shape.join(" "));
    }
    (doc, secret)
}

/// Every setting with its description.
pub fn settings() -> Result<Vec<Setting>, ReferenceError> {
    let structs = structs(SOURCE);
    let missing = undocumented(&structs, "Config");
    if !missing.is_empty() {
        return Err(ReferenceError::Undocumented(missing));
    }
    let mut settings = Vec::new();
    for (env, path, default) in Config::reference() {
        let (field, position) = field_of(&path, &structs)?;
        let (doc, secret) = describe(field, &path, &structs);
        settings.push((position, Setting { path, env, secret, default, doc }));
    }
    settings.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(settings.into_iter().map(|(_, s)| s).collect())
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn default_cell(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "empty".to_owned(),
        other => format!("`{}`", cell(&other.to_string())),
    }
}

const PREAMBLE: &str = "\
# Configuration reference

<!-- Generated from crates/blaze-kit/src/config.rs by `make config-docs`; do not edit. -->

Every role reads the same configuration, in layers (lowest first): the defaults below, a TOML
file (`--config` or `BLAZE_CONFIG`), environment variables. Unknown keys in the file are errors.

In the file, a setting's path is its table and key: `database.max_connections` is
`max_connections` under `[database]`. In the environment it is the variable shown; any variable
may instead be given as `<VARIABLE>_FILE` naming a file that holds the value (shown for secrets,
where that is how Kubernetes Secrets are mounted; setting both is an error). Environment values
are parsed by the type of the default: booleans accept `true`/`false`, `1`/`0`, `yes`/`no`,
`on`/`off`; lists are comma-separated or a JSON array; maps are JSON objects. Secrets never
appear in logs.
";

/// The reference as Markdown, one section per top-level table.
pub fn markdown() -> Result<String, ReferenceError> {
    let structs = structs(SOURCE);
    let settings = settings()?;
    let mut out = String::from(PREAMBLE);
    let mut section = "";
    for s in &settings {
        let top = s.path.split('.').next().unwrap_or_default();
        if top != section {
            section = top;
            let intro = structs["Config"].iter().find(|f| f.name == top).map(|f| f.doc.as_str()).unwrap_or_default();
            out.push_str(&format!("\n## `{top}`\n\n{intro}\n\n"));
            out.push_str("| setting | environment | default | description |\n|---|---|---|---|\n");
        }
        let env = if s.secret { format!("`{0}`, `{0}_FILE`", s.env) } else { format!("`{}`", s.env) };
        out.push_str(&format!("| `{}` | {env} | {} | {} |\n", s.path, default_cell(&s.default), cell(&s.doc)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
pub struct Secret(pub String);

#[derive(Default)]
pub struct Config {
    /// The database.
    pub database: DatabaseConfig,
    pub llm: LlmConfig,
}

pub struct DatabaseConfig {
    /// DSN, read
    /// from a secret.
    #[serde(default)]
    pub url: Secret,
    pub max_connections: u32,
}

pub struct LlmConfig {
    /// Providers by id.
    pub providers: BTreeMap<String, ProviderEntry>,
}

pub struct ProviderEntry {
    pub api_key: Secret,
}

impl Config {
    pub fn load() {}
}
"#;

    #[test]
    fn comments_are_read_per_field_across_lines_and_attributes() {
        let s = structs(SAMPLE);
        assert_eq!(s["DatabaseConfig"][0], Field { name: "url".into(), ty: "Secret".into(), doc: "DSN, read from a secret.".into() });
        assert_eq!(s["DatabaseConfig"][1].doc, "");
        assert_eq!(s["LlmConfig"][0].ty, "BTreeMap<String, ProviderEntry>");
        assert!(!s.contains_key("Secret"));
    }

    #[test]
    fn undocumented_fields_are_found_through_nested_and_map_types() {
        let s = structs(SAMPLE);
        assert_eq!(undocumented(&s, "Config"), vec!["Config.llm", "DatabaseConfig.max_connections", "ProviderEntry.api_key"]);
    }

    #[test]
    fn every_setting_has_a_description() {
        let settings = settings().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.len(), Config::reference().len());
        for s in &settings {
            assert!(!s.doc.trim().is_empty(), "{} has no description", s.path);
        }
        let by_path: BTreeMap<_, _> = settings.iter().map(|s| (s.path.as_str(), s)).collect();
        assert!(by_path["auth.signing_key"].secret && !by_path["auth.dev_mode"].secret);
        assert!(by_path["llm.providers"].secret && by_path["llm.providers"].doc.contains("`api_key`:"));
        assert_eq!(by_path["database.max_connections"].env, "BLAZE_DATABASE_MAX_CONNECTIONS");
    }

    #[test]
    fn docs_configuration_md_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let expected = markdown().unwrap_or_else(|e| panic!("{e}"));
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(actual == expected, "docs/configuration.md is stale: run `make config-docs`");
    }
}
