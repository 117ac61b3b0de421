//! Bounded fuzzing of configuration loading: arbitrary TOML files and
//! `BLAZE_*` environments either load or fail with an error that names the
//! setting (or the file) to fix; unknown file keys are refused; every setting
//! in the reference can be set through its variable.
//!
//! `make fuzz` raises `BLAZE_FUZZ_CASES` for long runs.

use std::{collections::HashSet, io::Write, sync::LazyLock};

use blaze_kit::config::{ConfigError, env_var_for};
use blaze_kit::{Config, ConfigSource};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};

/// Cases per property: `BLAZE_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("BLAZE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// `(variable, dotted path, default)` of every setting.
static REFERENCE: LazyLock<Vec<(String, String, Value)>> = LazyLock::new(Config::reference);

/// Top-level sections (`listen`, `llm`, …).
static SECTIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut s: Vec<String> = REFERENCE.iter().map(|(_, p, _)| p.split('.').next().unwrap_or_default().to_owned()).collect();
    s.dedup();
    s
});

fn env_source(env: Vec<(String, String)>) -> ConfigSource {
    ConfigSource { file: None, env: Some(env) }
}

/// Whether a load error points at something a person can fix: the file, or
/// a setting that exists and (for environment errors) the variable that
/// sets it.
fn names_the_problem(err: &ConfigError, file: Option<&str>) -> bool {
    let is_var = |var: &str| REFERENCE.iter().any(|(v, _, _)| v == var);
    let in_section = |path: &str| {
        SECTIONS.iter().any(|s| path.strip_prefix(s.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '['])))
    };
    match err {
        ConfigError::File { path, .. } | ConfigError::FileSyntax { path, .. } => Some(path.as_str()) == file,
        ConfigError::Env { key, var, .. } => in_section(key) && *var == env_var_for(key) && is_var(var),
        ConfigError::Ambiguous { var } => is_var(var),
        ConfigError::SecretFile { var, .. } => var.strip_suffix("_FILE").is_some_and(is_var),
        // An unknown key is reported at its own path, which is what to fix.
        ConfigError::Invalid { path, message } => {
            // (A top-level key may itself contain dots: `"." = 1`.)
            in_section(path)
                || message.starts_with(&format!("unknown field `{path}`"))
                || path.rsplit('.').next().is_some_and(|key| message.starts_with(&format!("unknown field `{key}`")))
        }
        ConfigError::Missing { .. } => false,
    }
}

/// The loaded configuration as JSON, for comparing settings by path.
fn setting(config: &Config, path: &str) -> Value {
    let mut cur = serde_json::to_value(config).expect("config serialises");
    for part in path.split('.') {
        cur = cur.get(part).cloned().unwrap_or(Value::Null);
    }
    cur
}

/// JSON equality with numbers compared by value (`3` equals `3.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // JSON-valued settings are parsed by serde_json, whose default float
        // parser may be one ulp off the shortest round-trip form; that is
        // not a configuration error.
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 2.0,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"[^\"\\\\\n]{0,12}\"",
        "'[^'\n]{0,12}'",
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,25}",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop::sample::select(vec![
            "true",
            "false",
            "nan",
            "inf",
            "-inf",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "1979-05-27",
            "[]",
            "[1, \"a\"]",
            "[\"a\", \"b\"]",
            "{}",
            "{ kind = \"openai\" }",
            "{ input = 1.5, output = 2 }",
            "{ x = { y = 1 } }",
            "\"\"\"multi\nline\"\"\"",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

fn toml_key() -> impl Strategy<Value = String> {
    let known: Vec<String> = REFERENCE.iter().map(|(_, p, _)| p.rsplit('.').next().unwrap_or_default().to_owned()).collect();
    let dotted: Vec<String> = REFERENCE.iter().map(|(_, p, _)| p.clone()).collect();
    prop_oneof![
        4 => prop::sample::select(known),
        2 => prop::sample::select(dotted),
        1 => "[a-z_]{1,10}",
        1 => "\"[^\"\n]{0,6}\"",
    ]
}

