-- Execution: jobs (a state machine with an optimistic version), running
-- previews and deployments.

CREATE TABLE jobs (
  id                    uuid PRIMARY KEY,
  organization_id       uuid NOT NULL,
  workspace_id          uuid NOT NULL,
  app_id                bigint NOT NULL,
  kind                  text NOT NULL CHECK (kind IN ('preview', 'build', 'deploy', 'install')),
  state                 text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  version               integer NOT NULL DEFAULT 0,
  attempts              integer NOT NULL DEFAULT 0,
  error                 text,
  commit_hash           text,
  payload               jsonb NOT NULL DEFAULT '{}'::jsonb,
  result                jsonb NOT NULL DEFAULT '{}'::jsonb,
  requested_by_user_id  uuid,
  created_at            timestamptz NOT NULL DEFAULT now(),
  started_at            timestamptz,
  finished_at           timestamptz,
  updated_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, id),
  FOREIGN KEY (organization_id, app_id) REFERENCES apps (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX jobs_workspace ON jobs (organization_id, workspace_id, created_at DESC);
CREATE INDEX jobs_app ON jobs (organization_id, app_id, created_at DESC);

CREATE TABLE previews (
  organization_id  uuid NOT NULL,
  app_id           bigint NOT NULL,
  workspace_id     uuid NOT NULL,
  preview_id       text NOT NULL UNIQUE,
  job_id           uuid,
  state            text NOT NULL CHECK (state IN ('starting', 'running', 'stopped', 'failed')),
  upstream         text,
  commit_hash      text,
  last_access_at   timestamptz NOT NULL DEFAULT now(),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, app_id),
  FOREIGN KEY (organization_id, app_id) REFERENCES apps (organization_id, id) ON DELETE CASCADE
);

CREATE TABLE deployments (
  id               uuid PRIMARY KEY,
  organization_id  uuid NOT NULL,
  workspace_id     uuid NOT NULL,
  app_id           bigint NOT NULL,
  commit_hash      text NOT NULL,
  state            text NOT NULL CHECK (state IN ('building', 'ready', 'failed')),
  job_id           uuid,
  prefix           text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, id),
  FOREIGN KEY (organization_id, app_id) REFERENCES apps (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX deployments_app ON deployments (organization_id, app_id, created_at DESC);

-- The live deployment of an app, served at <host_label>.apps.<domain>.
CREATE TABLE deployment_aliases (
  organization_id  uuid NOT NULL,
  app_id           bigint NOT NULL,
  host_label       text NOT NULL UNIQUE,
  deployment_id    uuid NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, app_id),
  FOREIGN KEY (organization_id, deployment_id) REFERENCES deployments (organization_id, id) ON DELETE CASCADE
);

CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION blaze_touch_updated_at();
CREATE TRIGGER previews_touch BEFORE UPDATE ON previews FOR EACH ROW EXECUTE FUNCTION blaze_touch_updated_at();

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_tenant ON jobs FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE previews ENABLE ROW LEVEL SECURITY;
CREATE POLICY previews_tenant ON previews FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE deployments ENABLE ROW LEVEL SECURITY;
CREATE POLICY deployments_tenant ON deployments FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());
ALTER TABLE deployment_aliases ENABLE ROW LEVEL SECURITY;
CREATE POLICY deployment_aliases_tenant ON deployment_aliases FOR ALL USING (organization_id = blaze_org()) WITH CHECK (organization_id = blaze_org());

GRANT SELECT, INSERT, UPDATE, DELETE ON jobs, previews, deployments, deployment_aliases TO blaze_app;
