//! JSON ⇄ protobuf for the client's contract, driven by descriptors.
//!
//! Requests: the body (per the rule's `body`), path variables, query
//! parameters and bound headers become one request message. Before the proto
//! JSON decoder sees it, the body is checked the way the contract demands:
//! unknown keys are listed (`Invalid payload: unsupported keys (a, b)`),
//! `null` and wrong types name the field (`"name" must be a string`), and
//! fields bound from the path or a header can not be smuggled in the body.
//!
//! Responses: lowerCamelCase keys, 64-bit integers as JSON numbers (the client
//! checks `typeof id === "number"`), unset optional fields as `null` unless
//! the field is marked `omit_empty`, timestamps as ISO-8601 with milliseconds.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use blaze_proto::catalog::Catalog;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};
use serde_json::{Map, Value as Json};

use crate::routes::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// 400 with this message.
    Invalid(String),
    /// A path variable that can not be the field's type (e.g. `/apps/abc`).
    NotFound,
}

fn invalid(msg: impl Into<String>) -> BuildError {
    BuildError::Invalid(msg.into())
}

fn field_by_key(desc: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key))
}

fn is_wkt(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

fn type_phrase(kind: &Kind) -> &'static str {
    match kind {
        Kind::String | Kind::Bytes => "a string",
        Kind::Bool => "a boolean",
        Kind::Enum(_) => "a string",
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => "a string",
            "google.protobuf.ListValue" => "an array",
            "google.protobuf.Value" => "a JSON value",
            _ => "an object",
        },
        _ => "a finite number",
    }
}

fn is_64bit(kind: &Kind) -> bool {
    matches!(kind, Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64)
}

fn check_scalar(kind: &Kind, v: &Json, name: &str) -> Result<(), BuildError> {
    let ok = match kind {
        Kind::String | Kind::Bytes => v.is_string(),
        Kind::Bool => v.is_boolean(),
        Kind::Enum(_) => v.is_string() || v.is_i64(),
        Kind::Double | Kind::Float => v.is_number(),
        k if is_64bit(k) => v.is_i64() || v.is_u64() || v.as_str().is_some_and(|s| s.parse::<i128>().is_ok()),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => v.is_string(),
            "google.protobuf.Struct" | "google.protobuf.Empty" => v.is_object(),
            "google.protobuf.ListValue" => v.is_array(),
            "google.protobuf.Value" => true,
            "google.protobuf.StringValue" | "google.protobuf.BytesValue" => v.is_string(),
            "google.protobuf.BoolValue" => v.is_boolean(),
            n if n.starts_with("google.protobuf.") && n.ends_with("Value") => v.is_number(),
            _ => {
                let Some(obj) = v.as_object() else { return Err(invalid(format!("Invalid payload: \"{name}\" must be an object"))) };
                return check_object(m, obj, Some(name), &HashSet::new());
            }
        },
        _ => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
    };
    if ok { Ok(()) } else { Err(invalid(format!("Invalid payload: \"{name}\" must be {}", type_phrase(kind)))) }
}

fn check_field(f: &FieldDescriptor, v: &Json, name: &str) -> Result<(), BuildError> {
    if v.is_null() {
        let phrase = if f.is_list() {
            "an array"
        } else if f.is_map() {
            "an object"
        } else {
            type_phrase(&f.kind())
        };
        return Err(invalid(format!("Invalid payload: \"{name}\" must be {phrase}")));
    }
    if f.is_map() {
        let Some(obj) = v.as_object() else { return Err(invalid(format!("Invalid payload: \"{name}\" must be an object"))) };
        let value_kind = f.kind().as_message().and_then(|entry| entry.get_field_by_name("value")).map(|vf| vf.kind());
        if let Some(kind) = value_kind {
            for (k, item) in obj {
                check_scalar(&kind, item, &format!("{name}.{k}"))?;
            }
        }
        return Ok(());
    }
    if f.is_list() {
        let Some(items) = v.as_array() else { return Err(invalid(format!("Invalid payload: \"{name}\" must be an array"))) };
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                return Err(invalid(format!("Invalid payload: \"{name}[{i}]\" must be {}", type_phrase(&f.kind()))));
            }
            check_scalar(&f.kind(), item, &format!("{name}[{i}]"))?;
        }
        return Ok(());
    }
    check_scalar(&f.kind(), v, name)
}