fn toml_header() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SECTIONS.clone()).prop_map(|s| format!("[{s}]")),
        2 => "[a-z_]{1,8}".prop_map(|k| format!("[llm.providers.{k}]")),
        1 => "[a-z_]{1,8}".prop_map(|k| format!("[llm.prices.{k}]")),
        1 => "[a-z_]{1,8}".prop_map(|k| format!("[{k}]")),
        1 => prop::sample::select(SECTIONS.clone()).prop_map(|s| format!("[[{s}]]")),
    ]
}

/// TOML-shaped text: headers, `key = value` lines and some noise.
fn toml_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        2 => toml_header(),
        6 => (toml_key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => ".{0,16}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

fn load_file(text: &str, env: Vec<(String, String)>) -> (Result<Config, ConfigError>, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    let shown = file.path().display().to_string();
    let result = Config::load(&ConfigSource { file: Some(file.path().to_path_buf()), env: Some(env) });
    (result, shown)
}

/// `BLAZE_*` names: real settings, near misses, and `_FILE` variants that
/// point nowhere (never `BLAZE_CONFIG`, which would read an arbitrary path).
fn env_name() -> impl Strategy<Value = String> {
    let vars: Vec<String> = REFERENCE.iter().map(|(v, _, _)| v.clone()).collect();
    prop_oneof![
        6 => prop::sample::select(vars.clone()),
        1 => prop::sample::select(vars).prop_map(|v| format!("{v}_FILE")),
        1 => "BLAZE_[A-Z_]{1,16}".prop_filter("not a file indirection", |n| n != "BLAZE_CONFIG" && !n.ends_with("_FILE")),
    ]
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "1",
            "-1",
            "true",
            "YES",
            "off",
            "maybe",
            "1.5",
            "nan",
            "inf",
            "1e400",
            "99999999999999999999",
            "65536",
            "4294967296",
            "[]",
            "[1]",
            "[\"a\"]",
            "{}",
            "{\"x\":{}}",
            "{\"x\":{\"kind\":1}}",
            "{\"m\":{\"input\":\"a\"}}",
            "null",
            "a,b, c",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,16}",
    ]
}

/// A valid value for one setting, as the variable's text and as the JSON
/// the loaded configuration must then hold.
fn valid_setting() -> impl Strategy<Value = (String, String, String, Value)> {
    (0..REFERENCE.len()).prop_flat_map(|i| {
        let (var, path, default) = REFERENCE[i].clone();
        let value: BoxedStrategy<(String, Value)> = match (&default, path.as_str()) {
            (Value::Bool(_), _) => (
                prop::sample::select(vec![
                    ("1", true),
                    ("true", true),
                    ("yes", true),
                    ("on", true),
                    ("0", false),
                    ("false", false),
                    ("no", false),
                    ("off", false),
                    ("", false),
                ]),
                any::<bool>(),
                "[ \t]{0,2}",
            )
                .prop_map(|((text, b), upper, pad)| {
                    let text = if upper { text.to_uppercase() } else { text.to_owned() };
                    (format!("{pad}{text}{pad}"), Value::Bool(b))
                })
                .boxed(),
            (Value::Number(n), _) if n.is_f64() => (-1.0e9..1.0e9f64).prop_map(|f| (f.to_string(), json!(f))).boxed(),
            // The narrowest integer setting is a u16.
            (Value::Number(_), _) => (0..=u16::MAX, "[ \t]{0,2}").prop_map(|(n, pad)| (format!("{pad}{n}{pad}"), json!(n))).boxed(),
            (Value::String(_), _) => "\\PC{0,24}".prop_map(|s| (s.clone(), Value::String(s))).boxed(),
            (Value::Array(_), _) => (prop::collection::vec("[a-zA-Z0-9:/._*@-]{1,12}", 0..4), any::<bool>())
                .prop_map(|(items, as_json)| {
                    let text = if as_json { serde_json::to_string(&items).expect("json") } else { items.join(" , ") };
                    (text, json!(items))
                })
                .boxed(),
            (_, "llm.prices") => prop::collection::btree_map("[a-z0-9.-]{1,8}", (0.0..100.0f64, 0.0..100.0f64), 0..3)
                .prop_map(|m| {
                    let v: Value = m.into_iter().map(|(k, (i, o))| (k, json!({"input": i, "output": o}))).collect();
                    (v.to_string(), v)
                })
                .boxed(),
            (_, "llm.providers") => prop::collection::btree_map(
                "[a-z0-9-]{1,8}",
                ("[a-z]{1,8}", "\\PC{0,16}", "\\PC{0,16}", prop::collection::btree_map("[a-z0-9.-]{1,8}", any::<u32>(), 0..3)),
                0..3,
            )
            .prop_map(|m| {
                let v: Value = m
                    .into_iter()
                    .map(|(k, (kind, url, key, models))| (k, json!({"kind": kind, "base_url": url, "api_key": key, "models": models})))
                    .collect();
                (v.to_string(), v)
            })
            .boxed(),
            (other, _) => panic!("no generator for setting {path} with default {other}"),
        };
        value.prop_map(move |(text, expected)| (var.clone(), path.clone(), text, expected))
    })
}

