//! The Kubernetes objects of one run, built from its spec. Pure: no I/O, so
//! every security-relevant field is checked by plain unit tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Component, Path},
};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostAlias, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
        networking::v1::{
            IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use reqwest::Url;

use super::config::{EgressTarget, KubeConfig, Peer};
use crate::{Network, RunSpec, SandboxError, Source, valid_id};

pub(super) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub(super) const MANAGED_BY: &str = "blaze";
/// Selects a run's pod (NetworkPolicy, Service, log streaming).
pub(super) const RUN_LABEL: &str = "blaze.dev/run";
pub(super) const KIND_LABEL: &str = "blaze.dev/kind";
const LABEL_PREFIX: &str = "blaze.dev/";
/// Label names of ours that `RunSpec::labels` may not override: a run
/// claiming another run's `blaze.dev/run` would get that run's policy.
const RESERVED_LABELS: &[&str] = &["run", "kind"];

pub(super) const RUN_CONTAINER: &str = "run";
pub(super) const FETCH_CONTAINER: &str = "fetch-source";
/// The namespace-wide deny-all policy, see [`baseline_policy`].
pub(super) const BASELINE_POLICY: &str = "blaze-sandbox-baseline";

/// uid/gid of every sandbox process: the `node` user of the Node images,
/// never root.
const SANDBOX_UID: i64 = 1000;
/// Nothing in a sandbox deserves a graceful shutdown; a cancelled run should
/// release its node quickly.
const TERMINATION_GRACE_SECONDS: i64 = 5;
const WORK_DIR: &str = "/work";
const TMP_DIR: &str = "/tmp";
/// Variables the driver sets for the collect wrapper; a spec may not set them.
const RESERVED_ENV_PREFIX: &str = "BLAZE_COLLECT_";
const SOURCE_URL_ENV: &str = "BLAZE_SOURCE_URL";
const COLLECT_PATH_ENV: &str = "BLAZE_COLLECT_PATH";
const COLLECT_URL_ENV: &str = "BLAZE_COLLECT_URL";
/// Most addresses pinned per object-store host.
const MAX_PINNED_ADDRESSES: usize = 8;

/// The init container's script. The presigned URL comes from the
/// environment, never the command line (it would show in the pod spec's
/// args, `ps` and audit logs as part of the argv). The archive lands in
/// `/tmp` first so a failed download is an error and not a half-extracted
/// tree, then is unpacked into the working directory, `/work`. Extraction can not escape the two writable emptyDirs: the root
/// filesystem is read-only and the process is not root.
pub(super) const FETCH_SCRIPT: &str = r#"set -eu
archive="${TMPDIR:-/tmp}/blaze-source.tar.gz"
curl --fail --silent --show-error --proto '=http,https' --retry 3 --output "$archive" "$BLAZE_SOURCE_URL"
tar -xzf "$archive"
rm -f "$archive"
"#;

/// The `run` container's entry point when outputs are collected:
/// `/bin/sh -c COLLECT_SCRIPT blaze-run <command…>`. The command arrives as
/// the positional parameters and runs as `"$@"`; the output path and the
/// upload URL come from the environment. Nothing from the spec is ever
/// spliced into shell text, so no quoting can go wrong.
///
/// The archive holds the *contents* of `$BLAZE_COLLECT_PATH` (`./…`, like
/// the local driver's). The upload uses `curl` if the image has it, else
/// Node's built-in `fetch` (the slim Node images have no curl). Failures
/// print one `blaze: …` line, which the driver reports as the run's message.
pub(super) const COLLECT_SCRIPT: &str = r#""$@" || exit $?
archive="${TMPDIR:-/tmp}/blaze-collect.tar.gz"
if ! tar -czf "$archive" -C "$BLAZE_COLLECT_PATH" .; then
  echo "blaze: packing $BLAZE_COLLECT_PATH failed" >&2
  exit 1
fi
if command -v curl >/dev/null 2>&1; then
  curl --fail --silent --show-error --proto '=http,https' --retry 3 --upload-file "$archive" "$BLAZE_COLLECT_URL"
elif command -v node >/dev/null 2>&1; then
  node -e 'fetch(process.env.BLAZE_COLLECT_URL, { method: "PUT", body: require("fs").readFileSync(process.argv[1]) }).then((r) => { if (!r.ok) { console.error("HTTP " + r.status); process.exit(1); } }, (e) => { console.error(String(e)); process.exit(1); })' "$archive"
else
  echo "blaze: the image has neither curl nor node to upload the output" >&2
  exit 1
fi || { echo "blaze: uploading $BLAZE_COLLECT_PATH failed" >&2; exit 1; }
"#;
/// `$0` of the collect wrapper (shows in `ps` and shell error messages).
pub(super) const COLLECT_ARGV0: &str = "blaze-run";

/// What [`validate`] learnt from a spec.
#[derive(Debug)]
pub(super) struct Checked {
    pub source_url: String,
    /// Object labels (`app.kubernetes.io/managed-by`, `blaze.dev/*`).
    pub labels: BTreeMap<String, String>,
    /// Domain names of the object-store URLs with their ports; offline runs
    /// have no DNS, so these are resolved by the driver and pinned.
    pub storage_hosts: BTreeSet<(String, u16)>,
}

/// `blaze-<id>`: the name of the Job, NetworkPolicy and Service of a run.
pub(super) fn object_name(id: &str) -> String {
    format!("blaze-{id}")
}

/// Check a spec against what this driver (and its configuration) can run.
pub(super) fn validate(spec: &RunSpec, config: &KubeConfig) -> Result<Checked, SandboxError> {
    let bad = |m: String| Err(SandboxError::Spec(m));
    if !valid_id(&spec.id) {
        return bad(format!("invalid run id {:?} (lowercase letters, digits and '-', at most 40)", spec.id));
    }
    if spec.command.first().is_none_or(|c| c.is_empty()) {
        return bad("the command is empty".into());
    }
    let source_url = match &spec.source {
        Source::Tarball(url) => url.clone(),
        Source::Dir(dir) => {
            return bad(format!("the kube driver runs sources from a tarball URL, not a local directory ({})", dir.display()));
        }
    };
    let mut storage_hosts = BTreeSet::new();
    storage_hosts.extend(storage_host(&source_url, "source")?);
    if let Some(collect) = &spec.collect {
        if !is_relative_path(&collect.path) {
            return bad(format!("invalid output path {:?}", collect.path));
        }
        storage_hosts.extend(storage_host(&collect.put_url, "output")?);
    }
    for name in spec.env.keys() {
        if name.is_empty() || name.contains('=') || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return bad(format!("invalid environment variable name {name:?}"));
        }
        if name.starts_with(RESERVED_ENV_PREFIX) {
            return bad(format!("environment variable {name} is reserved for the driver"));
        }
    }
    let l = &spec.limits;
    if l.memory_mb == 0 || l.cpu_millis == 0 || l.disk_mb == 0 || l.deadline.as_secs() == 0 {
        return bad(format!("limits must be positive (memory, CPU, disk, and a deadline of at least one second): {l:?}"));
    }
    if matches!(spec.network, Network::Registry(_)) && config.registry_proxy.is_none() {
        return Err(SandboxError::Unavailable("this kube driver has no registry proxy configured".into()));
    }
    match spec.serve_port {
        Some(0) => return bad("serve_port 0".into()),
        Some(_) if config.serve_from.is_none() => {
            return Err(SandboxError::Unavailable("this kube driver has no peer allowed to reach served ports".into()));
        }
        _ => {}
    }
    Ok(Checked { source_url, labels: labels(spec)?, storage_hosts })
}