/// Strict check of a JSON object against a message: unknown (or excluded)
/// keys first, then types.
pub fn check_object(
    desc: &MessageDescriptor,
    obj: &Map<String, Json>,
    label: Option<&str>,
    excluded: &HashSet<String>,
) -> Result<(), BuildError> {
    let unknown: Vec<&str> =
        obj.keys().filter(|k| field_by_key(desc, k).is_none_or(|f| excluded.contains(f.name()))).map(String::as_str).collect();
    if !unknown.is_empty() {
        let list = unknown.join(", ");
        return Err(invalid(match label {
            None => format!("Invalid payload: unsupported keys ({list})"),
            Some(l) => format!("Invalid payload: unsupported {l} keys ({list})"),
        }));
    }
    for (k, v) in obj {
        let f = field_by_key(desc, k).expect("checked above");
        let name = match label {
            Some(l) => format!("{l}.{}", f.json_name()),
            None => f.json_name().to_owned(),
        };
        check_field(&f, v, &name).map_err(|e| match Catalog::global().invalid_message(&f) {
            Some(m) => invalid(m),
            None => e,
        })?;
    }
    Ok(())
}

fn set_path(root: &mut Map<String, Json>, dotted: &str, v: Json) {
    let mut cur = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_owned(), v);
            return;
        }
        let next = cur.entry(part.to_owned()).or_insert_with(|| Json::Object(Map::new()));
        if !next.is_object() {
            *next = Json::Object(Map::new());
        }
        cur = next.as_object_mut().expect("object");
    }
}

/// The descriptor of a dotted field path (`a.b`), following messages.
fn resolve_field(desc: &MessageDescriptor, dotted: &str) -> Option<FieldDescriptor> {
    let mut msg = desc.clone();
    let mut parts = dotted.split('.').peekable();
    while let Some(p) = parts.next() {
        let f = field_by_key(&msg, p)?;
        if parts.peek().is_none() {
            return Some(f);
        }
        msg = f.kind().as_message()?.clone();
    }
    None
}

fn scalar_from_text(kind: &Kind, text: &str) -> Option<Json> {
    Some(match kind {
        Kind::Bool => match text {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return None,
        },
        Kind::Double | Kind::Float => Json::from(text.parse::<f64>().ok()?),
        Kind::String | Kind::Bytes | Kind::Enum(_) => Json::String(text.to_owned()),
        k if is_64bit(k) => {
            text.parse::<i128>().ok()?;
            Json::String(text.to_owned())
        }
        Kind::Message(_) => Json::String(text.to_owned()),
        _ => Json::from(text.parse::<i64>().ok()?),
    })
}

/// Everything a request message is built from.
pub struct RequestParts<'a> {
    pub path_params: &'a BTreeMap<String, String>,
    /// Decoded query pairs.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
    /// Header-bound fields: (field, value).
    pub headers: &'a [(String, String)],
}

