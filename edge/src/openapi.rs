//! `/openapi.json`: OpenAPI 3.1 generated from the same descriptors and
//! options the transcoder uses, so it can not drift from what the edge does.
//! Response schemas are exact about presence: keys the edge always writes are
//! `required`, optional ones are nullable, `omit_empty` ones are optional.

use std::collections::{BTreeMap, BTreeSet};

use blaze_proto::{catalog::Catalog, options::Scope};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::routes::RouteTable;

fn schema_name(m: &MessageDescriptor) -> String {
    m.full_name().replace('.', "_")
}

fn scalar_schema(kind: &Kind, refs: &mut BTreeSet<String>, pool: &mut Vec<MessageDescriptor>) -> Json {
    match kind {
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Enum(e) => json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()}),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" | "google.protobuf.FieldMask" => json!({"type": "string"}),
            "google.protobuf.Struct" => json!({"type": "object"}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array"}),
            _ => {
                let name = schema_name(m);
                if refs.insert(name.clone()) {
                    pool.push(m.clone());
                }
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
        },
    }
}

fn field_schema(f: &FieldDescriptor, refs: &mut BTreeSet<String>, pool: &mut Vec<MessageDescriptor>) -> Json {
    if f.is_map() {
        let value = f.kind().as_message().and_then(|e| e.get_field_by_name("value")).map(|v| v.kind()).unwrap_or(Kind::String);
        return json!({"type": "object", "additionalProperties": scalar_schema(&value, refs, pool)});
    }
    let item = scalar_schema(&f.kind(), refs, pool);
    if f.is_list() { json!({"type": "array", "items": item}) } else { item }
}

fn nullable(schema: Json) -> Json {
    if let Some(t) = schema.get("type").and_then(|t| t.as_str()) {
        let mut s = schema.clone();
        s["type"] = json!([t, "null"]);
        s
    } else {
        json!({"oneOf": [schema, {"type": "null"}]})
    }
}

/// Schema of a message as the edge writes it (responses).
fn output_schema(m: &MessageDescriptor, catalog: &Catalog, refs: &mut BTreeSet<String>, pool: &mut Vec<MessageDescriptor>) -> Json {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in m.fields() {
        let real_oneof = f.containing_oneof().is_some_and(|o| !o.is_synthetic());
        let mut s = field_schema(&f, refs, pool);
        let omit = catalog.omit_empty(&f);
        if f.supports_presence() && !real_oneof && !omit {
            s = nullable(s);
        }
        if !real_oneof && !omit {
            required.push(f.json_name().to_owned());
        }
        props.insert(f.json_name().to_owned(), s);
    }
    json!({"type": "object", "properties": props, "required": required})
}

/// Schema of a request body: the message minus path- and header-bound
/// fields, no other keys allowed.
fn input_schema(
    m: &MessageDescriptor,
    excluded: &BTreeSet<String>,
    refs: &mut BTreeSet<String>,
    pool: &mut Vec<MessageDescriptor>,
) -> Json {
    let mut props = Map::new();
    for f in m.fields().filter(|f| !excluded.contains(f.name())) {
        props.insert(f.json_name().to_owned(), field_schema(&f, refs, pool));
    }
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

fn openapi_path(template: &str, input: &MessageDescriptor) -> (String, Vec<(String, Kind)>) {
    let mut params = Vec::new();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).unwrap_or(rest.len() - 1);
        let var = &rest[start + 1..end];
        let field = var.split('=').next().unwrap_or(var);
        let leaf = field.split('.').next_back().unwrap_or(field);
        let f = input.get_field_by_name(field.split('.').next().unwrap_or(field));
        let json_name = f.as_ref().map(|f| f.json_name().to_owned()).unwrap_or_else(|| leaf.to_owned());
        out.push('{');
        out.push_str(&json_name);
        out.push('}');
        params.push((json_name, f.map(|f| f.kind()).unwrap_or(Kind::String)));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (out, params)
}

fn error_responses(public: bool) -> Map<String, Json> {
    let mut r = Map::new();
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    r.insert("400".into(), err("Invalid payload"));
    if !public {
        r.insert("401".into(), err("Unauthenticated (an expired JWT says `JWT is expired`)"));
        r.insert("403".into(), err("Role too low"));
        r.insert("429".into(), err("Rate or quota limit (see Retry-After)"));
    }
    r.insert("404".into(), err("Not found (also for other tenants' objects)"));
    r.insert("409".into(), err("Conflict"));
    r.insert("413".into(), err("Body too large"));
    r.insert("500".into(), err("Internal error"));
    r.insert("503".into(), err("A dependency is unavailable"));
    r
}

