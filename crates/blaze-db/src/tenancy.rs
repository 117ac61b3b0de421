//! Users, organisations, workspaces, memberships and projects.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx};

#[derive(Debug, Clone, FromQueryResult)]
pub struct UserRow {
    pub id: Uuid,
    pub external_sub: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct OrgRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub role: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub slug: String,
    pub name: String,
    pub r#type: String,
    pub created_by_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A workspace the user can enter with their effective role there.
#[derive(Debug, Clone, FromQueryResult)]
pub struct WorkspaceAccessRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub slug: String,
    pub r#type: String,
    pub created_by_user_id: Option<Uuid>,
    pub ws_role: Option<String>,
    pub org_role: String,
}

const ROLES: [&str; 4] = ["viewer", "member", "admin", "owner"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(0)
}

impl WorkspaceAccessRow {
    /// Membership role, raised to the organisation role of an org
    /// owner/admin in a team workspace.
    pub fn effective_role(&self) -> String {
        let org_admin = matches!(self.org_role.as_str(), "owner" | "admin") && self.r#type == "team";
        match (&self.ws_role, org_admin) {
            (Some(ws), true) if rank(ws) < rank(&self.org_role) => self.org_role.clone(),
            (Some(ws), _) => ws.clone(),
            (None, true) => self.org_role.clone(),
            (None, false) => "viewer".into(),
        }
    }
}

/// Lower-case, `[a-z0-9]` runs joined by `-`, at most 60 characters.
pub fn sanitize_slug(input: &str) -> String {
    let mut out = String::new();
    for c in input.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(60).collect();
    out.trim_end_matches('-').to_string()
}

/// A slug with a base36 millisecond suffix (`alice-m3x1k2`).
pub fn unique_slug(base: &str) -> String {
    let base = sanitize_slug(base);
    let base = if base.is_empty() { "org".to_string() } else { base };
    let mut ms = Utc::now().timestamp_millis().unsigned_abs();
    let mut suffix = String::new();
    while ms > 0 {
        let d = (ms % 36) as u32;
        suffix.insert(0, char::from_digit(d, 36).expect("digit"));
        ms /= 36;
    }
    // a little randomness: two provisionings in one millisecond stay apart
    let rand = &Uuid::new_v4().simple().to_string()[..4];
    format!("{base}-{suffix}{rand}")
}

pub async fn upsert_user(tx: &Tx, external_sub: &str, email: Option<&str>, display_name: Option<&str>) -> DbResult<UserRow> {
    let row = tx
        .one::<UserRow>(
            "INSERT INTO users (id, external_sub, email, display_name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (external_sub) DO UPDATE
               SET email = COALESCE(EXCLUDED.email, users.email),
                   display_name = COALESCE(EXCLUDED.display_name, users.display_name)
             RETURNING id, external_sub, email, display_name",
            vec![Uuid::now_v7().into(), external_sub.into(), email.map(str::to_owned).into(), display_name.map(str::to_owned).into()],
        )
        .await?;
    row.ok_or_else(|| DbError::Other("upsert returned no row".into()))
}

pub async fn user_by_id(tx: &Tx, id: Uuid) -> DbResult<Option<UserRow>> {
    tx.one("SELECT id, external_sub, email, display_name FROM users WHERE id = $1", vec![id.into()]).await
}

/// Active organisation memberships of a user, default (earliest) first.
pub async fn orgs_of_user(tx: &Tx, user_id: Uuid) -> DbResult<Vec<OrgRow>> {
    tx.all(
        "SELECT o.id, o.slug, o.name, m.role, m.status, o.created_at, o.updated_at
         FROM organization_memberships m JOIN organizations o ON o.id = m.organization_id
         WHERE m.user_id = $1 AND m.status = 'active'
         ORDER BY m.created_at, o.created_at, o.id",
        vec![user_id.into()],
    )
    .await
}

/// Every workspace a user can enter, in the order they joined.
pub async fn workspaces_of_user(tx: &Tx, user_id: Uuid) -> DbResult<Vec<WorkspaceAccessRow>> {
    tx.all(
        "SELECT w.id, w.organization_id, w.slug, w.type, w.created_by_user_id, wm.role AS ws_role, om.role AS org_role
         FROM workspaces w
         JOIN organization_memberships om ON om.organization_id = w.organization_id AND om.user_id = $1 AND om.status = 'active'
         LEFT JOIN workspace_memberships wm ON wm.workspace_id = w.id AND wm.user_id = $1
         WHERE wm.user_id IS NOT NULL OR (w.type = 'team' AND om.role IN ('owner', 'admin'))
         ORDER BY w.organization_id, COALESCE(wm.created_at, w.created_at), w.id",
        vec![user_id.into()],
    )
    .await
}

pub struct NewOrg<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub name: &'a str,
    pub owner: Uuid,
}