pub fn build_request(route: &Route, parts: RequestParts<'_>) -> Result<DynamicMessage, BuildError> {
    let input = route.rpc.descriptor.input();
    let body_rule = route.binding.body.as_str();
    let bound: HashSet<String> = route
        .template
        .fields()
        .into_iter()
        .map(|f| f.split('.').next().unwrap_or(f).to_owned())
        .chain(route.rpc.header_bindings.iter().map(|h| h.field.clone()))
        .collect();

    let text = std::str::from_utf8(parts.body).map_err(|_| invalid("Invalid JSON body"))?;
    let body: Option<Json> =
        if text.trim().is_empty() { None } else { Some(serde_json::from_str(text).map_err(|_| invalid("Invalid JSON body"))?) };

    let mut root = Map::new();
    match (body_rule, body) {
        (_, None) => {}
        ("*", Some(Json::Object(obj))) => {
            check_object(&input, &obj, None, &bound)?;
            root = obj;
        }
        ("*", Some(_)) => return Err(invalid("Invalid payload")),
        ("", Some(Json::Object(obj))) => {
            // body-less route: `{}` is fine, keys are not
            if !obj.is_empty() {
                let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                return Err(invalid(format!("Invalid payload: unsupported keys ({})", keys.join(", "))));
            }
        }
        ("", Some(_)) => return Err(invalid("Invalid payload")),
        (field, Some(v)) => {
            let f = field_by_key(&input, field).ok_or_else(|| invalid("Invalid payload"))?;
            check_field(&f, &v, f.json_name())?;
            root.insert(f.json_name().to_owned(), v);
        }
    }

    if body_rule != "*" {
        // A header-bound field may also come from the query (`?after=` or
        // `Last-Event-ID`); a header that is present wins.
        let from_path_or_header: HashSet<String> = route
            .template
            .fields()
            .into_iter()
            .map(|f| f.split('.').next().unwrap_or(f).to_owned())
            .chain(parts.headers.iter().map(|(field, _)| field.clone()))
            .collect();
        for (k, v) in parts.query {
            let Some(f) = resolve_field(&input, k) else { continue }; // unknown query params are ignored
            if from_path_or_header.contains(k.split('.').next().unwrap_or(k)) {
                continue;
            }
            let value = scalar_from_text(&f.kind(), v)
                .ok_or_else(|| invalid(format!("Invalid payload: \"{k}\" must be {}", type_phrase(&f.kind()))))?;
            if f.is_list() {
                let mut existing = root.get(f.json_name()).and_then(|x| x.as_array().cloned()).unwrap_or_default();
                existing.push(value);
                set_path(&mut root, k, Json::Array(existing));
            } else {
                set_path(&mut root, k, value);
            }
        }
    }

    for (field, value) in parts.path_params {
        let f = resolve_field(&input, field).ok_or(BuildError::NotFound)?;
        let v = scalar_from_text(&f.kind(), value).ok_or(BuildError::NotFound)?;
        // ids beyond the type's range are "not found", not a 500 (B28)
        if matches!(f.kind(), Kind::Int64 | Kind::Sint64 | Kind::Sfixed64) && value.parse::<i64>().is_err() {
            return Err(BuildError::NotFound);
        }
        set_path(&mut root, field, v);
    }
    for (field, value) in parts.headers {
        set_path(&mut root, field, Json::String(value.clone()));
    }

    DynamicMessage::deserialize(input, Json::Object(root)).map_err(|e| invalid(format!("Invalid payload: {e}")))
}

