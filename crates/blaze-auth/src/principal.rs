//! Who the caller is, what they can enter, and the per-RPC access decision.
//!
//! Tenancy identifiers in requests may be ids, slugs, or the aliases `me`
//! (the default organisation / personal workspace) and `personal`. Anything
//! the caller can not enter answers "not found", never "forbidden", so ids of
//! other tenants can not be probed; "forbidden" only means "you are in, but
//! your role is too low".

use blaze_proto::options::{Role, Scope};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgAccess {
    pub id: String,
    pub slug: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceAccess {
    pub id: String,
    pub org_id: String,
    pub slug: String,
    /// `personal` | `team`
    pub kind: String,
    /// Effective role (membership, or the org role of an org admin entering a
    /// team workspace).
    pub role: String,
    /// The caller's own personal workspace of that organisation.
    pub personal_default: bool,
}

/// An authenticated user with their memberships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: String,
    /// Active organisation memberships, default organisation first.
    pub orgs: Vec<OrgAccess>,
    pub workspaces: Vec<WorkspaceAccess>,
    pub default_org: String,
    /// Membership epoch this principal was built at.
    pub epoch: i64,
}

/// The tenant a request resolved to, with the caller's roles there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantAccess {
    pub org_id: String,
    pub org_role: Role,
    pub workspace_id: Option<String>,
    pub workspace_role: Option<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("Organization not found")]
    OrgNotFound,
    #[error("Workspace not found")]
    WorkspaceNotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("Authentication required")]
    Unauthenticated,
    #[error("This RPC is internal")]
    InternalOnly,
}

fn role(s: &str) -> Role {
    Role::parse(s).unwrap_or(Role::Unspecified)
}

fn is_alias(ident: &str) -> bool {
    ident.is_empty() || ident == "me"
}

impl Principal {
    pub fn resolve_org(&self, ident: &str) -> Result<&OrgAccess, AccessError> {
        let ident = ident.trim();
        if is_alias(ident) {
            return self.orgs.iter().find(|o| o.id == self.default_org).or(self.orgs.first()).ok_or(AccessError::OrgNotFound);
        }
        self.orgs.iter().find(|o| o.id == ident || o.slug == ident).ok_or(AccessError::OrgNotFound)
    }

    pub fn resolve_workspace(&self, org: &OrgAccess, ident: &str) -> Result<&WorkspaceAccess, AccessError> {
        let ident = ident.trim();
        let in_org = || self.workspaces.iter().filter(move |w| w.org_id == org.id);
        if is_alias(ident) || ident == "personal" {
            return in_org()
                .find(|w| w.personal_default)
                .or_else(|| in_org().find(|w| w.kind == "personal"))
                .ok_or(AccessError::WorkspaceNotFound);
        }
        in_org().find(|w| w.id == ident || w.slug == ident).ok_or(AccessError::WorkspaceNotFound)
    }

    /// The access decision for one RPC: resolve the tenant named by the
    /// request and compare the caller's role with the RPC's minimum role.
    pub fn authorize(&self, scope: Scope, min_role: Role, org_ident: &str, ws_ident: &str) -> Result<Option<TenantAccess>, AccessError> {
        match scope {
            Scope::Public | Scope::Authenticated => {
                // Tenant-free routes still resolve `me` for handlers that need
                // a default organisation (e.g. creating the first app).
                let tenant = self.resolve_org("").ok().map(|o| TenantAccess {
                    org_id: o.id.clone(),
                    org_role: role(&o.role),
                    workspace_id: None,
                    workspace_role: None,
                });
                Ok(tenant)
            }
            Scope::Organization => {
                let org = self.resolve_org(org_ident)?;
                let org_role = role(&org.role);
                if org_role < min_role {
                    return Err(AccessError::Forbidden(forbidden_message(min_role, true)));
                }
                Ok(Some(TenantAccess { org_id: org.id.clone(), org_role, workspace_id: None, workspace_role: None }))
            }
            Scope::Workspace => {
                let org = self.resolve_org(org_ident)?;
                let ws = self.resolve_workspace(org, ws_ident)?;
                let ws_role = role(&ws.role);
                if ws_role < min_role {
                    return Err(AccessError::Forbidden(forbidden_message(min_role, false)));
                }
                Ok(Some(TenantAccess {
                    org_id: org.id.clone(),
                    org_role: role(&org.role),
                    workspace_id: Some(ws.id.clone()),
                    workspace_role: Some(ws_role),
                }))
            }
            Scope::Internal => Err(AccessError::InternalOnly),
            Scope::Unspecified => Err(AccessError::Forbidden("RPC has no access rule".into())),
        }
    }
}