/// The domain (if it is not an IP literal) and port of an http(s) URL.
fn storage_host(url: &str, what: &str) -> Result<Option<(String, u16)>, SandboxError> {
    let parsed = Url::parse(url).map_err(|e| SandboxError::Spec(format!("invalid {what} URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SandboxError::Spec(format!("the {what} URL must be http(s)")));
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    match parsed.host_str() {
        None | Some("") => Err(SandboxError::Spec(format!("the {what} URL has no host"))),
        // IPv6 literals come bracketed.
        Some(h) if h.starts_with('[') || h.parse::<IpAddr>().is_ok() => Ok(None),
        Some(h) => Ok(Some((h.to_owned(), port))),
    }
}

/// A path inside the project: relative, no `..`.
fn is_relative_path(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && !p.is_absolute() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// A label value (≤ 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends): other characters become `-`, the rest is cut.
pub(super) fn label_value(raw: &str) -> String {
    let mapped: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let mut value: String = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(63).collect();
    while value.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        value.pop();
    }
    value
}

fn labels(spec: &RunSpec) -> Result<BTreeMap<String, String>, SandboxError> {
    let mut labels = BTreeMap::new();
    for (key, value) in &spec.labels {
        let name = label_value(key);
        if name.is_empty() || RESERVED_LABELS.contains(&name.as_str()) {
            return Err(SandboxError::Spec(format!("label {key:?} can not be used")));
        }
        if labels.insert(format!("{LABEL_PREFIX}{name}"), label_value(value)).is_some() {
            return Err(SandboxError::Spec(format!("label {key:?} collides with another label")));
        }
    }
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(RUN_LABEL.into(), spec.id.clone());
    labels.insert(KIND_LABEL.into(), label_value(&spec.kind));
    Ok(labels)
}

/// `/etc/hosts` entries pinning the object store's addresses, grouped by
/// address (ordered, so the Job is deterministic).
pub(super) fn host_aliases(resolved: &BTreeMap<String, BTreeSet<IpAddr>>) -> Vec<HostAlias> {
    let mut by_ip: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (host, ips) in resolved {
        for ip in ips.iter().take(MAX_PINNED_ADDRESSES) {
            by_ip.entry(*ip).or_default().push(host.clone());
        }
    }
    by_ip.into_iter().map(|(ip, hostnames)| HostAlias { ip: ip.to_string(), hostnames: Some(hostnames) }).collect()
}

fn meta(spec: &RunSpec, labels: &BTreeMap<String, String>, owner: Option<&OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(&spec.id)),
        labels: Some(labels.clone()),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// Requests equal to limits: the pod gets the Guaranteed QoS class, so it is
/// neither throttled below nor evicted before what it was promised.
fn resources(spec: &RunSpec) -> ResourceRequirements {
    let l = &spec.limits;
    let amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{}m", l.cpu_millis))),
        ("memory".to_string(), Quantity(format!("{}Mi", l.memory_mb))),
        ("ephemeral-storage".to_string(), Quantity(format!("{}Mi", l.disk_mb))),
    ]);
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

/// Both containers: no privilege escalation (setuid binaries stay inert),
/// no capabilities, a read-only root (only `/work` and `/tmp` are writable),
/// never root.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}

fn mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount { name: "work".into(), mount_path: WORK_DIR.into(), ..Default::default() },
        VolumeMount { name: "tmp".into(), mount_path: TMP_DIR.into(), ..Default::default() },
    ]
}

