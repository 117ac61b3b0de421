-- Audit trail, usage ledger, quotas and API tokens.
--
-- audit_events and usage_events are append-only: a trigger rejects UPDATE and
-- DELETE for everyone (the owner included), and the application role only
-- has INSERT and SELECT on them.

CREATE OR REPLACE FUNCTION blaze_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$;

CREATE TABLE audit_events (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  workspace_id     uuid,
  actor_user_id    uuid,
  action           text NOT NULL,
  resource_type    text NOT NULL,
  resource_id      text,
  request_id       text,
  outcome          text NOT NULL DEFAULT 'success' CHECK (outcome IN ('success', 'denied', 'failed')),
  metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_org ON audit_events (organization_id, id DESC);
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION blaze_append_only();

CREATE TABLE usage_events (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  workspace_id     uuid,
  user_id          uuid,
  metric           text NOT NULL CHECK (metric IN ('requests', 'tokens', 'concurrent_preview_jobs')),
  value            bigint NOT NULL,
  model            text,
  input_tokens     bigint NOT NULL DEFAULT 0,
  output_tokens    bigint NOT NULL DEFAULT 0,
  cost             double precision NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_org_day ON usage_events (organization_id, metric, created_at);
CREATE TRIGGER usage_events_append_only BEFORE UPDATE OR DELETE ON usage_events
  FOR EACH ROW EXECUTE FUNCTION blaze_append_only();

-- Limits: organisation and workspace limits are hard, user limits soft.
CREATE TABLE quotas (
  organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  subject_type     text NOT NULL CHECK (subject_type IN ('organization', 'workspace', 'user')),
  subject_id       uuid NOT NULL,
  metric           text NOT NULL CHECK (metric IN ('requests', 'tokens', 'concurrent_preview_jobs')),
  limit_value      bigint NOT NULL CHECK (limit_value >= 0),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, subject_type, subject_id, metric)
);

CREATE TABLE api_tokens (
  id                  uuid PRIMARY KEY,
  organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role                text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
  description         text NOT NULL DEFAULT '',
  created_by_user_id  uuid,
  revocation_ids      text[] NOT NULL DEFAULT '{}',
  created_at          timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz NOT NULL,
  revoked_at          timestamptz
);
CREATE INDEX api_tokens_org ON api_tokens (organization_id, created_at DESC);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_events_tenant ON audit_events FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_events_tenant ON usage_events FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE quotas ENABLE ROW LEVEL SECURITY;
CREATE POLICY quotas_tenant ON quotas FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_tokens_tenant ON api_tokens FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

GRANT SELECT, INSERT ON audit_events, usage_events TO blaze_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON quotas, api_tokens TO blaze_app;