/// Create an organisation with its owner, the owner's personal workspace and
/// its default project (one transaction; the caller sets the org first).
pub async fn create_organization(tx: &Tx, org: NewOrg<'_>) -> DbResult<Uuid> {
    tx.set_org(org.id).await?;
    tx.execute(
        "INSERT INTO organizations (id, slug, name, created_by_user_id) VALUES ($1, $2, $3, $4)",
        vec![org.id.into(), org.slug.into(), org.name.into(), org.owner.into()],
    )
    .await?;
    tx.execute(
        "INSERT INTO organization_memberships (organization_id, user_id, role, status) VALUES ($1, $2, 'owner', 'active')",
        vec![org.id.into(), org.owner.into()],
    )
    .await?;
    let ws = create_workspace(tx, org.id, "personal", "Personal Workspace", "personal", org.owner).await?;
    Ok(ws.id)
}

/// Create a workspace, its creator as owner and its default project.
pub async fn create_workspace(tx: &Tx, org_id: Uuid, slug: &str, name: &str, kind: &str, creator: Uuid) -> DbResult<WorkspaceRow> {
    let id = Uuid::now_v7();
    let row = tx
        .one::<WorkspaceRow>(
            "INSERT INTO workspaces (id, organization_id, slug, name, type, created_by_user_id) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, organization_id, slug, name, type, created_by_user_id, created_at, updated_at",
            vec![id.into(), org_id.into(), slug.into(), name.into(), kind.into(), creator.into()],
        )
        .await?
        .ok_or_else(|| DbError::Other("insert returned no row".into()))?;
    tx.execute(
        "INSERT INTO workspace_memberships (organization_id, workspace_id, user_id, role) VALUES ($1, $2, $3, 'owner')",
        vec![org_id.into(), id.into(), creator.into()],
    )
    .await?;
    tx.execute(
        "INSERT INTO projects (id, organization_id, workspace_id, name, is_default) VALUES ($1, $2, $3, 'Default', true)",
        vec![Uuid::now_v7().into(), org_id.into(), id.into()],
    )
    .await?;
    Ok(row)
}

/// The user's personal workspace in an organisation, if any.
pub async fn personal_workspace(tx: &Tx, org_id: Uuid, user_id: Uuid) -> DbResult<Option<Uuid>> {
    #[derive(FromQueryResult)]
    struct Id {
        id: Uuid,
    }
    Ok(tx
        .one::<Id>(
            "SELECT w.id FROM workspaces w JOIN workspace_memberships m ON m.workspace_id = w.id AND m.user_id = $2
             WHERE w.organization_id = $1 AND w.type = 'personal' AND w.created_by_user_id = $2
             ORDER BY m.created_at LIMIT 1",
            vec![org_id.into(), user_id.into()],
        )
        .await?
        .map(|r| r.id))
}

pub async fn get_org(tx: &Tx, org_id: Uuid, user_id: Uuid) -> DbResult<Option<OrgRow>> {
    tx.one(
        "SELECT o.id, o.slug, o.name, m.role, m.status, o.created_at, o.updated_at
         FROM organizations o JOIN organization_memberships m ON m.organization_id = o.id AND m.user_id = $2
         WHERE o.id = $1",
        vec![org_id.into(), user_id.into()],
    )
    .await
}

pub async fn rename_org(tx: &Tx, org_id: Uuid, name: &str) -> DbResult<u64> {
    tx.execute("UPDATE organizations SET name = $2 WHERE id = $1", vec![org_id.into(), name.into()]).await
}

const WS_COLS: &str = "id, organization_id, slug, name, type, created_by_user_id, created_at, updated_at";

/// Workspaces of an organisation the user can enter (never other members'
/// personal workspaces), personal first then by creation.
pub async fn list_workspaces(tx: &Tx, org_id: Uuid, user_id: Uuid) -> DbResult<Vec<WorkspaceRow>> {
    tx.all(
        &format!(
            "SELECT {WS_COLS} FROM workspaces w
             WHERE w.organization_id = $1 AND (
               EXISTS (SELECT 1 FROM workspace_memberships m WHERE m.workspace_id = w.id AND m.user_id = $2)
               OR (w.type = 'team' AND EXISTS (SELECT 1 FROM organization_memberships om
                    WHERE om.organization_id = w.organization_id AND om.user_id = $2 AND om.role IN ('owner', 'admin') AND om.status = 'active')))
             ORDER BY (w.type = 'personal' AND w.created_by_user_id = $2) DESC, w.created_at, w.id"
        ),
        vec![org_id.into(), user_id.into()],
    )
    .await
}

pub async fn get_workspace(tx: &Tx, org_id: Uuid, ws_id: Uuid) -> DbResult<Option<WorkspaceRow>> {
    tx.one(&format!("SELECT {WS_COLS} FROM workspaces WHERE organization_id = $1 AND id = $2"), vec![org_id.into(), ws_id.into()]).await
}

