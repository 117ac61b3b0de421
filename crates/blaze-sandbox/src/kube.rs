//! Kubernetes driver: one `batch/v1` Job per run.
//!
//! Owns the Kubernetes objects of runs in its namespace. It needs exactly
//! the namespaced rights listed in [`API_PERMISSIONS`], nothing
//! cluster-wide.
//!
//! A run, in API calls:
//! 1. once per driver: create the namespace's deny-all baseline
//!    NetworkPolicy for sandbox pods (`AlreadyExists` is fine);
//! 2. create the Job `blaze-<id>`, **suspended**;
//! 3. create the NetworkPolicy `blaze-<id>` (and, with a `serve_port`, the
//!    Service `blaze-<id>`), both owned by the Job so the garbage collector
//!    removes them with it even if this process dies;
//! 4. resume the Job: its pod can only start once its policy exists;
//! 5. watch the Job to `Complete` or `Failed`, stream the pod's log;
//! 6. delete the NetworkPolicy and Service. The Job (with its pod and log)
//!    stays until its TTL; a cancelled run's Job is deleted in the
//!    foreground.
//!
//! The pod: the init container `fetch-source` downloads and unpacks the
//! source into the emptyDir `/work`; the container `run` runs the command
//! there (wrapped in `sh` to pack and upload outputs when collecting).
//! Both run as uid 1000 with a read-only root, no capabilities, no
//! privilege escalation, seccomp `RuntimeDefault`, no service-account token,
//! requests = limits for CPU, memory and ephemeral storage. `Limits::pids`
//! is not per pod in Kubernetes: the kubelet's `podPidsLimit` applies.
//!
//! If the future of [`KubeDriver::start`] is dropped midway, a suspended Job
//! may be left behind; it never runs, and owns whatever else was created.

mod config;
mod logs;
mod manifest;
mod outcome;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{HostAlias, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio::sync::{OnceCell, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use self::config::{EgressTarget, KubeConfig, Peer};
use self::{
    logs::system,
    manifest::{Checked, object_name},
    outcome::JobEnd,
};
use crate::{Endpoint, Exit, LogLine, Network, RunSpec, Sandbox, SandboxDriver, SandboxError};

/// Every Kubernetes API request the driver makes, as RBAC names it:
/// `(apiGroup, resource, verbs)`, all in [`KubeConfig::namespace`].
///
/// The single source of the driver's rights: the platform's Role
/// (`k8s/base/sandboxes.yaml`) must grant exactly this (the k8s manifest
/// tests compare them), and the mocked API server of this module's tests
/// refuses any request outside it, as a real one bound to that Role would.
/// No `list` on jobs (one Job is read and watched by name), no `update`,
/// no `pods/exec`, nothing on secrets.
pub const API_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    // create suspended, get + watch to the end, patch to resume, delete on
    // cancel (foreground: the garbage collector removes the pod).
    ("batch", "jobs", &["create", "delete", "get", "patch", "watch"]),
    // The baseline and a run's own policy; removed when the run ends.
    ("networking.k8s.io", "networkpolicies", &["create", "delete"]),
    // A served run's dev server.
    ("", "services", &["create", "delete"]),
    // The run's pod by its `blaze.dev/run` label (its name is the Job
    // controller's), polled until `run` starts.
    ("", "pods", &["list"]),
    ("", "pods/log", &["get"]),
];

/// The namespace-wide deny-all NetworkPolicy the driver creates when it is
/// missing; the cluster manifests ship the same object.
pub fn baseline_network_policy() -> NetworkPolicy {
    manifest::baseline_policy()
}

/// Log lines buffered between the pod's log and the reader.
const LOG_BUFFER: usize = 2048;
/// How long the final system line may wait for a full log channel.
const FINAL_LINE_WAIT: Duration = Duration::from_secs(1);

/// Runs sandboxes as Kubernetes Jobs; see the [module docs](self).
pub struct KubeDriver {
    client: Client,
    config: Arc<KubeConfig>,
    baseline: OnceCell<()>,
}

impl KubeDriver {
    /// A driver using `client` (its default namespace is not used: every
    /// object goes to `config.namespace`).
    pub fn new(client: Client, config: KubeConfig) -> KubeDriver {
        KubeDriver { client, config: Arc::new(config), baseline: OnceCell::new() }
    }

