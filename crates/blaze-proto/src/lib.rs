//! Every Blaze `.proto` in one place: generated tonic/prost code, the lossless
//! descriptor set, and [`catalog`], a typed view of the RPC options that the
//! edge, the authorization layer and the OpenAPI generator share.
//!
//! Hand-written logic lives elsewhere; this crate only describes the API.

pub mod catalog;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod blaze {
    pub mod options {
        pub mod v1 {
            tonic::include_proto!("blaze.options.v1");
        }
    }
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("blaze.identity.v1");
        }
    }
    pub mod controlplane {
        pub mod v1 {
            tonic::include_proto!("blaze.controlplane.v1");
        }
    }
    pub mod orchestrator {
        pub mod v1 {
            tonic::include_proto!("blaze.orchestrator.v1");
        }
    }
    pub mod execution {
        pub mod v1 {
            tonic::include_proto!("blaze.execution.v1");
        }
    }
    pub mod artifacts {
        pub mod v1 {
            tonic::include_proto!("blaze.artifacts.v1");
        }
    }
}

pub use blaze::{
    artifacts::v1 as artifacts, controlplane::v1 as controlplane, execution::v1 as execution, identity::v1 as identity,
    options::v1 as options, orchestrator::v1 as orchestrator,
};

/// The lossless encoded `FileDescriptorSet` of every Blaze proto and its
/// imports, with source info and extension options intact.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blaze_descriptor.bin"));

/// The proto packages served by each role, for routing gRPC by service name.
pub const SERVICE_PACKAGES: &[(&str, &str)] = &[
    ("identity", "blaze.identity.v1"),
    ("control-plane", "blaze.controlplane.v1"),
    ("orchestrator", "blaze.orchestrator.v1"),
    ("execution", "blaze.execution.v1"),
    ("artifacts", "blaze.artifacts.v1"),
];

/// The role that serves a fully qualified service name (`blaze.x.v1.FooService`).
pub fn role_for_service(service: &str) -> Option<&'static str> {
    SERVICE_PACKAGES.iter().find(|(_, pkg)| service.strip_prefix(pkg).is_some_and(|rest| rest.starts_with('.'))).map(|(role, _)| *role)
}