fn run_env(spec: &RunSpec) -> Vec<EnvVar> {
    // The same base environment as the local driver; the spec's env wins.
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("HOME".into(), TMP_DIR.into()),
        ("TMPDIR".into(), TMP_DIR.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("CI".into(), "1".into()),
        ("npm_config_update_notifier".into(), "false".into()),
    ]);
    if let Network::Registry(url) = &spec.network {
        env.insert("npm_config_registry".into(), url.clone());
    }
    if let Some(port) = spec.serve_port {
        env.insert("BLAZE_SERVE_PORT".into(), port.to_string());
    }
    env.extend(spec.env.clone());
    if let Some(collect) = &spec.collect {
        // Relative to the working directory, /work. The command can read the
        // URL too; it only allows writing this one object, whose content the
        // command decides anyway.
        env.insert(COLLECT_PATH_ENV.into(), collect.path.clone());
        env.insert(COLLECT_URL_ENV.into(), collect.put_url.clone());
    }
    env.iter().map(|(k, v)| env_var(k, v)).collect()
}

/// The Job of a run, created suspended: its pod starts only once the driver
/// has created the run's NetworkPolicy (owned by the Job) and resumed it.
pub(super) fn job(spec: &RunSpec, checked: &Checked, config: &KubeConfig, host_aliases: Vec<HostAlias>) -> Job {
    let (command, args) = match &spec.collect {
        None => (spec.command.clone(), None),
        Some(_) => (vec!["/bin/sh".into(), "-c".into(), COLLECT_SCRIPT.into(), COLLECT_ARGV0.into()], Some(spec.command.clone())),
    };
    let fetch = Container {
        name: FETCH_CONTAINER.into(),
        image: Some(config.fetcher_image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), FETCH_SCRIPT.into()]),
        env: Some(vec![env_var("HOME", TMP_DIR), env_var("TMPDIR", TMP_DIR), env_var(SOURCE_URL_ENV, &checked.source_url)]),
        // Same as the run container: init containers run alone, so this
        // adds nothing to the pod's footprint and keeps it Guaranteed.
        resources: Some(resources(spec)),
        security_context: Some(container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts()),
        working_dir: Some(WORK_DIR.into()),
        ..Default::default()
    };
    let run = Container {
        name: RUN_CONTAINER.into(),
        image: Some(config.image.clone()),
        command: Some(command),
        args,
        env: Some(run_env(spec)),
        resources: Some(resources(spec)),
        security_context: Some(container_security()),
        // The tail of the output becomes the termination message of a
        // failed container: the driver's one-line failure reason.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts()),
        working_dir: Some(WORK_DIR.into()),
        ..Default::default()
    };
    let disk = Quantity(format!("{}Mi", spec.limits.disk_mb));
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(disk.clone()), ..Default::default() }),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        // The sandbox has no business with the Kubernetes API, nor with the
        // addresses of the namespace's Services.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        runtime_class_name: config.runtime_class.clone(),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        host_aliases: (!host_aliases.is_empty()).then_some(host_aliases),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SANDBOX_UID),
            run_as_group: Some(SANDBOX_UID),
            fs_group: Some(SANDBOX_UID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        init_containers: Some(vec![fetch]),
        containers: vec![run],
        volumes: Some(vec![empty_dir("work"), empty_dir("tmp")]),
        ..Default::default()
    };
    Job {
        metadata: meta(spec, &checked.labels, None),
        spec: Some(JobSpec {
            // One attempt: a failed untrusted build is the user's to fix, and
            // a retry would replay its side effects.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline_seconds(spec)),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            suspend: Some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(checked.labels.clone()), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The deadline in whole seconds, rounded up.
fn deadline_seconds(spec: &RunSpec) -> i64 {
    let d = spec.limits.deadline;
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).saturating_add(i64::from(d.subsec_nanos() > 0))
}

/// Makes an object a dependent of the run's Job, so the garbage collector
/// removes it with the Job (after its TTL, or if the driver dies). No
/// `blockOwnerDeletion`: it would need update rights on `jobs/finalizers`.
pub(super) fn owned_by(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        ..Default::default()
    })
}

