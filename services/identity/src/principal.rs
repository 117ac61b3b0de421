//! Principal resolution: from an accepted credential to a user with their
//! memberships, creating the personal organisation and workspaces on first
//! use. Serialised per user with an advisory lock, so concurrent first
//! requests provision exactly one organisation.

use blaze_auth::{OrgAccess, Principal, WorkspaceAccess};
use blaze_db::{
    Db, DbError, Tx,
    audit::{self, AuditEvent},
    tenancy::{self, NewOrg},
};
use blaze_kit::{ApiError, ApiResult};
use uuid::Uuid;

/// The identity a credential asserts.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub external_sub: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

fn personal_org_name(c: &Claimed) -> String {
    let who = c.display_name.as_deref().filter(|s| !s.trim().is_empty()).or(c.email.as_deref()).unwrap_or("Personal");
    format!("{} Organization", who.trim())
}

fn personal_org_slug(c: &Claimed) -> String {
    let base = c
        .email
        .as_deref()
        .and_then(|e| e.split('@').next())
        .filter(|s| !s.is_empty())
        .or(c.display_name.as_deref())
        .unwrap_or(&c.external_sub);
    tenancy::unique_slug(base)
}

/// Upsert the user, provision what is missing, return their principal.
pub async fn resolve_claimed(db: &Db, c: &Claimed, epoch: i64) -> ApiResult<(Principal, tenancy::UserRow)> {
    let tx = db.global().await?;
    let user = tenancy::upsert_user(&tx, &c.external_sub, c.email.as_deref(), c.display_name.as_deref()).await?;
    tx.commit().await?;

    let tx = db.as_user(user.id).await?;
    tx.advisory_lock(&format!("provision:{}", user.id)).await?;
    let mut orgs = tenancy::orgs_of_user(&tx, user.id).await?;
    if orgs.is_empty() {
        let org_id = Uuid::now_v7();
        let name = personal_org_name(c);
        // A generated slug can collide only by chance: retry with a new one.
        let mut attempt = 0;
        loop {
            let slug = personal_org_slug(c);
            let sp = format!("sp{attempt}");
            tx.execute(&format!("SAVEPOINT {sp}"), vec![]).await?;
            match tenancy::create_organization(&tx, NewOrg { id: org_id, slug: &slug, name: &name, owner: user.id }).await {
                Ok(_) => break,
                Err(DbError::Unique { .. }) if attempt < 3 => {
                    tx.execute(&format!("ROLLBACK TO SAVEPOINT {sp}"), vec![]).await?;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        audit::record(
            &tx,
            AuditEvent::new(org_id, "organization_create", "organization")
                .actor(Some(user.id))
                .resource(org_id)
                .metadata(serde_json::json!({"personal": true})),
        )
        .await?;
        orgs = tenancy::orgs_of_user(&tx, user.id).await?;
    }
    ensure_personal_workspaces(&tx, user.id, &orgs).await?;
    let principal = load(&tx, user.id, orgs, epoch).await?;
    tx.commit().await?;
    Ok((principal, user))
}

/// Every organisation the user is active in gets a personal workspace, so
/// `me` always resolves (contract 1.7).
async fn ensure_personal_workspaces(tx: &Tx, user_id: Uuid, orgs: &[tenancy::OrgRow]) -> ApiResult<()> {
    for org in orgs {
        if tenancy::personal_workspace(tx, org.id, user_id).await?.is_none() {
            tx.set_org(org.id).await?;
            let slug = format!("personal-{}", &Uuid::new_v4().simple().to_string()[..8]);
            tenancy::create_workspace(tx, org.id, &slug, "Personal Workspace", "personal", user_id).await?;
        }
    }
    Ok(())
}

async fn load(tx: &Tx, user_id: Uuid, orgs: Vec<tenancy::OrgRow>, epoch: i64) -> ApiResult<Principal> {
    let workspaces = tenancy::workspaces_of_user(tx, user_id).await?;
    let mut seen_personal = std::collections::HashSet::new();
    let workspaces = workspaces
        .into_iter()
        .map(|w| {
            // the earliest personal workspace the user created in each org
            let personal_default =
                w.r#type == "personal" && w.created_by_user_id == Some(user_id) && seen_personal.insert(w.organization_id);
            WorkspaceAccess {
                id: w.id.to_string(),
                org_id: w.organization_id.to_string(),
                slug: w.slug.clone(),
                kind: w.r#type.clone(),
                role: w.effective_role(),
                personal_default,
            }
        })
        .collect();
    let default_org = orgs.first().map(|o| o.id.to_string()).unwrap_or_default();
    Ok(Principal {
        user_id: user_id.to_string(),
        orgs: orgs.into_iter().map(|o| OrgAccess { id: o.id.to_string(), slug: o.slug, role: o.role }).collect(),
        workspaces,
        default_org,
        epoch,
    })
}

const RANK: [&str; 4] = ["viewer", "member", "admin", "owner"];

fn lower_role<'a>(a: &'a str, b: &'a str) -> &'a str {
    let r = |x: &str| RANK.iter().position(|y| *y == x).unwrap_or(0);
    if r(a) <= r(b) { a } else { b }
}

/// The principal of an API token: only the token's organisation, with the
/// lower of the token's role and the user's current role there.
pub async fn resolve_api_token(db: &Db, user_id: Uuid, org_id: Uuid, token_role: &str, epoch: i64) -> ApiResult<Principal> {
    let tx = db.as_user(user_id).await?;
    if tenancy::user_by_id(&tx, user_id).await?.is_none() {
        return Err(ApiError::unauthenticated("Unknown token user"));
    }
    let orgs: Vec<_> = tenancy::orgs_of_user(&tx, user_id).await?.into_iter().filter(|o| o.id == org_id).collect();
    let Some(org) = orgs.first() else {
        return Err(ApiError::unauthenticated("Token user is no longer a member of the organization"));
    };
    let capped = lower_role(&org.role, token_role).to_string();
    let mut p = load(&tx, user_id, orgs.clone(), epoch).await?;
    tx.commit().await?;
    for o in &mut p.orgs {
        o.role = capped.clone();
    }
    for w in &mut p.workspaces {
        w.role = lower_role(&w.role, &capped).to_string();
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_names_follow_the_contract() {
        let c = Claimed { external_sub: "sub-1".into(), email: Some("alice@example.com".into()), display_name: Some("Alice".into()) };
        assert_eq!(personal_org_name(&c), "Alice Organization");
        assert!(personal_org_slug(&c).starts_with("alice-"));
        let anon = Claimed { external_sub: "Sub 9".into(), email: None, display_name: None };
        assert_eq!(personal_org_name(&anon), "Personal Organization");
        assert!(personal_org_slug(&anon).starts_with("sub-9-"));
        assert_eq!(lower_role("owner", "member"), "member");
        assert_eq!(lower_role("viewer", "admin"), "viewer");
    }
}