    /// A driver with the ambient Kubernetes configuration: the in-cluster
    /// service account, or `KUBECONFIG` / `~/.kube/config`.
    pub async fn from_env(config: KubeConfig) -> Result<KubeDriver, SandboxError> {
        let client = Client::try_default().await.map_err(|e| unavailable("connecting to Kubernetes", e))?;
        Ok(KubeDriver::new(client, config))
    }

    pub fn config(&self) -> &KubeConfig {
        &self.config
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    async fn ensure_baseline(&self) -> Result<(), SandboxError> {
        let policies: Api<NetworkPolicy> = self.api();
        self.baseline
            .get_or_try_init(|| async move {
                match policies.create(&PostParams::default(), &manifest::baseline_policy()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
                    Err(e) => Err(unavailable("creating the baseline network policy", e)),
                }
            })
            .await
            .copied()
    }

    /// Create the run's policy (and Service), then let its pod start.
    async fn fence_and_release(&self, objects: &RunObjects, spec: &RunSpec, checked: &Checked, job: &Job) -> Result<(), SandboxError> {
        let owner = manifest::owned_by(job);
        let policy = manifest::network_policy(spec, checked, &self.config, owner.as_ref());
        objects.policies.create(&PostParams::default(), &policy).await.map_err(|e| unavailable("creating the network policy", e))?;
        if let Some(port) = spec.serve_port {
            let service = manifest::service(spec, checked, port, owner.as_ref());
            objects.services.create(&PostParams::default(), &service).await.map_err(|e| unavailable("creating the service", e))?;
        }
        let resume = Patch::Merge(serde_json::json!({ "spec": { "suspend": false } }));
        objects.jobs.patch(&objects.name, &PatchParams::default(), &resume).await.map_err(|e| unavailable("starting the job", e))?;
        Ok(())
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable(format!("{what}: {e}"))
}

/// Resolve the object store's host names for a run without DNS, to pin
/// them in its `/etc/hosts` (the driver's resolver is the cluster's).
async fn pin_hosts(hosts: &BTreeSet<(String, u16)>) -> Result<Vec<HostAlias>, SandboxError> {
    let mut resolved = BTreeMap::new();
    for (host, port) in hosts {
        let addresses = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| unavailable(&format!("resolving {host} for a run without DNS"), e))?;
        resolved.entry(host.clone()).or_insert_with(BTreeSet::new).extend(addresses.map(|a| a.ip()));
    }
    Ok(manifest::host_aliases(&resolved))
}

/// The objects of one run, by kind.
#[derive(Clone)]
struct RunObjects {
    name: String,
    /// Whether the run has a Service.
    served: bool,
    jobs: Api<Job>,
    policies: Api<NetworkPolicy>,
    services: Api<Service>,
}

impl RunObjects {
    /// Delete the run's objects; `job` too when the run must stop now. The
    /// Job goes first, in the foreground: it disappears only after its pod.
    /// Removing the policy before the pod is gone is safe: the baseline
    /// still isolates it. Failures are logged only: the Job owns the rest,
    /// so its TTL (or garbage collection) finishes the job.
    async fn remove(&self, job: bool) {
        if job {
            delete(&self.jobs, &self.name, &DeleteParams::foreground()).await;
        }
        if self.served {
            delete(&self.services, &self.name, &DeleteParams::default()).await;
        }
        delete(&self.policies, &self.name, &DeleteParams::default()).await;
    }
}

async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => tracing::warn!(object = name, kind = %K::kind(&()), error = %e, "deleting a sandbox object failed"),
    }
}

