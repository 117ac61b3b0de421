//! Database rows → API messages.

use blaze_db::{
    audit::AuditRow,
    tenancy::{OrgRow, WorkspaceRow},
};
use blaze_kit::timestamp;
use blaze_proto::controlplane as pb;

pub fn org(r: OrgRow) -> pb::Organization {
    pb::Organization {
        id: r.id.to_string(),
        slug: r.slug,
        name: r.name,
        role: r.role,
        status: r.status,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

pub fn workspace(r: WorkspaceRow) -> pb::Workspace {
    pb::Workspace {
        id: r.id.to_string(),
        organization_id: r.organization_id.to_string(),
        slug: r.slug,
        name: r.name,
        r#type: r.r#type,
        created_by_user_id: r.created_by_user_id.map(|u| u.to_string()),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn json_to_prost(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(json_to_prost).collect() }),
        serde_json::Value::Object(o) => Kind::StructValue(struct_of(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn struct_of(o: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: o.into_iter().map(|(k, v)| (k, json_to_prost(v))).collect() }
}

pub fn audit(r: AuditRow) -> pb::AuditEvent {
    pb::AuditEvent {
        id: r.id,
        organization_id: r.organization_id.to_string(),
        workspace_id: r.workspace_id.map(|u| u.to_string()),
        actor_user_id: r.actor_user_id.map(|u| u.to_string()),
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        request_id: r.request_id,
        outcome: r.outcome,
        metadata: Some(match r.metadata {
            serde_json::Value::Object(o) => struct_of(o),
            _ => prost_types::Struct::default(),
        }),
        created_at: Some(timestamp(r.created_at)),
    }
}