fn peer(peer: &Peer) -> NetworkPolicyPeer {
    let selector = |labels: &BTreeMap<String, String>| LabelSelector { match_labels: Some(labels.clone()), ..Default::default() };
    match peer {
        Peer::Cidr(cidr) => NetworkPolicyPeer { ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }), ..Default::default() },
        Peer::Pods { namespaces, pods } => NetworkPolicyPeer {
            namespace_selector: namespaces.as_ref().map(selector),
            pod_selector: Some(selector(pods)),
            ..Default::default()
        },
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(protocol.into()), port: Some(IntOrString::Int(port.into())), end_port: None }
}

fn egress_to(target: &EgressTarget) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule { to: Some(vec![peer(&target.peer)]), ports: Some(vec![port("TCP", target.port)]) }
}

/// The run's own policy. Policies only add allowances, so together with the
/// baseline this is exactly what the run may do:
/// * egress to the object store, always (source in, outputs out);
/// * `Network::Registry`: egress to the registry proxy and the cluster DNS;
///   `Network::None` gets no DNS (a DNS resolver forwards queries out of the
///   cluster: a covert channel);
/// * ingress only to `serve_port`, only from [`KubeConfig::serve_from`].
pub(super) fn network_policy(spec: &RunSpec, checked: &Checked, config: &KubeConfig, owner: Option<&OwnerReference>) -> NetworkPolicy {
    let mut egress = vec![egress_to(&config.object_storage)];
    if let (Network::Registry(_), Some(proxy)) = (&spec.network, &config.registry_proxy) {
        egress.push(egress_to(proxy));
        egress.push(NetworkPolicyEgressRule { to: Some(vec![peer(&config.dns)]), ports: Some(vec![port("UDP", 53), port("TCP", 53)]) });
    }
    let ingress = match (spec.serve_port, &config.serve_from) {
        (Some(p), Some(from)) => vec![NetworkPolicyIngressRule { from: Some(vec![peer(from)]), ports: Some(vec![port("TCP", p)]) }],
        _ => vec![],
    };
    NetworkPolicy {
        metadata: meta(spec, &checked.labels, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(RUN_LABEL.into(), spec.id.clone())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// Deny everything to every sandbox pod of the namespace. A run's own
/// policy is deleted before (or, on cancel, while) its pod goes away; with
/// this baseline the pod is never unrestricted in between, and a pod whose
/// policy is not yet programmed by the CNI is isolated already. Ship the
/// same object with the cluster manifests; the driver creates it if missing.
pub(super) fn baseline_policy() -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(BASELINE_POLICY.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY.into())])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            // Every pod with a run label: not `managed-by`, which tooling may
            // put on the service's own pods.
            pod_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement { key: RUN_LABEL.into(), operator: "Exists".into(), values: None }]),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![]),
            egress: Some(vec![]),
        }),
    }
}

