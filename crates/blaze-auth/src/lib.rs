//! Tokens and access decisions.
//!
//! * [`keys`]: the Ed25519 key set that signs every biscuit, rotated by key id.
//! * [`tokens`]: internal tokens (what the edge sends inside the mesh),
//!   service tokens (service to service) and API tokens (for tools and CI).
//! * [`principal`]: who the caller is and what they can enter, and the
//!   per-RPC access decision used by the authorization layer.
//! * [`oidc`]: verification of OIDC ID tokens against the provider's JWKS.
//!
//! Nothing here does I/O except fetching JWKS documents.

pub mod keys;
pub mod oidc;
pub mod principal;
pub mod tokens;

pub use keys::KeySet;
pub use principal::{AccessError, OrgAccess, Principal, TenantAccess, WorkspaceAccess};
pub use tokens::{ApiTokenClaims, Caller, TokenError};
