//! Asynchronous cleanup after deletes: the rows are gone at once (the user
//! sees the delete), the repository, its objects and any running preview
//! follow in the background. A failure is logged and counted; the
//! repository of a deleted app is unreachable either way.

use blaze_proto::{
    artifacts as art,
    execution::{self as ex, preview_service_client::PreviewServiceClient},
};
use uuid::Uuid;

use crate::{Deps, apps::repo_ref, apps::repos};

pub fn app_removed(deps: &Deps, org: Uuid, app: i64) {
    let deps = deps.clone();
    blaze_kit::spawn_task("app-cleanup", async move {
        let mut previews = PreviewServiceClient::new(deps.clients.intercepted("execution"));
        if let Err(e) = previews.stop_app(ex::StopAppRequest { org_id: org.to_string(), workspace_id: String::new(), app_id: app }).await
            && !matches!(e.code(), tonic::Code::NotFound | tonic::Code::Unimplemented)
        {
            tracing::warn!(app, error = %e, "could not stop the preview of a deleted app");
        }
        repos(&deps).delete_repo(art::DeleteRepoRequest { repo: repo_ref(org, app), delete_objects: true }).await?;
        Ok(())
    });
}