pub async fn update_workspace(
    tx: &Tx,
    org_id: Uuid,
    ws_id: Uuid,
    name: Option<&str>,
    slug: Option<&str>,
) -> DbResult<Option<WorkspaceRow>> {
    tx.one(
        &format!(
            "UPDATE workspaces SET name = COALESCE($3, name), slug = COALESCE($4, slug)
             WHERE organization_id = $1 AND id = $2 RETURNING {WS_COLS}"
        ),
        vec![org_id.into(), ws_id.into(), name.map(str::to_owned).into(), slug.map(str::to_owned).into()],
    )
    .await
}

pub async fn delete_workspace(tx: &Tx, org_id: Uuid, ws_id: Uuid) -> DbResult<u64> {
    tx.execute("DELETE FROM workspaces WHERE organization_id = $1 AND id = $2", vec![org_id.into(), ws_id.into()]).await
}

/// Users who can see a workspace (their principals change when it does).
pub async fn workspace_members(tx: &Tx, org_id: Uuid, ws_id: Uuid) -> DbResult<Vec<Uuid>> {
    #[derive(FromQueryResult)]
    struct U {
        user_id: Uuid,
    }
    let rows: Vec<U> = tx
        .all(
            "SELECT user_id FROM workspace_memberships WHERE organization_id = $1 AND workspace_id = $2
             UNION SELECT user_id FROM organization_memberships WHERE organization_id = $1 AND role IN ('owner', 'admin')",
            vec![org_id.into(), ws_id.into()],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.user_id).collect())
}

/// Every active member of an organisation.
pub async fn org_members(tx: &Tx, org_id: Uuid) -> DbResult<Vec<Uuid>> {
    #[derive(FromQueryResult)]
    struct U {
        user_id: Uuid,
    }
    let rows: Vec<U> = tx.all("SELECT user_id FROM organization_memberships WHERE organization_id = $1", vec![org_id.into()]).await?;
    Ok(rows.into_iter().map(|r| r.user_id).collect())
}

/// The role of a user in an organisation (active memberships only).
pub async fn org_role(tx: &Tx, org_id: Uuid, user_id: Uuid) -> DbResult<Option<String>> {
    #[derive(FromQueryResult)]
    struct R {
        role: String,
    }
    Ok(tx
        .one::<R>(
            "SELECT role FROM organization_memberships WHERE organization_id = $1 AND user_id = $2 AND status = 'active'",
            vec![org_id.into(), user_id.into()],
        )
        .await?
        .map(|r| r.role))
}

/// Add or change a membership (tests and administration).
pub async fn set_org_membership(tx: &Tx, org_id: Uuid, user_id: Uuid, role: &str, status: &str) -> DbResult<()> {
    tx.execute(
        "INSERT INTO organization_memberships (organization_id, user_id, role, status) VALUES ($1, $2, $3, $4)
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role, status = EXCLUDED.status",
        vec![org_id.into(), user_id.into(), role.into(), status.into()],
    )
    .await?;
    Ok(())
}

pub async fn set_workspace_membership(tx: &Tx, org_id: Uuid, ws_id: Uuid, user_id: Uuid, role: &str) -> DbResult<()> {
    tx.execute(
        "INSERT INTO workspace_memberships (organization_id, workspace_id, user_id, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        vec![org_id.into(), ws_id.into(), user_id.into(), role.into()],
    )
    .await?;
    Ok(())
}

/// The default project of a workspace.
pub async fn default_project(tx: &Tx, org_id: Uuid, ws_id: Uuid) -> DbResult<Option<Uuid>> {
    #[derive(FromQueryResult)]
    struct Id {
        id: Uuid,
    }
    Ok(tx
        .one::<Id>(
            "SELECT id FROM projects WHERE organization_id = $1 AND workspace_id = $2 AND is_default",
            vec![org_id.into(), ws_id.into()],
        )
        .await?
        .map(|r| r.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_sanitized_like_the_contract() {
        assert_eq!(sanitize_slug("  Hello, World!! "), "hello-world");
        assert_eq!(sanitize_slug("Ünïcode ☃ app"), "n-code-app");
        assert_eq!(sanitize_slug("---"), "");
        assert_eq!(sanitize_slug(&"a".repeat(80)).len(), 60);
        let s = unique_slug("Alice Smith");
        assert!(s.starts_with("alice-smith-"), "{s}");
        assert_ne!(unique_slug("x"), unique_slug("x"));
    }

    #[test]
    fn effective_roles_follow_the_contract() {
        let row = |kind: &str, ws: Option<&str>, org: &str| WorkspaceAccessRow {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            slug: "s".into(),
            r#type: kind.into(),
            created_by_user_id: None,
            ws_role: ws.map(str::to_owned),
            org_role: org.into(),
        };
        assert_eq!(row("team", None, "admin").effective_role(), "admin");
        assert_eq!(row("team", Some("viewer"), "owner").effective_role(), "owner");
        assert_eq!(row("team", Some("member"), "viewer").effective_role(), "member");
        assert_eq!(row("personal", Some("owner"), "viewer").effective_role(), "owner");
    }
}
