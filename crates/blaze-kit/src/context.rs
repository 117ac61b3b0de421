//! The verified context of one RPC, inserted by the authorization layer and
//! read by handlers: who calls, for which tenant, under which request id.

use blaze_auth::{Caller, TenantAccess};
use blaze_proto::options::Role;

use crate::error::{ApiError, ApiResult};

tokio::task_local! {
    /// The request id of the RPC being served (read by outgoing clients).
    pub static REQUEST_ID: String;
}

/// The current request id, if running inside a served RPC.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub caller: Option<Caller>,
    pub tenant: Option<TenantAccess>,
}

impl RequestContext {
    /// The context of a tonic request (present for every RPC that passed the
    /// authorization layer).
    pub fn of<T>(req: &tonic::Request<T>) -> ApiResult<RequestContext> {
        req.extensions().get::<RequestContext>().cloned().ok_or_else(|| ApiError::unauthenticated("Missing request context"))
    }

    pub fn user_id(&self) -> ApiResult<&str> {
        match &self.caller {
            Some(Caller::User { principal, .. }) => Ok(&principal.user_id),
            _ => Err(ApiError::unauthenticated("This operation needs a user")),
        }
    }

    pub fn principal(&self) -> ApiResult<&blaze_auth::Principal> {
        match &self.caller {
            Some(Caller::User { principal, .. }) => Ok(principal),
            _ => Err(ApiError::unauthenticated("This operation needs a user")),
        }
    }

    pub fn is_service(&self) -> bool {
        matches!(self.caller, Some(Caller::Service { .. }))
    }

    pub fn tenant(&self) -> ApiResult<&TenantAccess> {
        self.tenant.as_ref().ok_or_else(|| ApiError::bad_request("TENANT_SCOPE_REQUIRED", "Tenant scope is required for this operation"))
    }

    /// Resolved organisation id (never `me` or a slug).
    pub fn org_id(&self) -> ApiResult<&str> {
        Ok(&self.tenant()?.org_id)
    }

    /// Resolved workspace id (never `me`, `personal` or a slug).
    pub fn workspace_id(&self) -> ApiResult<&str> {
        self.tenant()?.workspace_id.as_deref().ok_or_else(|| ApiError::bad_request("TENANT_SCOPE_REQUIRED", "Workspace scope is required"))
    }

    pub fn org_role(&self) -> Role {
        self.tenant.as_ref().map(|t| t.org_role).unwrap_or(Role::Unspecified)
    }

    pub fn workspace_role(&self) -> Role {
        self.tenant.as_ref().and_then(|t| t.workspace_role).unwrap_or(Role::Unspecified)
    }
}