fn timestamp_json(msg: &DynamicMessage) -> Json {
    let seconds = msg.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
    let nanos = msg.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
    match chrono::DateTime::from_timestamp(seconds, nanos.max(0) as u32) {
        Some(t) => Json::String(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        None => Json::Null,
    }
}

fn wkt_json(msg: &DynamicMessage, catalog: &Catalog) -> Option<Json> {
    let name = msg.descriptor().full_name().to_owned();
    Some(match name.as_str() {
        "google.protobuf.Timestamp" => timestamp_json(msg),
        "google.protobuf.Struct" => {
            let mut out = Map::new();
            if let Some(Value::Map(fields)) = msg.get_field_by_name("fields").map(|v| v.into_owned()) {
                for (k, v) in fields {
                    if let (MapKey::String(k), Value::Message(m)) = (k, v) {
                        out.insert(k, wkt_json(&m, catalog).unwrap_or(Json::Null));
                    }
                }
            }
            Json::Object(out)
        }
        "google.protobuf.Value" => {
            let set = msg.descriptor().fields().find(|f| msg.has_field(f));
            match set {
                None => Json::Null,
                Some(f) => match (f.name(), msg.get_field(&f).into_owned()) {
                    ("null_value", _) => Json::Null,
                    // Struct numbers are doubles; whole ones read better as integers.
                    ("number_value", Value::F64(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => Json::Number((n as i64).into()),
                    ("number_value", Value::F64(n)) => serde_json::Number::from_f64(n).map(Json::Number).unwrap_or(Json::Null),
                    ("string_value", Value::String(s)) => Json::String(s),
                    ("bool_value", Value::Bool(b)) => Json::Bool(b),
                    (_, Value::Message(m)) => wkt_json(&m, catalog).unwrap_or(Json::Null),
                    _ => Json::Null,
                },
            }
        }
        "google.protobuf.ListValue" => match msg.get_field_by_name("values").map(|v| v.into_owned()) {
            Some(Value::List(items)) => Json::Array(
                items
                    .into_iter()
                    .map(|v| if let Value::Message(m) = v { wkt_json(&m, catalog).unwrap_or(Json::Null) } else { Json::Null })
                    .collect(),
            ),
            _ => Json::Array(vec![]),
        },
        n if n.starts_with("google.protobuf.") && n.ends_with("Value") => {
            let v = msg.get_field_by_name("value").map(|v| v.into_owned()).unwrap_or(Value::Bool(false));
            let kind = msg.descriptor().get_field_by_name("value").map(|f| f.kind()).unwrap_or(Kind::Bool);
            value_json(&v, &kind, catalog)
        }
        _ => return None,
    })
}

fn value_json(v: &Value, kind: &Kind, catalog: &Catalog) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(n) => serde_json::Number::from_f64(f64::from(*n)).map(Json::Number).unwrap_or(Json::Null),
        Value::F64(n) => serde_json::Number::from_f64(*n).map(Json::Number).unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e.get_value(*n).map(|ev| Json::String(ev.name().to_owned())).unwrap_or(Json::from(*n)),
            _ => Json::from(*n),
        },
        Value::Message(m) => to_json(m, catalog),
        Value::List(items) => Json::Array(items.iter().map(|i| value_json(i, kind, catalog)).collect()),
        Value::Map(map) => {
            let value_kind = kind.as_message().and_then(|e| e.get_field_by_name("value")).map(|f| f.kind()).unwrap_or(Kind::String);
            let mut out = Map::new();
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(k, _)| map_key(k));
            for (k, v) in entries {
                out.insert(map_key(k), value_json(v, &value_kind, catalog));
            }
            Json::Object(out)
        }
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Render a message as the contract's JSON.
pub fn to_json(msg: &DynamicMessage, catalog: &Catalog) -> Json {
    if is_wkt(&msg.descriptor())
        && let Some(v) = wkt_json(msg, catalog)
    {
        return v;
    }
    let mut out = Map::new();
    for f in msg.descriptor().fields() {
        let real_oneof = f.containing_oneof().is_some_and(|o| !o.is_synthetic());
        let has = msg.has_field(&f);
        let omit = catalog.omit_empty(&f);
        if real_oneof && !has {
            continue;
        }
        if f.supports_presence() && !has {
            if !omit {
                out.insert(f.json_name().to_owned(), Json::Null);
            }
            continue;
        }
        let v = msg.get_field(&f);
        if omit && (is_empty(&v) || (!f.supports_presence() && !has)) {
            continue;
        }
        out.insert(f.json_name().to_owned(), value_json(&v, &f.kind(), catalog));
    }
    Json::Object(out)
}

/// A message with no fields at all means "no content" (HTTP 204).
pub fn is_empty_message(desc: &MessageDescriptor) -> bool {
    desc.fields().len() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Lookup, RouteTable};

    fn route(table: &RouteTable, method: &str, path: &str) -> (Route, BTreeMap<String, String>) {
        match table.lookup(&method.parse().unwrap(), path) {
            Lookup::Found(r, p) => (r.clone(), p),
            other => panic!("{other:?}"),
        }
    }

    fn build(method: &str, path: &str, query: &[(&str, &str)], body: &str) -> Result<Json, BuildError> {
        let table = RouteTable::from_catalog(Catalog::global()).unwrap();
        let (r, params) = route(&table, method, path);
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let msg = build_request(&r, RequestParts { path_params: &params, query: &query, body: body.as_bytes(), headers: &[] })?;
        Ok(to_json(&msg, Catalog::global()))
    }

    const S: &str = "/api/v1/orgs/me/workspaces/me";

    #[test]
    fn body_path_and_query_make_one_message() {
        let j = build("PATCH", &format!("{S}/apps/42"), &[], r#"{"name":"x","isFavorite":true}"#).unwrap();
        assert_eq!(j["appId"], 42);
        assert_eq!(j["orgId"], "me");
        assert_eq!(j["name"], "x");
        assert_eq!(j["isFavorite"], true);
        let j = build("GET", &format!("{S}/apps:search"), &[("q", "to do"), ("ignored", "1")], "").unwrap();
        assert_eq!(j["q"], "to do");
        let j = build("GET", &format!("{S}/apps/7"), &[("includeFiles", "true")], "").unwrap();
        assert_eq!(j["includeFiles"], true);
        // empty and `{}` bodies are `{}`
        assert!(build("POST", &format!("{S}/apps/7/run"), &[], "").is_ok());
        assert!(build("POST", &format!("{S}/apps/7/run"), &[], " {} ").is_ok());
    }

    #[test]
    fn strict_payloads_name_what_is_wrong() {
        let err = |m, p: &str, b| build(m, p, &[], b).unwrap_err();
        assert_eq!(
            err("POST", &format!("{S}/apps"), r#"{"name":"a","nope":1,"zap":2}"#),
            BuildError::Invalid("Invalid payload: unsupported keys (nope, zap)".into())
        );
        assert_eq!(
            err("POST", &format!("{S}/apps"), r#"{"name":5}"#),
            BuildError::Invalid("Invalid payload: \"name\" must be a string".into())
        );
        assert_eq!(
            err("PATCH", &format!("{S}/apps/1"), r#"{"isFavorite":"yes"}"#),
            BuildError::Invalid("Invalid payload: \"isFavorite\" must be a boolean".into())
        );
        assert_eq!(
            err("POST", &format!("{S}/apps"), r#"{"name":null}"#),
            BuildError::Invalid("Invalid payload: \"name\" must be a string".into())
        );
        assert_eq!(err("POST", &format!("{S}/apps"), "{bad json"), BuildError::Invalid("Invalid JSON body".into()));
        assert_eq!(err("POST", &format!("{S}/apps"), "[1]"), BuildError::Invalid("Invalid payload".into()));
        assert_eq!(
            err(
                "POST",
                &format!("{S}/apps/1/versions/revert"),
                r#"{"previousVersionId":"a","currentChatMessageId":{"chatId":1,"extra":2}}"#
            ),
            BuildError::Invalid("Invalid payload: unsupported currentChatMessageId keys (extra)".into())
        );
        assert_eq!(
            err(
                "POST",
                &format!("{S}/apps/1/versions/revert"),
                r#"{"previousVersionId":"a","currentChatMessageId":{"chatId":"x","messageId":2}}"#
            ),
            BuildError::Invalid("Invalid payload: \"currentChatMessageId.chatId\" must be a finite number".into())
        );
        assert_eq!(
            err("POST", &format!("{S}/apps/1/versions/revert"), r#"{"previousVersionId":"a","currentChatMessageId":null}"#),
            BuildError::Invalid("Invalid payload: \"currentChatMessageId\" must be an object".into())
        );
        // path-bound fields can not come from the body
        assert_eq!(
            err("POST", &format!("{S}/chats/9/stream"), r#"{"prompt":"hi","chatId":3}"#),
            BuildError::Invalid("Invalid payload: unsupported keys (chatId)".into())
        );
        // header-bound fields neither
        assert_eq!(
            err("POST", &format!("{S}/chats/9/stream"), r#"{"prompt":"hi","resumeAfter":"1-0"}"#),
            BuildError::Invalid("Invalid payload: unsupported keys (resumeAfter)".into())
        );
        // body-less routes take no keys
        assert_eq!(
            err("POST", &format!("{S}/apps/7/run"), r#"{"x":1}"#),
            BuildError::Invalid("Invalid payload: unsupported keys (x)".into())
        );
        assert_eq!(err("GET", &format!("{S}/apps/7"), r#"[]"#), BuildError::Invalid("Invalid payload".into()));
    }

    #[test]
    fn bad_path_ids_are_not_found() {
        assert_eq!(build("GET", &format!("{S}/apps/abc"), &[], "").unwrap_err(), BuildError::NotFound);
        assert_eq!(build("GET", &format!("{S}/apps/99999999999999999999"), &[], "").unwrap_err(), BuildError::NotFound);
    }

    #[test]
    fn responses_render_like_the_contract() {
        use blaze_proto::controlplane as cp;
        use prost::Message;
        let catalog = Catalog::global();
        let m = cp::Message {
            id: 9_007_199_254_740_993,
            chat_id: 1,
            role: "assistant".into(),
            content: String::new(),
            approval_state: None,
            created_at: Some(prost_types::Timestamp { seconds: 1_771_545_600, nanos: 5_000_000 }),
            ..Default::default()
        };
        let desc = catalog.pool().get_message_by_name("blaze.controlplane.v1.Message").unwrap();
        let dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).unwrap();
        let j = to_json(&dm, catalog);
        assert_eq!(j["id"], serde_json::json!(9_007_199_254_740_993_i64), "64-bit ids are numbers");
        assert!(j["id"].is_number());
        assert_eq!(j["approvalState"], Json::Null, "unset optional fields are present as null");
        assert_eq!(j["sourceCommitHash"], Json::Null);
        assert_eq!(j["content"], "");
        assert_eq!(j["createdAt"], "2026-02-20T00:00:00.005Z");

        let end = blaze_proto::orchestrator::ChatResponseEnd { chat_id: 3, updated_files: false, ..Default::default() };
        let desc = catalog.pool().get_message_by_name("blaze.orchestrator.v1.ChatResponseEnd").unwrap();
        let dm = DynamicMessage::decode(desc, end.encode_to_vec().as_slice()).unwrap();
        assert_eq!(to_json(&dm, catalog), serde_json::json!({"chatId": 3, "updatedFiles": false}), "omit_empty keys are absent");

        let resp = cp::CreateChatResponse { data: 123 };
        let desc = catalog.pool().get_message_by_name("blaze.controlplane.v1.CreateChatResponse").unwrap();
        let dm = DynamicMessage::decode(desc, resp.encode_to_vec().as_slice()).unwrap();
        assert_eq!(to_json(&dm, catalog), serde_json::json!({"data": 123}));
        let resp = blaze_proto::orchestrator::GetProposalResponse { data: None };
        let desc = catalog.pool().get_message_by_name("blaze.orchestrator.v1.GetProposalResponse").unwrap();
        let dm = DynamicMessage::decode(desc, resp.encode_to_vec().as_slice()).unwrap();
        assert_eq!(to_json(&dm, catalog), serde_json::json!({"data": null}));
        assert!(is_empty_message(&catalog.pool().get_message_by_name("blaze.controlplane.v1.DeleteAppResponse").unwrap()));
    }
}
