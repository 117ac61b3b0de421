-- Tenancy: users, organisations, workspaces, memberships, projects.
--
-- Row-level security is the second wall behind the services' own scoping:
-- every tenant table carries organization_id and its policies compare it with
-- the `blaze.org_id` setting that blaze-db sets (SET LOCAL) at the start of
-- each tenant transaction. Services connect as `blaze_app`, which does not
-- own the tables and has no BYPASSRLS; migrations run as the owner.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'blaze_app') THEN
    CREATE ROLE blaze_app LOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- created concurrently by another migration run
END
$$;

CREATE OR REPLACE FUNCTION blaze_org() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT NULLIF(current_setting('blaze.org_id', true), '')::uuid $$;

CREATE OR REPLACE FUNCTION blaze_user() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT NULLIF(current_setting('blaze.user_id', true), '')::uuid $$;

CREATE OR REPLACE FUNCTION blaze_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;

CREATE TABLE users (
  id            uuid PRIMARY KEY,
  external_sub  text NOT NULL UNIQUE,
  email         text,
  display_name  text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
  id                  uuid PRIMARY KEY,
  slug                text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,79}$'),
  name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  created_by_user_id  uuid REFERENCES users (id),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_memberships (
  organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role             text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
  status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'invited', 'suspended')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_memberships_user ON organization_memberships (user_id, created_at);

CREATE TABLE workspaces (
  id                  uuid PRIMARY KEY,
  organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  slug                text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,79}$'),
  name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  type                text NOT NULL CHECK (type IN ('personal', 'team')),
  created_by_user_id  uuid REFERENCES users (id),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, id),
  UNIQUE (organization_id, slug)
);

CREATE TABLE workspace_memberships (
  organization_id  uuid NOT NULL,
  workspace_id     uuid NOT NULL,
  user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role             text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, user_id),
  FOREIGN KEY (organization_id, workspace_id) REFERENCES workspaces (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX workspace_memberships_user ON workspace_memberships (user_id, created_at);

CREATE TABLE projects (
  id               uuid PRIMARY KEY,
  organization_id  uuid NOT NULL,
  workspace_id     uuid NOT NULL,
  name             text NOT NULL,
  is_default       boolean NOT NULL DEFAULT false,
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, id),
  FOREIGN KEY (organization_id, workspace_id) REFERENCES workspaces (organization_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX projects_one_default ON projects (workspace_id) WHERE is_default;

CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION blaze_touch_updated_at();
CREATE TRIGGER organizations_touch BEFORE UPDATE ON organizations FOR EACH ROW EXECUTE FUNCTION blaze_touch_updated_at();
CREATE TRIGGER workspaces_touch BEFORE UPDATE ON workspaces FOR EACH ROW EXECUTE FUNCTION blaze_touch_updated_at();

-- Policies. Reads of memberships, organisations and workspaces are also
-- allowed for the acting user's own memberships (`blaze.user_id`), which is
-- how a principal is resolved across organisations; writes always need the
-- organisation of the transaction.
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY organizations_read ON organizations FOR SELECT USING (
  id = blaze_org()
  OR EXISTS (SELECT 1 FROM organization_memberships m WHERE m.organization_id = organizations.id AND m.user_id = blaze_user())
);
CREATE POLICY organizations_write ON organizations FOR INSERT WITH CHECK (id = blaze_org());
CREATE POLICY organizations_update ON organizations FOR UPDATE USING (id = blaze_org()) WITH CHECK (id = blaze_org());
CREATE POLICY organizations_delete ON organizations FOR DELETE USING (id = blaze_org());

ALTER TABLE organization_memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY org_memberships_read ON organization_memberships FOR SELECT USING (organization_id = blaze_org() OR user_id = blaze_user());
CREATE POLICY org_memberships_write ON organization_memberships FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspaces_read ON workspaces FOR SELECT USING (
  organization_id = blaze_org()
  OR organization_id IN (SELECT m.organization_id FROM organization_memberships m WHERE m.user_id = blaze_user() AND m.status = 'active')
);
CREATE POLICY workspaces_write ON workspaces FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

ALTER TABLE workspace_memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY ws_memberships_read ON workspace_memberships FOR SELECT USING (organization_id = blaze_org() OR user_id = blaze_user());
CREATE POLICY ws_memberships_write ON workspace_memberships FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY projects_tenant ON projects FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

GRANT USAGE ON SCHEMA public TO blaze_app;
GRANT SELECT, INSERT, UPDATE ON users TO blaze_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, organization_memberships, workspaces, workspace_memberships, projects TO blaze_app;