/// The Service in front of a run's `serve_port`.
pub(super) fn service(spec: &RunSpec, checked: &Checked, port: u16, owner: Option<&OwnerReference>) -> Service {
    Service {
        metadata: meta(spec, &checked.labels, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([(RUN_LABEL.into(), spec.id.clone())])),
            ports: Some(vec![ServicePort {
                name: Some("serve".into()),
                protocol: Some("TCP".into()),
                port: port.into(),
                target_port: Some(IntOrString::Int(port.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_cut_to_label_syntax() {
        assert_eq!(label_value("org_42.main"), "org_42.main");
        assert_eq!(label_value("Acme Inc. (EU)"), "Acme-Inc.--EU");
        assert_eq!(label_value("--x--"), "x");
        assert_eq!(label_value("ünï"), "n");
        assert_eq!(label_value(""), "");
        let long = label_value(&format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(long, "a".repeat(62), "cut at 63, then the trailing '-' dropped");
    }

    #[test]
    fn output_paths_stay_in_the_project() {
        assert!(is_relative_path("dist"));
        assert!(is_relative_path("./build/out"));
        assert!(!is_relative_path(""));
        assert!(!is_relative_path("/etc"));
        assert!(!is_relative_path("dist/../../x"));
    }

    #[test]
    fn pinned_hosts_group_by_address() {
        let resolved = BTreeMap::from([
            ("a.example".to_string(), BTreeSet::from(["10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()])),
            ("b.example".to_string(), BTreeSet::from(["10.0.0.1".parse().unwrap()])),
        ]);
        let json = serde_json::to_value(host_aliases(&resolved)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                { "ip": "10.0.0.1", "hostnames": ["a.example", "b.example"] },
                { "ip": "10.0.0.2", "hostnames": ["a.example"] },
            ])
        );
    }
}