fn forbidden_message(min_role: Role, org_level: bool) -> String {
    match (min_role, org_level) {
        (Role::Member, _) => "Viewer role is read-only".into(),
        (Role::Admin, true) => "Only organization owner/admin can perform this operation".into(),
        (Role::Admin, false) => "Only owner/admin can update workspace settings".into(),
        (Role::Owner, _) => "Only the organization owner can perform this operation".into(),
        _ => "Forbidden".into(),
    }
}

impl From<blaze_proto::identity::Principal> for Principal {
    fn from(p: blaze_proto::identity::Principal) -> Self {
        Principal {
            user_id: p.user_id,
            orgs: p.organizations.into_iter().map(|o| OrgAccess { id: o.organization_id, slug: o.slug, role: o.role }).collect(),
            workspaces: p
                .workspaces
                .into_iter()
                .map(|w| WorkspaceAccess {
                    id: w.workspace_id,
                    org_id: w.organization_id,
                    slug: w.slug,
                    kind: w.r#type,
                    role: w.role,
                    personal_default: w.personal_default,
                })
                .collect(),
            default_org: p.default_organization_id,
            epoch: p.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            user_id: "u1".into(),
            orgs: vec![
                OrgAccess { id: "o1".into(), slug: "acme".into(), role: "owner".into() },
                OrgAccess { id: "o2".into(), slug: "other".into(), role: "viewer".into() },
            ],
            workspaces: vec![
                WorkspaceAccess {
                    id: "w1".into(),
                    org_id: "o1".into(),
                    slug: "personal".into(),
                    kind: "personal".into(),
                    role: "owner".into(),
                    personal_default: true,
                },
                WorkspaceAccess {
                    id: "w2".into(),
                    org_id: "o2".into(),
                    slug: "team".into(),
                    kind: "team".into(),
                    role: "viewer".into(),
                    personal_default: false,
                },
            ],
            default_org: "o1".into(),
            epoch: 0,
        }
    }

    #[test]
    fn me_resolves_to_default_org_and_personal_workspace() {
        let p = principal();
        let t = p.authorize(Scope::Workspace, Role::Member, "me", "me").unwrap().unwrap();
        assert_eq!((t.org_id.as_str(), t.workspace_id.as_deref()), ("o1", Some("w1")));
        let t = p.authorize(Scope::Workspace, Role::Viewer, "acme", "personal").unwrap().unwrap();
        assert_eq!(t.workspace_id.as_deref(), Some("w1"));
    }

    #[test]
    fn foreign_tenants_are_not_found_and_low_roles_forbidden() {
        let p = principal();
        assert_eq!(p.authorize(Scope::Organization, Role::Viewer, "o9", "").unwrap_err(), AccessError::OrgNotFound);
        assert_eq!(p.authorize(Scope::Workspace, Role::Viewer, "o1", "w2").unwrap_err(), AccessError::WorkspaceNotFound);
        assert_eq!(
            p.authorize(Scope::Workspace, Role::Member, "o2", "team").unwrap_err(),
            AccessError::Forbidden("Viewer role is read-only".into())
        );
        assert!(p.authorize(Scope::Workspace, Role::Viewer, "other", "w2").is_ok());
        assert_eq!(p.authorize(Scope::Internal, Role::Unspecified, "", "").unwrap_err(), AccessError::InternalOnly);
    }
}
