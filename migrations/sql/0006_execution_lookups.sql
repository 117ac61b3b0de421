-- Lookups that must work before the organisation is known: the edge resolves
-- a preview or app host, the reaper finds idle previews everywhere. Each
-- function returns only the keys needed to open a tenant transaction; rows
-- themselves are still read under row-level security.

CREATE INDEX previews_idle ON previews (state, last_access_at);

CREATE FUNCTION blaze_preview_org(p_preview_id text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
  $$ SELECT organization_id FROM previews WHERE preview_id = p_preview_id $$;

CREATE FUNCTION blaze_alias_org(p_host_label text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
  $$ SELECT organization_id FROM deployment_aliases WHERE host_label = p_host_label $$;

CREATE FUNCTION blaze_idle_previews(p_idle_seconds integer)
  RETURNS TABLE (organization_id uuid, app_id bigint, preview_id text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
  $$ SELECT organization_id, app_id, preview_id FROM previews
     WHERE state IN ('starting', 'running') AND last_access_at < now() - make_interval(secs => p_idle_seconds) $$;

REVOKE ALL ON FUNCTION blaze_preview_org(text), blaze_alias_org(text), blaze_idle_previews(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION blaze_preview_org(text), blaze_alias_org(text), blaze_idle_previews(integer) TO blaze_app;
