//! Every route of the client's HTTP contract (contract §2.1, R1-R40) has
//! exactly one RPC whose `google.api.http` rule matches it. The rules are read
//! from the embedded descriptor set, so this also proves that extension
//! options survive the build.

use blaze_proto::catalog::Catalog;

const S: &str = "/api/v1/orgs/{orgId}/workspaces/{workspaceId}";

/// (route, method, path) from the contract's route table.
fn contract_routes() -> Vec<(&'static str, &'static str, String)> {
    let s = |p: &str| format!("{S}{p}");
    vec![
        ("R1", "GET", "/api/v1/orgs".into()),
        ("R2", "POST", "/api/v1/orgs".into()),
        ("R3", "GET", "/api/v1/orgs/{orgId}".into()),
        ("R4", "PATCH", "/api/v1/orgs/{orgId}".into()),
        ("R5", "GET", "/api/v1/orgs/{orgId}/workspaces".into()),
        ("R6", "POST", "/api/v1/orgs/{orgId}/workspaces".into()),
        ("R7", "GET", "/api/v1/orgs/{orgId}/workspaces/{workspaceId}".into()),
        ("R8", "PATCH", "/api/v1/orgs/{orgId}/workspaces/{workspaceId}".into()),
        ("R9", "DELETE", "/api/v1/orgs/{orgId}/workspaces/{workspaceId}".into()),
        ("R10", "GET", s("/apps")),
        ("R11", "POST", s("/apps")),
        ("R12", "GET", s("/apps:search")),
        ("R13", "GET", s("/apps/{appId}")),
        ("R14", "PATCH", s("/apps/{appId}")),
        ("R15", "DELETE", s("/apps/{appId}")),
        ("R16", "POST", s("/apps/{appId}/favorite/toggle")),
        ("R17", "GET", s("/apps/{appId}/file")),
        ("R18", "POST", s("/apps/{appId}/run")),
        ("R19", "POST", s("/apps/{appId}/stop")),
        ("R20", "POST", s("/apps/{appId}/restart")),
        ("R21", "GET", s("/apps/{appId}/versions")),
        ("R22", "POST", s("/apps/{appId}/versions/checkout")),
        ("R23", "POST", s("/apps/{appId}/versions/revert")),
        ("R24", "GET", s("/apps/{appId}/chats")),
        ("R25", "POST", s("/apps/{appId}/chats")),
        ("R26", "GET", s("/chats")),
        ("R27", "GET", s("/chats/{chatId}")),
        ("R28", "PATCH", s("/chats/{chatId}")),
        ("R29", "DELETE", s("/chats/{chatId}")),
        ("R30", "GET", s("/chats/{chatId}/proposal")),
        ("R31", "POST", s("/chats/{chatId}/proposal/approve")),
        ("R32", "POST", s("/chats/{chatId}/proposal/reject")),
        ("R33", "POST", s("/chats/{chatId}/stream")),
        ("R34", "POST", s("/chats/{chatId}/stream/cancel")),
        ("R35", "GET", "/api/v1/settings/user".into()),
        ("R36", "PATCH", "/api/v1/settings/user".into()),
        ("R37", "GET", "/api/v1/env-vars".into()),
        ("R38", "GET", "/api/v1/app/version".into()),
        ("R39", "GET", "/api/v1/auth/oauth/config".into()),
        ("R40", "POST", "/api/v1/auth/oauth/exchange".into()),
    ]
}

/// `{anyName}` and `{any_name=...}` → `{}`, so contract and proto spellings compare.
fn shape(template: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in template.chars() {
        match c {
            '{' => {
                depth += 1;
                out.push('{');
            }
            '}' => {
                depth -= 1;
                out.push('}');
            }
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn every_contract_route_has_exactly_one_rpc() {
    let catalog = Catalog::global();
    let bindings: Vec<(String, String, String)> =
        catalog.methods().iter().flat_map(|m| m.http.iter().map(move |b| (b.method.clone(), shape(&b.template), m.path.clone()))).collect();
    for (route, method, path) in contract_routes() {
        let wanted = shape(&path);
        let matches: Vec<&String> = bindings.iter().filter(|(m, t, _)| m == method && *t == wanted).map(|(_, _, rpc)| rpc).collect();
        assert_eq!(matches.len(), 1, "{route} {method} {path}: {matches:?}");
    }
}

#[test]
fn path_variables_name_real_fields_of_the_request() {
    for m in Catalog::global().methods() {
        let input = m.descriptor.input();
        for b in &m.http {
            for var in b.template.split('{').skip(1).filter_map(|rest| rest.split('}').next()) {
                let field = var.split('=').next().unwrap_or(var);
                let mut msg = input.clone();
                let parts: Vec<&str> = field.split('.').collect();
                for (i, part) in parts.iter().enumerate() {
                    let f = msg
                        .get_field_by_name(part)
                        .unwrap_or_else(|| panic!("{}: {{{field}}} is not a field of {}", m.path, msg.full_name()));
                    if i + 1 < parts.len() {
                        msg = f.kind().as_message().cloned().expect("nested path through a message");
                    }
                }
            }
            assert!(b.body.is_empty() || b.body == "*" || input.get_field_by_name(&b.body).is_some(), "{}: bad body {}", m.path, b.body);
        }
    }
}