#[test]
fn fuzz_every_setting_has_its_own_variable() {
    let mut seen = HashSet::new();
    for (var, path, _) in REFERENCE.iter() {
        assert!(seen.insert(var.clone()), "{var} sets two settings (one is {path})");
    }
    for (var, path, _) in REFERENCE.iter() {
        assert!(!seen.contains(&format!("{var}_FILE")), "{var}_FILE is both a setting and the file form of {path}");
    }
    assert!(!seen.contains("BLAZE_CONFIG"));
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn fuzz_arbitrary_files_load_or_name_the_problem(text in toml_text()) {
        let (result, shown) = load_file(&text, vec![]);
        if let Err(e) = result {
            prop_assert!(names_the_problem(&e, Some(&shown)), "{e} ({e:?}) for\n{text}");
        }
    }

    #[test]
    fn fuzz_arbitrary_environments_load_or_name_the_problem(env in prop::collection::vec((env_name(), env_value()), 0..8)) {
        if let Err(e) = Config::load(&env_source(env.clone())) {
            prop_assert!(names_the_problem(&e, None), "{e} ({e:?}) for {env:?}");
        }
    }

    #[test]
    fn fuzz_unknown_file_keys_are_refused(section in prop::sample::select(SECTIONS.clone()), key in "[a-z][a-z_]{0,10}", top in any::<bool>()) {
        let known = |path: &str| REFERENCE.iter().any(|(_, p, _)| p == path || p.starts_with(&format!("{path}.")));
        let (text, path) = if top { (format!("{key} = 1\n"), key.clone()) } else { (format!("[{section}]\n{key} = 1\n"), format!("{section}.{key}")) };
        prop_assume!(!known(&path));
        let (result, _) = load_file(&text, vec![]);
        match result {
            Ok(_) => prop_assert!(false, "unknown key {path} was accepted"),
            Err(e) => prop_assert!(e.to_string().contains(&key), "{e} does not name {key}"),
        }
    }

    #[test]
    fn fuzz_every_setting_round_trips_through_its_variable((var, path, text, expected) in valid_setting()) {
        let config = Config::load(&env_source(vec![(var.clone(), text.clone())]));
        prop_assert!(config.is_ok(), "{var}={text:?}: {:?}", config.err());
        let got = setting(&config.expect("checked"), &path);
        prop_assert!(same(&got, &expected), "{var}={text:?} loaded as {got}, expected {expected}");
    }
}
