//! Settings of the Kubernetes driver.

use std::{collections::BTreeMap, time::Duration};

/// Where a sandbox may open connections to (egress) or accept them from
/// (ingress), as a NetworkPolicy peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An IP range in CIDR notation. Only for endpoints outside the cluster:
    /// policies are enforced on pod IPs after a Service's DNAT, so a Service
    /// ClusterIP in a CIDR does not match (use [`Peer::Pods`] for those).
    Cidr(String),
    /// Pods with all of `pods` labels, in namespaces with all of `namespaces`
    /// labels (`None`: the sandbox namespace only; an empty map: every
    /// namespace).
    Pods { namespaces: Option<BTreeMap<String, String>>, pods: BTreeMap<String, String> },
}

impl Peer {
    /// The cluster DNS (CoreDNS keeps the `k8s-app=kube-dns` label).
    pub fn kube_dns() -> Peer {
        Peer::Pods {
            namespaces: Some(BTreeMap::from([("kubernetes.io/metadata.name".into(), "kube-system".into())])),
            pods: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
        }
    }
}

/// A TCP port on a [`Peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressTarget {
    pub peer: Peer,
    pub port: u16,
}

/// Configuration of [`KubeDriver`](super::KubeDriver). Build it with
/// [`KubeConfig::new`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// Namespace of the Jobs, NetworkPolicies and Services. Keep it for
    /// sandboxes only: the driver installs a deny-all baseline policy for
    /// every pod with a `blaze.dev/run` label in it.
    pub namespace: String,
    /// Image of the `run` container. It must have `/bin/sh`, `tar` and
    /// `gzip`, and `curl` or `node` when outputs are collected; the command
    /// runs as uid/gid 1000 (the `node` user of the official Node images).
    pub image: String,
    /// Image of the `fetch-source` init container: `sh`, `curl` and `tar`
    /// with gzip support.
    pub fetcher_image: String,
    /// `runtimeClassName` of the pods (e.g. `gvisor`), if any.
    pub runtime_class: Option<String>,
    /// Seconds a finished Job (with its pod and logs) is kept.
    pub ttl_seconds_after_finished: i32,
    /// The object store serving the presigned source and output URLs. Every
    /// run may reach it: the init container downloads the source and the
    /// `run` container uploads the outputs, and a NetworkPolicy can not tell
    /// containers of one pod apart. That grants the untrusted command no
    /// more than the presigned URLs in its pod already do, provided the
    /// store accepts no anonymous writes; keep the peer as narrow as the
    /// store itself (its pods, or its address outside the cluster).
    pub object_storage: EgressTarget,
    /// The package-registry proxy reachable by `Network::Registry` runs
    /// (with cluster DNS); `None` rejects such runs.
    pub registry_proxy: Option<EgressTarget>,
    /// The cluster DNS, reachable (UDP and TCP 53) by `Network::Registry`
    /// runs only: DNS is an exfiltration channel, so offline runs get none
    /// and the driver pins the object store's address in `/etc/hosts`.
    pub dns: Peer,
    /// Who may connect to a run's `serve_port` (the edge / execution pods);
    /// `None` rejects runs with a `serve_port`.
    pub serve_from: Option<Peer>,
    /// Added to a run's deadline before the driver gives up on Kubernetes
    /// enforcing it (`activeDeadlineSeconds`) and deletes the Job itself.
    pub deadline_grace: Duration,
    /// How often the run's pod is polled until its `run` container starts.
    pub pod_poll_interval: Duration,
    /// How long the logs may take to drain after the Job finished.
    pub log_drain_timeout: Duration,
}

impl KubeConfig {
    /// Defaults: `node:20-bookworm-slim`, `curlimages/curl:8.10.1`, no
    /// runtime class, TTL 300 s, no registry proxy, kube-dns, no serving.
    pub fn new(namespace: impl Into<String>, object_storage: EgressTarget) -> KubeConfig {
        KubeConfig {
            namespace: namespace.into(),
            image: "node:20-bookworm-slim".into(),
            fetcher_image: "curlimages/curl:8.10.1".into(),
            runtime_class: None,
            ttl_seconds_after_finished: 300,
            object_storage,
            registry_proxy: None,
            dns: Peer::kube_dns(),
            serve_from: None,
            deadline_grace: Duration::from_secs(60),
            pod_poll_interval: Duration::from_secs(1),
            log_drain_timeout: Duration::from_secs(10),
        }
    }
}