#[async_trait::async_trait]
impl SandboxDriver for KubeDriver {
    fn name(&self) -> &'static str {
        "kube"
    }

    async fn start(&self, spec: RunSpec) -> Result<Sandbox, SandboxError> {
        let checked = manifest::validate(&spec, &self.config)?;
        let host_aliases = match spec.network {
            Network::None => pin_hosts(&checked.storage_hosts).await?,
            Network::Registry(_) => Vec::new(),
        };
        self.ensure_baseline().await?;

        let objects = RunObjects {
            name: object_name(&spec.id),
            served: spec.serve_port.is_some(),
            jobs: self.api(),
            policies: self.api(),
            services: self.api(),
        };
        let job = manifest::job(&spec, &checked, &self.config, host_aliases);
        let job = match objects.jobs.create(&PostParams::default(), &job).await {
            Ok(job) => job,
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Err(SandboxError::Spec(format!("a run named {} exists already", objects.name)));
            }
            Err(e) => return Err(unavailable("creating the job", e)),
        };
        if let Err(e) = self.fence_and_release(&objects, &spec, &checked, &job).await {
            objects.remove(true).await;
            return Err(e);
        }
        tracing::info!(run = %spec.id, kind = %spec.kind, job = %objects.name, namespace = %self.config.namespace, "sandbox job started");

        let endpoint = spec.serve_port.map(|port| Endpoint::Tcp(format!("{}.{}.svc:{port}", objects.name, self.config.namespace)));
        let (log_tx, log_rx) = mpsc::channel(LOG_BUFFER);
        let (exit_tx, exit_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let run =
            Supervisor { run_id: spec.id.clone(), objects, pods: self.api(), deadline: spec.limits.deadline, config: self.config.clone() };
        tokio::spawn(run.supervise(log_tx, exit_tx, cancel.clone()));
        Ok(Sandbox::new(spec.id, endpoint, log_rx, exit_rx, cancel))
    }
}

/// The task that sees one run to its end.
struct Supervisor {
    run_id: String,
    objects: RunObjects,
    pods: Api<Pod>,
    deadline: Duration,
    config: Arc<KubeConfig>,
}

enum End {
    Job(JobEnd),
    Cancelled,
    /// Kubernetes did not end the Job at its deadline (plus grace).
    Overdue,
}

impl Supervisor {
    async fn supervise(self, out: mpsc::Sender<LogLine>, exit_tx: watch::Sender<Option<Exit>>, cancel: CancellationToken) {
        let job_done = CancellationToken::new();
        let mut logs = tokio::spawn(logs::follow(
            self.pods.clone(),
            self.run_id.clone(),
            self.config.pod_poll_interval,
            out.clone(),
            job_done.clone(),
        ));
        let end = tokio::select! {
            end = outcome::watch_job(&self.objects.jobs, &self.objects.name) => End::Job(end),
            () = cancel.cancelled() => End::Cancelled,
            () = tokio::time::sleep(self.deadline + self.config.deadline_grace) => End::Overdue,
        };
        job_done.cancel();

        let exit = match &end {
            End::Job(JobEnd::Complete) => Exit::Succeeded,
            End::Job(JobEnd::Failed { reason, message }) => {
                let pod = outcome::run_pod(&self.pods, &self.run_id).await.ok().flatten();
                outcome::failure_exit(reason, message, pod.as_ref())
            }
            End::Job(JobEnd::Gone) => Exit::Failed { code: None, message: "the job was deleted before it finished".into() },
            End::Cancelled => Exit::Cancelled,
            End::Overdue => Exit::DeadlineExceeded,
        };
        match end {
            End::Cancelled | End::Overdue => {
                if matches!(end, End::Overdue) {
                    tracing::warn!(run = %self.run_id, "the job outlived its deadline; deleting it");
                }
                logs.abort();
                self.objects.remove(true).await;
            }
            End::Job(_) => {
                // The log of a finished container ends by itself; give the
                // reader the rest of it before reporting the end.
                if tokio::time::timeout(self.config.log_drain_timeout, &mut logs).await.is_err() {
                    logs.abort();
                }
                self.objects.remove(false).await;
            }
        }
        if !exit.is_success() {
            let _ = out.send_timeout(system(exit.describe()), FINAL_LINE_WAIT).await;
        }
        tracing::info!(run = %self.run_id, exit = %exit.describe(), "sandbox job ended");
        let _ = exit_tx.send(Some(exit));
    }
}
