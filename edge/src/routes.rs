//! The HTTP route table, built from `google.api.http` rules.
//!
//! Template grammar (the subset of google/api/http.proto we need, and what
//! transcoders commonly get wrong): literal segments, `{field}` (one
//! segment), `{field=*}`, `{field=**}` (the rest, slashes included),
//! `{a.b}` nested fields, a custom verb after the last segment (`apps:search`),
//! and additional bindings. Matching is on raw path segments, each then
//! percent-decoded, so an encoded `/` inside a segment stays inside the value.

use std::collections::BTreeMap;

use blaze_proto::catalog::{Catalog, HttpBinding, MethodSpec};
use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{field}` / `{field=*}`: exactly one segment.
    Single(String),
    /// `{field=**}`: one or more segments, to the end (or before trailing literals).
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let err = |reason| TemplateError { template: template.to_owned(), reason };
        let path = template.strip_prefix('/').ok_or(err("must start with /"))?;
        // The verb follows the last segment, outside any `{...}`.
        let (path, verb) = match path.rfind(':') {
            Some(i) if !path[i..].contains('}') && !path[i..].contains('/') => (&path[..i], Some(path[i + 1..].to_owned())),
            _ => (path, None),
        };
        let mut segments = Vec::new();
        for raw in path.split('/') {
            if raw.is_empty() {
                return Err(err("empty segment"));
            }
            if let Some(inner) = raw.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or(err("unclosed variable"))?;
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if field.is_empty() || !field.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return Err(err("bad field path"));
                }
                segments.push(match pattern {
                    "*" => Segment::Single(field.to_owned()),
                    "**" => Segment::Rest(field.to_owned()),
                    _ => return Err(err("only * and ** variable patterns are supported")),
                });
            } else if raw.contains(['{', '}']) {
                return Err(err("variable must be a whole segment"));
            } else {
                segments.push(Segment::Literal(raw.to_owned()));
            }
        }
        if segments.iter().filter(|s| matches!(s, Segment::Rest(_))).count() > 1 {
            return Err(err("at most one ** variable"));
        }
        Ok(Template { segments, verb })
    }

    fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }

    /// Field paths bound by this template.
    pub fn fields(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Single(f) | Segment::Rest(f) => Some(f.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Match a raw (still percent-encoded) request path.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let mut params = BTreeMap::new();
        let mut i = 0;
        for (si, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Single(field) => {
                    let raw = parts.get(i).filter(|p| !p.is_empty())?;
                    params.insert(field.clone(), percent_decode_str(raw).decode_utf8().ok()?.into_owned());
                    i += 1;
                }
                Segment::Rest(field) => {
                    let after = self.segments.len() - si - 1;
                    if parts.len() < i + 1 + after {
                        return None;
                    }
                    let end = parts.len() - after;
                    let decoded: Option<Vec<String>> =
                        parts[i..end].iter().map(|p| percent_decode_str(p).decode_utf8().ok().map(|c| c.into_owned())).collect();
                    params.insert(field.clone(), decoded?.join("/"));
                    i = end;
                }
            }
        }
        (i == parts.len()).then_some(params)
    }
}

/// One HTTP route of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: http::Method,
    pub template: Template,
    pub binding: HttpBinding,
    pub rpc: MethodSpec,
}

/// What a request path and method resolve to.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Route, BTreeMap<String, String>),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<http::Method>),
    NotFound,
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn from_catalog(catalog: &Catalog) -> Result<RouteTable, TemplateError> {
        let mut routes = Vec::new();
        for rpc in catalog.methods() {
            for binding in &rpc.http {
                let method = http::Method::from_bytes(binding.method.as_bytes())
                    .map_err(|_| TemplateError { template: binding.template.clone(), reason: "bad HTTP method" })?;
                routes.push(Route { method, template: Template::parse(&binding.template)?, binding: binding.clone(), rpc: rpc.clone() });
            }
        }
        // Most specific first: more literal segments win over variables.
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.literal_count()));
        Ok(RouteTable { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(params) = route.template.matches(path) {
                if route.method == *method {
                    return Lookup::Found(route, params);
                }
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() { Lookup::NotFound } else { Lookup::MethodNotAllowed(allowed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t).unwrap().matches(path).map(|p| p.into_iter().collect())
    }

    fn kv(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn template_grammar() {
        // literal and single variables
        assert_eq!(m("/v1/shelves", "/v1/shelves"), kv(&[]));
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves/7"), kv(&[("shelf", "7")]));
        assert_eq!(m("/v1/shelves/{shelf=*}", "/v1/shelves/7"), kv(&[("shelf", "7")]));
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves"), None);
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves/"), None);
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves/7/books"), None);
        // ** takes the rest, slashes included, and may be followed by literals
        assert_eq!(m("/v1/{name=**}", "/v1/a/b/c"), kv(&[("name", "a/b/c")]));
        assert_eq!(m("/v1/{name=**}/logs", "/v1/a/b/logs"), kv(&[("name", "a/b")]));
        assert_eq!(m("/v1/{name=**}/logs", "/v1/logs"), None);
        // nested fields
        assert_eq!(m("/v1/{book.shelf}/books/{book.id}", "/v1/s1/books/9"), kv(&[("book.id", "9"), ("book.shelf", "s1")]));
        // custom verbs
        assert_eq!(m("/v1/apps:search", "/v1/apps:search"), kv(&[]));
        assert_eq!(m("/v1/apps:search", "/v1/apps"), None);
        assert_eq!(m("/v1/apps/{id}", "/v1/apps:search"), None);
        assert_eq!(m("/v1/jobs/{id}:cancel", "/v1/jobs/j1:cancel"), kv(&[("id", "j1")]));
        // percent-decoding per segment: an encoded slash stays in the value
        assert_eq!(m("/v1/files/{path}", "/v1/files/src%2FApp.tsx"), kv(&[("path", "src/App.tsx")]));
        assert_eq!(m("/v1/x/{v}", "/v1/x/%E2%98%83"), kv(&[("v", "☃")]));
        assert_eq!(m("/v1/x/{v}", "/v1/x/%FF"), None, "invalid UTF-8 does not match");
    }

    #[test]
    fn bad_templates_are_rejected() {
        for t in ["v1/x", "/v1//x", "/v1/{x", "/v1/a{x}", "/v1/{x=foo/*}", "/v1/{a=**}/{b=**}", "/v1/{}"] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn every_contract_route_resolves_to_its_rpc() {
        let table = RouteTable::from_catalog(Catalog::global()).unwrap();
        let s = "/api/v1/orgs/me/workspaces/me";
        let cases: Vec<(&str, String, &str)> = vec![
            ("GET", "/api/v1/orgs".into(), "OrganizationService/ListOrganizations"),
            ("POST", "/api/v1/orgs".into(), "OrganizationService/CreateOrganization"),
            ("GET", "/api/v1/orgs/acme".into(), "OrganizationService/GetOrganization"),
            ("PATCH", "/api/v1/orgs/acme".into(), "OrganizationService/UpdateOrganization"),
            ("GET", "/api/v1/orgs/me/workspaces".into(), "WorkspaceService/ListWorkspaces"),
            ("POST", "/api/v1/orgs/me/workspaces".into(), "WorkspaceService/CreateWorkspace"),
            ("GET", s.into(), "WorkspaceService/GetWorkspace"),
            ("PATCH", s.into(), "WorkspaceService/UpdateWorkspace"),
            ("DELETE", s.into(), "WorkspaceService/DeleteWorkspace"),
            ("GET", format!("{s}/apps"), "AppService/ListApps"),
            ("POST", format!("{s}/apps"), "AppService/CreateApp"),
            ("GET", format!("{s}/apps:search"), "AppService/SearchApps"),
            ("GET", format!("{s}/apps/42"), "AppService/GetApp"),
            ("PATCH", format!("{s}/apps/42"), "AppService/UpdateApp"),
            ("DELETE", format!("{s}/apps/42"), "AppService/DeleteApp"),
            ("POST", format!("{s}/apps/42/favorite/toggle"), "AppService/ToggleFavorite"),
            ("GET", format!("{s}/apps/42/file"), "AppService/ReadAppFile"),
            ("POST", format!("{s}/apps/42/run"), "PreviewService/RunApp"),
            ("POST", format!("{s}/apps/42/stop"), "PreviewService/StopApp"),
            ("POST", format!("{s}/apps/42/restart"), "PreviewService/RestartApp"),
            ("GET", format!("{s}/apps/42/versions"), "VersionService/ListVersions"),
            ("POST", format!("{s}/apps/42/versions/checkout"), "VersionService/CheckoutVersion"),
            ("POST", format!("{s}/apps/42/versions/revert"), "VersionService/RevertVersion"),
            ("GET", format!("{s}/apps/42/chats"), "ChatService/ListAppChats"),
            ("POST", format!("{s}/apps/42/chats"), "ChatService/CreateChat"),
            ("GET", format!("{s}/chats"), "ChatService/ListChats"),
            ("GET", format!("{s}/chats/77"), "ChatService/GetChat"),
            ("PATCH", format!("{s}/chats/77"), "ChatService/UpdateChat"),
            ("DELETE", format!("{s}/chats/77"), "ChatService/DeleteChat"),
            ("GET", format!("{s}/chats/77/proposal"), "ProposalService/GetProposal"),
            ("POST", format!("{s}/chats/77/proposal/approve"), "ProposalService/ApproveProposal"),
            ("POST", format!("{s}/chats/77/proposal/reject"), "ProposalService/RejectProposal"),
            ("POST", format!("{s}/chats/77/stream"), "ChatStreamService/StreamChat"),
            ("GET", format!("{s}/chats/77/stream"), "ChatStreamService/ResumeChatStream"),
            ("POST", format!("{s}/chats/77/stream/cancel"), "ChatStreamService/CancelChatStream"),
            ("GET", "/api/v1/settings/user".into(), "SettingsService/GetUserSettings"),
            ("PATCH", "/api/v1/settings/user".into(), "SettingsService/UpdateUserSettings"),
            ("GET", "/api/v1/env-vars".into(), "SettingsService/GetEnvVars"),
            ("GET", "/api/v1/app/version".into(), "MetaService/GetAppVersion"),
            ("GET", "/api/v1/auth/oauth/config".into(), "IdentityService/GetOAuthConfig"),
            ("POST", "/api/v1/auth/oauth/exchange".into(), "IdentityService/ExchangeOAuthCode"),
        ];
        for (method, path, rpc) in cases {
            match table.lookup(&method.parse().unwrap(), &path) {
                Lookup::Found(route, _) => assert!(route.rpc.path.ends_with(rpc), "{method} {path} → {}", route.rpc.path),
                other => panic!("{method} {path}: {other:?}"),
            }
        }
        assert!(matches!(table.lookup(&http::Method::PUT, "/api/v1/orgs"), Lookup::MethodNotAllowed(_)));
        assert!(matches!(table.lookup(&http::Method::GET, "/api/v1/nope"), Lookup::NotFound));
        let Lookup::Found(_, params) = table.lookup(&http::Method::GET, "/api/v1/orgs/acme%20inc/workspaces/w%2F1/apps/42") else {
            panic!()
        };
        assert_eq!(params["org_id"], "acme inc");
        assert_eq!(params["workspace_id"], "w/1");
        assert_eq!(params["app_id"], "42");
    }
}