pub fn generate(table: &RouteTable, catalog: &Catalog, version: &str) -> Json {
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut refs = BTreeSet::new();
    let mut pool: Vec<MessageDescriptor> = Vec::new();
    for route in table.routes() {
        let input = route.rpc.descriptor.input();
        let output = route.rpc.descriptor.output();
        let (path, path_params) = openapi_path(&route.binding.template, &input);
        let mut bound: BTreeSet<String> =
            route.template.fields().into_iter().map(|f| f.split('.').next().unwrap_or(f).to_owned()).collect();
        let mut parameters: Vec<Json> = path_params
            .iter()
            .map(|(name, kind)| json!({"name": name, "in": "path", "required": true, "schema": scalar_schema(kind, &mut refs, &mut pool)}))
            .collect();
        for h in &route.rpc.header_bindings {
            bound.insert(h.field.clone());
            parameters.push(json!({"name": h.header, "in": "header", "required": false, "schema": {"type": "string"}}));
        }
        if route.rpc.access.mutates && !route.rpc.is_streaming() {
            parameters.push(
                json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 200}}),
            );
        }
        let mut op = Map::new();
        let service = route.rpc.descriptor.parent_service();
        op.insert("operationId".into(), json!(format!("{}_{}", service.name(), route.rpc.descriptor.name())));
        op.insert("tags".into(), json!([service.full_name()]));
        if route.binding.body.is_empty() {
            for f in input.fields().filter(|f| !bound.contains(f.name())) {
                let is_scalar = !matches!(f.kind(), Kind::Message(_)) && !f.is_map();
                if is_scalar {
                    parameters.push(
                        json!({"name": f.json_name(), "in": "query", "required": false, "schema": field_schema(&f, &mut refs, &mut pool)}),
                    );
                }
            }
        } else {
            let schema = if route.binding.body == "*" {
                input_schema(&input, &bound, &mut refs, &mut pool)
            } else {
                input.get_field_by_name(&route.binding.body).map(|f| field_schema(&f, &mut refs, &mut pool)).unwrap_or(json!({}))
            };
            op.insert("requestBody".into(), json!({"required": false, "content": {"application/json": {"schema": schema}}}));
        }
        op.insert("parameters".into(), Json::Array(parameters));
        let public = route.rpc.scope() == Scope::Public;
        let mut responses = error_responses(public);
        if route.rpc.is_streaming() {
            let events: Vec<String> = output.fields().filter_map(|f| catalog.sse_event(&f).map(str::to_owned)).collect();
            responses.insert(
                "200".into(),
                json!({"description": format!("Server-Sent Events: {}", events.join(", ")), "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
            );
        } else if crate::json::is_empty_message(&output) {
            responses.insert("204".into(), json!({"description": "No content"}));
        } else {
            let schema = scalar_schema(&Kind::Message(output.clone()), &mut refs, &mut pool);
            responses.insert("200".into(), json!({"description": "OK", "content": {"application/json": {"schema": schema}}}));
        }
        op.insert("responses".into(), Json::Object(responses));
        if public {
            op.insert("security".into(), json!([]));
        }
        paths.entry(path).or_default().insert(route.method.as_str().to_lowercase(), Json::Object(op));
    }

    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {"error": {"type": "string"}, "code": {"type": "string"}}, "required": ["error", "code"]}),
    );
    while let Some(m) = pool.pop() {
        let name = schema_name(&m);
        if schemas.contains_key(&name) {
            continue;
        }
        let s = output_schema(&m, catalog, &mut refs, &mut pool);
        schemas.insert(name, s);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Blaze Service API", "version": version, "description": "HTTP/JSON and SSE API of Blaze Service, generated from the proto descriptors."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "OIDC ID token or Blaze API token"}}
        },
        "security": [{"bearerAuth": []}]
    })
}

/// A copy of `v` whose objects list their keys in order, whichever order
/// `serde_json::Map` keeps (its `preserve_order` feature depends on what
/// else is in the build).
fn sorted(v: &Json) -> Json {
    match v {
        Json::Object(map) => {
            let entries: BTreeMap<&String, Json> = map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Json::Object(entries.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Json::Array(items) => Json::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The document as `docs/openapi.json` keeps it and `blaze openapi` prints
/// it: this build's version, sorted keys, pretty-printed, trailing newline.
pub fn document() -> anyhow::Result<String> {
    let catalog = Catalog::global();
    let table = RouteTable::from_catalog(catalog)?;
    let version = blaze_kit::config::EdgeConfig::default().app_version;
    let mut text = serde_json::to_string_pretty(&sorted(&generate(&table, catalog, &version)))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_openapi_json_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let expected = document().unwrap();
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(actual == expected, "docs/openapi.json is stale: run `make openapi`");
    }

    #[test]
    fn every_route_is_documented_with_resolvable_refs() {
        let catalog = Catalog::global();
        let table = RouteTable::from_catalog(catalog).unwrap();
        let doc = generate(&table, catalog, "test");
        let paths = doc["paths"].as_object().unwrap();
        let count: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(count, table.routes().len());
        let apps = &paths["/api/v1/orgs/{orgId}/workspaces/{workspaceId}/apps/{appId}"];
        assert!(apps["get"].is_object() && apps["patch"].is_object() && apps["delete"].is_object());
        assert!(apps["delete"]["responses"]["204"].is_object());
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        let message = &schemas["blaze_controlplane_v1_Message"];
        assert_eq!(message["properties"]["id"]["type"], "integer");
        assert_eq!(message["properties"]["approvalState"]["type"], json!(["string", "null"]));
        assert!(message["required"].as_array().unwrap().contains(&json!("approvalState")));
    }
}
