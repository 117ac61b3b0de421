//! Asynchronous cleanup after deletes: the rows are gone at once (the user
//! sees the delete), the repository, its objects and any running preview
//! follow in the background. A failure is logged and counted; the
//! repository of a deleted app is unreachable either way.

use blaze_proto::artifacts as art;
use uuid::Uuid;

use crate::{Deps, apps::repo_ref, apps::repos};

/// The app's preview, if one runs, is stopped by execution's reaper once
/// it sees the preview's row gone with the app.
pub fn app_removed(deps: &Deps, org: Uuid, app: i64) {
    let deps = deps.clone();
    blaze_kit::spawn_task("app-cleanup", async move {
        repos(&deps).delete_repo(art::DeleteRepoRequest { repo: repo_ref(org, app), delete_objects: true }).await?;
        Ok(())
    });
}
