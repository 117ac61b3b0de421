//! Bounded fuzzing of the transcoder: path templates, route lookup, query
//! strings and JSON bodies turned into request messages. Everything here is
//! client input, so the properties are "never panics" plus oracles stated
//! independently of the implementation (values survive percent-encoding,
//! unknown keys are always refused, 64-bit ids stay JSON numbers).
//!
//! `make test` runs a few hundred cases per property; `make fuzz` raises
//! `BLAZE_FUZZ_CASES` for long runs.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use blaze_edge::json::{BuildError, RequestParts, build_request, to_json};
use blaze_edge::routes::{Lookup, Route, RouteTable, Template};
use blaze_proto::catalog::Catalog;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value as Json};

static TABLE: LazyLock<RouteTable> = LazyLock::new(|| RouteTable::from_catalog(Catalog::global()).expect("route table"));

fn cases(default: u32) -> Config {
    let cases = std::env::var("BLAZE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    Config { cases, failure_persistence: None, ..Config::default() }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// One segment of a generated template, with the value a request puts there.
#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Single(String, String),
    Rest(String, Vec<String>),
}

fn pieces() -> impl Strategy<Value = (Vec<Piece>, Option<String>)> {
    let literal = "[a-z][a-z0-9_-]{0,5}".prop_map(Piece::Literal);
    let single = ("[a-z][a-z0-9_]{0,5}(\\.[a-z]{1,4})?", "\\PC{1,12}").prop_map(|(f, v)| Piece::Single(f, v));
    let rest = ("[a-z][a-z0-9_]{0,5}", prop::collection::vec("\\PC{1,6}", 1..4)).prop_map(|(f, v)| Piece::Rest(f, v));
    (
        prop::collection::vec(prop_oneof![3 => literal, 3 => single], 1..6),
        prop::option::of(rest),
        any::<prop::sample::Index>(),
        prop::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(mut pieces, rest, at, verb)| {
            if let Some(r) = rest {
                pieces.insert(at.index(pieces.len() + 1), r);
            }
            (pieces, verb)
        })
}

/// Arbitrary JSON, biased towards keys of the message being built.
fn json(keys: Vec<String>) -> impl Strategy<Value = Json> {
    let key = prop_oneof![4 => prop::sample::select(keys), 1 => "\\PC{0,8}"];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Json::from),
        "\\PC{0,12}".prop_map(Json::from),
        Just(Json::from("2026-11-26T00:00:00Z")),
        Just(Json::from("1.5s")),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|m| Json::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every field name (JSON and proto spelling) a route's input has, nested ones included one level down.
fn input_keys(route: &Route) -> Vec<String> {
    let input = route.rpc.descriptor.input();
    let mut keys = vec!["unknownField".to_owned()];
    for f in input.fields() {
        keys.push(f.json_name().to_owned());
        keys.push(f.name().to_owned());
        if let prost_reflect::Kind::Message(m) = f.kind() {
            keys.extend(m.fields().map(|g| g.json_name().to_owned()));
        }
    }
    keys
}

/// A route, a path for it with arbitrary variable values, a body and a query.
fn request() -> impl Strategy<Value = (usize, String, Json, Vec<(String, String)>)> {
    (0..TABLE.routes().len()).prop_flat_map(|i| {
        let route = &TABLE.routes()[i];
        let keys = input_keys(route);
        let template = route.binding.template.clone();
        let value = prop_oneof![3 => "[0-9]{1,19}", 1 => "\\PC{1,10}", 1 => Just("me".to_owned())];
        (
            Just(i),
            prop::collection::vec(value, 8).prop_map(move |values| instantiate(&template, &values)),
            json(keys.clone()),
            prop::collection::vec((prop::sample::select(keys), "\\PC{0,10}"), 0..4),
        )
    })
}

/// Replace each `{…}` of `template` with the next of `values`, percent-encoded.
fn instantiate(template: &str, values: &[String]) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed variable") + open;
        out.push_str(&encode(&values[n % values.len()]));
        n += 1;
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Keys of `obj` the message `desc` has no field for.
fn unknown_keys(desc: &prost_reflect::MessageDescriptor, obj: &Map<String, Json>) -> Vec<String> {
    obj.keys().filter(|k| desc.get_field_by_json_name(k).is_none() && desc.get_field_by_name(k).is_none()).cloned().collect()
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn fuzz_template_parser_never_panics(s in "/?[a-z{}=*.:/]{0,24}|\\PC{0,24}") {
        if let Ok(t) = Template::parse(&s) {
            for f in t.fields() {
                prop_assert!(!f.is_empty());
            }
            // matching anything against a parsed template is total, too
            let _ = t.matches(&s);
        }
    }

    #[test]
    fn fuzz_variable_values_survive_percent_encoding((pieces, verb) in pieces()) {
        let mut template = String::new();
        let mut path = String::new();
        let mut want = BTreeMap::new();
        for p in &pieces {
            template.push('/');
            path.push('/');
            match p {
                Piece::Literal(l) => {
                    template.push_str(l);
                    path.push_str(l);
                }
                Piece::Single(f, v) => {
                    template.push_str(&format!("{{{f}}}"));
                    path.push_str(&encode(v));
                    want.insert(f.clone(), v.clone());
                }
                Piece::Rest(f, vs) => {
                    template.push_str(&format!("{{{f}=**}}"));
                    path.push_str(&vs.iter().map(|v| encode(v)).collect::<Vec<_>>().join("/"));
                    want.insert(f.clone(), vs.join("/"));
                }
            }
        }
        if let Some(v) = &verb {
            template.push_str(&format!(":{v}"));
            path.push_str(&format!(":{v}"));
        }
        // Field names may repeat in a generated template; the last binding wins in both.
        let t = Template::parse(&template).unwrap();
        prop_assert_eq!(t.matches(&path), Some(want), "template {} path {}", template, path);
    }

    #[test]
    fn fuzz_every_route_is_reachable_with_any_values((i, path, _body, _query) in request()) {
        let route = &TABLE.routes()[i];
        let found = !matches!(TABLE.lookup(&route.method, &path), Lookup::NotFound);
        prop_assert!(found, "{} {} found nothing", route.method, path);
    }

    #[test]
    fn fuzz_request_building_is_total_and_strict((i, path, body, query) in request()) {
        let route = &TABLE.routes()[i];
        let Some(params) = route.template.matches(&path) else {
            // A value like `..` can make the path match no template at all; lookup covers that.
            return Ok(());
        };
        let text = body.to_string();
        let built = build_request(route, RequestParts { path_params: &params, query: &query, body: text.as_bytes(), headers: &[] });
        let input = route.rpc.descriptor.input();
        if route.binding.body == "*"
            && let Json::Object(obj) = &body
            && !unknown_keys(&input, obj).is_empty()
        {
            prop_assert!(matches!(built, Err(BuildError::Invalid(_))), "unknown keys accepted: {} {}", route.binding.template, text);
        }
        if let Ok(msg) = built {
            // Whatever was accepted renders back to JSON without panicking.
            let _ = to_json(&msg, Catalog::global());
        }
    }

    #[test]
    fn fuzz_any_body_bytes_are_refused_cleanly(i in 0..TABLE.routes().len(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let route = &TABLE.routes()[i];
        let path = instantiate(&route.binding.template, &["7".to_owned()]);
        if let Some(params) = route.template.matches(&path) {
            let _ = build_request(route, RequestParts { path_params: &params, query: &[], body: &bytes, headers: &[] });
        }
    }

    #[test]
    fn fuzz_query_strings_round_trip(q in "\\PC{0,24}") {
        // What the server does with a raw query string, then the transcoder.
        let raw: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("q", &q).finish();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
        let path = "/api/v1/orgs/me/workspaces/me/apps:search";
        let Lookup::Found(route, params) = TABLE.lookup(&http::Method::GET, path) else { panic!("search route") };
        let msg = build_request(route, RequestParts { path_params: &params, query: &pairs, body: b"", headers: &[] }).unwrap();
        prop_assert_eq!(&to_json(&msg, Catalog::global())["q"], &Json::from(q));
    }

    #[test]
    fn fuzz_int64_ids_stay_numbers(id in 0i64..=i64::MAX) {
        let path = format!("/api/v1/orgs/me/workspaces/me/apps/{id}");
        let Lookup::Found(route, params) = TABLE.lookup(&http::Method::PATCH, &path) else { panic!("patch route") };
        let msg = build_request(route, RequestParts { path_params: &params, query: &[], body: b"{}", headers: &[] }).unwrap();
        prop_assert_eq!(&to_json(&msg, Catalog::global())["appId"], &Json::from(id));
    }
}
