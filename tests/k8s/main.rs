//! The Kubernetes manifests of `k8s/`, checked without a cluster: each
//! overlay is rendered by `kubectl kustomize`, every object is read strictly
//! into its k8s-openapi type (`rendered.rs`), and the platform's rules are
//! checked on the result: locked-down pods with limits and probes, pinned
//! images, a Deployment + Service + PDB + HPA per role, service-account
//! tokens for execution only, the sandbox driver's exact RBAC, and an
//! environment that the `blaze` binary itself loads.

mod rendered;

use std::collections::{BTreeMap, BTreeSet};

use blaze_kit::{Config, ConfigSource};
use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use rendered::{Object, Pod, Rendered};

const PLATFORM_NS: &str = "blaze";
const SANDBOX_NS: &str = "blaze-sandboxes";
const IMAGE: &str = "ghcr.io/blaze/blaze";
const UID: i64 = 10001;

/// The roles and the ports they listen on in the cluster (`listen.*`).
const ROLES: [(&str, i32); 6] =
    [("edge", 8080), ("identity", 50051), ("control-plane", 50052), ("orchestrator", 50053), ("execution", 50054), ("artifacts", 50055)];

/// Settings holding secrets (`Secret` in the config model). In a cluster
/// they come from mounted files (`BLAZE_*_FILE`) only: a plain variable
/// would put the secret into the pod spec, readable by anyone who may read
/// Deployments.
const SECRET_SETTINGS: &[&str] = &[
    "BLAZE_DATABASE_URL",
    "BLAZE_DATABASE_MIGRATION_URL",
    "BLAZE_REDIS_URL",
    "BLAZE_AMQP_URL",
    "BLAZE_S3_ACCESS_KEY",
    "BLAZE_S3_SECRET_KEY",
    "BLAZE_AUTH_SIGNING_KEY",
    "BLAZE_OIDC_HS256_SECRET",
    "BLAZE_OAUTH_CLIENT_SECRET",
    "BLAZE_LLM_PROVIDERS",
    "BLAZE_PREVIEW_TOKEN_KEY",
    "BLAZE_SECRETS_ENCRYPTION_KEY",
];

fn at(r: &Rendered, what: impl std::fmt::Display) -> String {
    format!("overlay {}: {what}", r.overlay)
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(&spec.containers)
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "selectors here use matchLabels only");
    let wanted = selector.match_labels.clone().unwrap_or_default();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn listen_var(role: &str) -> String {
    format!("BLAZE_LISTEN_{}", role.to_uppercase().replace('-', "_"))
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// The environment of a container as the kubelet builds it: `envFrom`
/// ConfigMaps, then `env` (literal values only: this platform takes
/// secrets from files, never from `valueFrom`).
fn container_env(r: &Rendered, pod: &Pod, c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in c.env_from.iter().flatten() {
        let name = &source.config_map_ref.as_ref().unwrap_or_else(|| panic!("{}: envFrom is a ConfigMap", pod.owner)).name;
        env.extend(r.config_map(name).data.clone().unwrap_or_default());
    }
    for var in c.env.iter().flatten() {
        assert!(var.value_from.is_none(), "{}: {} uses valueFrom", at(r, &pod.owner), var.name);
        env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
    }
    env
}

/// Where a mounted file comes from: (`Secret` or `ConfigMap`, its name, the key).
fn mounted_file(r: &Rendered, pod: &Pod, c: &Container, path: &str) -> (&'static str, String, String) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.strip_prefix(&m.mount_path).is_some_and(|rest| rest.starts_with('/')))
        .unwrap_or_else(|| panic!("{}: {path} is in no volume of {}", at(r, &pod.owner), c.name));
    let file = &path[mount.mount_path.len() + 1..];
    let volume = pod.spec.volumes.iter().flatten().find(|v| v.name == mount.name).expect("mounted volumes exist");
    let key_of = |items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>| match items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .map(|i| i.key.clone())
            .unwrap_or_else(|| panic!("{}: volume {} has no item {file}", at(r, &pod.owner), volume.name)),
        None => file.to_owned(),
    };
    if let Some(secret) = &volume.secret {
        ("Secret", secret.secret_name.clone().expect("secret name"), key_of(secret.items.as_ref()))
    } else if let Some(config_map) = &volume.config_map {
        ("ConfigMap", config_map.name.clone(), key_of(config_map.items.as_ref()))
    } else {
        panic!("{}: {path} is on volume {}, neither a Secret nor a ConfigMap", at(r, &pod.owner), volume.name)
    }
}

/// The pod of a role's Deployment and its one container.
fn role_pod<'r>(r: &'r Rendered, role: &str) -> (Pod<'r>, Container) {
    let owner = format!("Deployment/blaze-{role}");
    let pod = r.pods().into_iter().find(|p| p.owner == owner).unwrap_or_else(|| panic!("{}", at(r, format!("no {owner}"))));
    assert_eq!(pod.spec.containers.len(), 1, "{}: one container", at(r, &owner));
    let container = pod.spec.containers[0].clone();
    (pod, container)
}

#[test]
fn overlays_render_to_known_kinds_in_the_two_namespaces() {
    for r in Rendered::both() {
        for object in &r.objects {
            let meta = object.metadata();
            let name = format!("{} {}", object.kind(), meta.name.as_deref().unwrap_or("?"));
            match object {
                Object::Namespace(_) | Object::RuntimeClass(_) => assert!(meta.namespace.is_none(), "{}", at(r, &name)),
                Object::NetworkPolicy(_) | Object::ResourceQuota(_) | Object::LimitRange(_) | Object::Role(_) | Object::RoleBinding(_) => {
                    assert!(matches!(meta.namespace.as_deref(), Some(PLATFORM_NS | SANDBOX_NS)), "{}: namespace", at(r, &name))
                }
                // Workloads and their config never run in the sandbox namespace.
                _ => assert_eq!(meta.namespace.as_deref(), Some(PLATFORM_NS), "{}: namespace", at(r, &name)),
            }
        }
        for ns in [PLATFORM_NS, SANDBOX_NS] {
            let Some(Object::Namespace(namespace)) = r.find("Namespace", None, ns) else {
                panic!("{}", at(r, format!("no Namespace {ns}")))
            };
            let labels = namespace.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("pod-security.kubernetes.io/enforce").map(String::as_str),
                Some("restricted"),
                "{}: the restricted Pod Security Standard is enforced",
                at(r, ns)
            );
        }
    }
}

#[test]
fn every_container_runs_unprivileged_with_a_read_only_root_and_limits() {
    for r in Rendered::both() {
        for pod in r.pods() {
            let spec = pod.spec;
            let pod_security = spec.security_context.clone().unwrap_or_default();
            let owner = at(r, &pod.owner);
            assert_eq!(pod_security.run_as_non_root, Some(true), "{owner}: pod runAsNonRoot");
            assert_eq!((pod_security.run_as_user, pod_security.run_as_group), (Some(UID), Some(UID)), "{owner}: pod uid/gid");
            assert_eq!(pod_security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"), "{owner}: seccomp");
            assert!(
                spec.host_network != Some(true) && spec.host_pid != Some(true) && spec.host_ipc != Some(true),
                "{owner}: host namespaces"
            );
            assert!(spec.volumes.iter().flatten().all(|v| v.host_path.is_none()), "{owner}: hostPath volume");
            // Service links would inject BLAZE_<SERVICE>_PORT… variables for
            // the blaze-* Services into our configuration namespace.
            assert_eq!(spec.enable_service_links, Some(false), "{owner}: enableServiceLinks");
            for c in containers(spec) {
                let sc = c.security_context.clone().unwrap_or_default();
                let at = format!("{owner}: container {}", c.name);
                assert_eq!(sc.run_as_non_root.or(pod_security.run_as_non_root), Some(true), "{at}: runAsNonRoot");
                assert_eq!(sc.run_as_user.or(pod_security.run_as_user), Some(UID), "{at}: runAsUser");
                assert_eq!(sc.run_as_group.or(pod_security.run_as_group), Some(UID), "{at}: runAsGroup");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{at}: allowPrivilegeEscalation");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{at}: readOnlyRootFilesystem");
                assert_ne!(sc.privileged, Some(true), "{at}: privileged");
                let capabilities = sc.capabilities.clone().unwrap_or_default();
                assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{at}: capabilities drop ALL");
                assert!(capabilities.add.unwrap_or_default().is_empty(), "{at}: capabilities added");
                let seccomp = sc.seccomp_profile.or(pod_security.seccomp_profile.clone()).map(|s| s.type_);
                assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{at}: seccomp");

                let resources = c.resources.clone().unwrap_or_default();
                for (kind, amounts) in [("requests", resources.requests), ("limits", resources.limits)] {
                    let amounts = amounts.unwrap_or_default();
                    for resource in ["cpu", "memory"] {
                        assert!(amounts.contains_key(resource), "{at}: resources.{kind}.{resource}");
                    }
                }
            }
        }
    }
}

#[test]
fn long_running_containers_have_readiness_and_liveness_probes() {
    for r in Rendered::both() {
        for pod in r.pods().into_iter().filter(|p| p.long_running) {
            for c in containers(pod.spec) {
                let at = at(r, format!("{} container {}", pod.owner, c.name));
                assert!(c.readiness_probe.is_some(), "{at}: readinessProbe");
                assert!(c.liveness_probe.is_some(), "{at}: livenessProbe");
            }
        }
    }
}

/// `(repository, tag or digest)` of an image reference; `None` when it
/// names neither (the registry's `latest` then).
fn split_image(image: &str) -> (&str, Option<&str>) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository, Some(digest));
    }
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
        _ => (image, None),
    }
}

#[test]
fn one_release_of_the_blaze_image_runs_everywhere_and_prod_pins_it() {
    for r in Rendered::both() {
        let mut versions = BTreeSet::new();
        for pod in r.pods() {
            for c in containers(pod.spec) {
                let image = c.image.as_deref().unwrap_or_default();
                let (repository, version) = split_image(image);
                assert_eq!(repository, IMAGE, "{}", at(r, format!("{} container {}", pod.owner, c.name)));
                versions.insert(version.map(str::to_owned));
            }
        }
        assert_eq!(versions.len(), 1, "{}: every workload runs the same release: {versions:?}", at(r, "images"));
        let version = versions.into_iter().next().flatten();
        match r.overlay {
            "dev" => assert_eq!(version.as_deref(), Some("dev")),
            _ => {
                let sandbox_image = r.shared_env().get("BLAZE_SANDBOX_IMAGE").cloned().unwrap_or_default();
                for image in [format!("{IMAGE}:{}", version.unwrap_or_default()), sandbox_image] {
                    let (_, version) = split_image(&image);
                    assert!(version.is_some_and(|v| !v.is_empty() && v != "latest"), "{}: {image} is pinned", at(r, "prod image"));
                }
            }
        }
    }
}

#[test]
fn every_role_has_a_deployment_service_disruption_budget_and_autoscaler() {
    for r in Rendered::both() {
        let names: BTreeSet<String> = r.deployments().filter_map(|d| d.metadata.name.clone()).collect();
        let expected: BTreeSet<String> = ROLES.iter().map(|(role, _)| format!("blaze-{role}")).collect();
        assert_eq!(names, expected, "{}: one Deployment per role, nothing else", at(r, "deployments"));
        for (role, _) in ROLES {
            let name = format!("blaze-{role}");
            let deployment = r.deployment(&name);
            let spec = &deployment.spec;
            let (pod, container) = role_pod(r, role);
            let labels = BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), name.clone()),
                ("app.kubernetes.io/part-of".to_owned(), "blaze".to_owned()),
                ("app.kubernetes.io/component".to_owned(), role.to_owned()),
            ]);
            for (what, have) in [("Deployment", deployment.metadata.labels.clone().unwrap_or_default()), ("pod", pod.labels.clone())] {
                assert!(labels.iter().all(|(k, v)| have.get(k) == Some(v)), "{}: {what} labels {have:?}", at(r, &name));
            }
            assert!(selects(&spec.selector, &pod.labels), "{}: the Deployment selects its pods", at(r, &name));
            assert_eq!(container.args, Some(vec!["serve".into(), "--role".into(), role.into()]), "{}: args", at(r, &name));
            // The autoscaler owns the count; a `replicas` here would be reset
            // by every apply.
            assert_eq!(spec.replicas, None, "{}: replicas is the HPA's", at(r, &name));

            let service =
                r.services().find(|s| s.metadata.name.as_deref() == Some(&name)).unwrap_or_else(|| panic!("{}", at(r, "Service")));
            let service_spec = service.spec.clone().unwrap_or_default();
            assert_eq!(service_spec.type_.as_deref(), Some("ClusterIP"), "{}: Service type", at(r, &name));
            assert!(
                service_spec.selector.unwrap_or_default().iter().all(|(k, v)| pod.labels.get(k) == Some(v)),
                "{}: the Service selects the role's pods",
                at(r, &name)
            );

            let pdbs: Vec<_> =
                r.pdbs().filter(|p| p.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| selects(s, &pod.labels))).collect();
            assert_eq!(pdbs.len(), 1, "{}: one PodDisruptionBudget", at(r, &name));
            let budget = pdbs[0].spec.clone().unwrap_or_default();
            assert!(budget.max_unavailable.is_some() || budget.min_available.is_some(), "{}: the PDB sets a budget", at(r, &name));

            let hpas: Vec<_> = r.hpas().filter(|h| h.spec.scale_target_ref.name == name).collect();
            assert_eq!(hpas.len(), 1, "{}: one HorizontalPodAutoscaler", at(r, &name));
            let hpa = hpas[0].spec.clone();
            assert_eq!((hpa.scale_target_ref.kind.as_str(), hpa.scale_target_ref.api_version.as_deref()), ("Deployment", Some("apps/v1")));
            let min = hpa.min_replicas.unwrap_or(1);
            assert!(min >= 1 && hpa.max_replicas >= min, "{}: replicas {min}..{}", at(r, &name), hpa.max_replicas);
            assert!(!hpa.metrics.unwrap_or_default().is_empty(), "{}: the HPA scales on a metric", at(r, &name));
            if r.overlay == "prod" {
                assert!(min >= 3, "{}: prod keeps at least three replicas", at(r, &name));
            }
        }
    }
}

#[test]
fn roles_listen_probe_and_are_reached_on_their_service_ports() {
    for r in Rendered::both() {
        let shared = r.shared_env();
        let metrics = port_of(shared.get("BLAZE_LISTEN_METRICS").expect("listen.metrics is set"));
        for (role, port) in ROLES {
            let (pod, c) = role_pod(r, role);
            let name = format!("blaze-{role}");
            let env = container_env(r, &pod, &c);
            assert_eq!(env.get(&listen_var(role)).map(String::as_str), Some(format!("0.0.0.0:{port}").as_str()), "{}", at(r, &name));
            let port_name = if role == "edge" { "http" } else { "grpc" };
            let container_port =
                |wanted: &str| c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(wanted)).map(|p| p.container_port);
            assert_eq!(container_port(port_name), Some(port), "{}: container port {port_name}", at(r, &name));
            assert_eq!(container_port("metrics"), Some(metrics), "{}: container port metrics", at(r, &name));
            assert_eq!(pod.annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"), "{}", at(r, &name));
            assert_eq!(pod.annotations.get("prometheus.io/port"), Some(&metrics.to_string()), "{}", at(r, &name));

            let service = r.services().find(|s| s.metadata.name.as_deref() == Some(&name)).expect("checked elsewhere");
            let service_ports = service.spec.clone().unwrap_or_default().ports.unwrap_or_default();
            assert_eq!(service_ports.len(), 1, "{}: one Service port", at(r, &name));
            assert_eq!(service_ports[0].port, port, "{}: Service port", at(r, &name));
            assert_eq!(service_ports[0].target_port, Some(IntOrString::String(port_name.into())), "{}: targetPort", at(r, &name));

            let readiness = c.readiness_probe.clone().expect("checked elsewhere");
            let liveness = c.liveness_probe.clone().expect("checked elsewhere");
            let http = |probe: &k8s_openapi::api::core::v1::Probe| probe.http_get.clone().map(|h| (h.path.unwrap_or_default(), h.port));
            if role == "edge" {
                assert_eq!(http(&readiness), Some(("/readyz".into(), IntOrString::String("http".into()))), "{}", at(r, "edge readiness"));
                assert_eq!(http(&liveness), Some(("/healthz".into(), IntOrString::String("http".into()))), "{}", at(r, "edge liveness"));
            } else {
                // Readiness is the gRPC health service of the role's port;
                // liveness only asks whether the process answers at all.
                assert_eq!(readiness.grpc.map(|g| g.port), Some(port), "{}: gRPC readiness probe", at(r, &name));
                assert_eq!(
                    http(&liveness),
                    Some(("/healthz".into(), IntOrString::String("metrics".into()))),
                    "{}: liveness on /healthz",
                    at(r, &name)
                );
                // The other roles find this one through its Service.
                let var = format!("BLAZE_UPSTREAMS_{}", role.to_uppercase().replace('-', "_"));
                let upstream = url::Url::parse(shared.get(&var).unwrap_or_else(|| panic!("{}", at(r, format!("{var} is set")))))
                    .expect("upstream URL");
                assert_eq!(upstream.scheme(), "http", "{}: h2c inside the cluster", at(r, &var));
                let host = upstream.host_str().unwrap_or_default();
                assert!(host.starts_with(&format!("{name}.{PLATFORM_NS}.svc")), "{}: {host} is the Service", at(r, &var));
                assert_eq!(upstream.port(), Some(u16::try_from(port).expect("port")), "{}: the Service port", at(r, &var));
            }
        }
    }
}

#[test]
fn only_execution_mounts_a_service_account_token() {
    for r in Rendered::both() {
        for pod in r.pods() {
            let execution = pod.owner == "Deployment/blaze-execution";
            let account = pod.spec.service_account_name.as_deref();
            let owner = at(r, &pod.owner);
            if execution {
                assert_eq!(account, Some("blaze-execution"), "{owner}: the sandbox driver's account");
                assert_eq!(pod.spec.automount_service_account_token, Some(true), "{owner}: the driver needs its token");
            } else {
                assert_eq!(account, Some("blaze"), "{owner}: the account without rights");
                assert_eq!(pod.spec.automount_service_account_token, Some(false), "{owner}: no token");
            }
        }
        for name in ["blaze", "blaze-execution"] {
            let Some(Object::ServiceAccount(account)) = r.find("ServiceAccount", Some(PLATFORM_NS), name) else {
                panic!("{}", at(r, format!("no ServiceAccount {name}")))
            };
            // Tokens are opt-in per pod, so a new workload gets none by default.
            assert_eq!(account.automount_service_account_token, Some(false), "{}", at(r, name));
        }
    }
}

/// `(apiGroup, resource, verb)` triples.
fn expand<'a>(rules: impl Iterator<Item = (&'a [String], &'a [String], &'a [String])>) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (groups, resources, verbs) in rules {
        for group in groups {
            for resource in resources {
                for verb in verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn the_sandbox_role_grants_exactly_what_the_kube_driver_uses() {
    let driver: Vec<(Vec<String>, Vec<String>, Vec<String>)> = blaze_sandbox::kube::API_PERMISSIONS
        .iter()
        .map(|(group, resource, verbs)| {
            (vec![(*group).to_owned()], vec![(*resource).to_owned()], verbs.iter().map(|v| (*v).to_owned()).collect())
        })
        .collect();
    let wanted = expand(driver.iter().map(|(g, r, v)| (g.as_slice(), r.as_slice(), v.as_slice())));
    for r in Rendered::both() {
        let roles: Vec<_> = r.roles().collect();
        assert_eq!(roles.len(), 1, "{}: one Role, the sandbox driver's", at(r, "RBAC"));
        let role = roles[0];
        let name = role.metadata.name.clone().unwrap_or_default();
        assert_eq!(role.metadata.namespace.as_deref(), Some(SANDBOX_NS), "{}: the Role is the sandbox namespace's", at(r, &name));
        let rules = role.rules.clone().unwrap_or_default();
        for rule in &rules {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{}: plain rules", at(r, &name));
            let mut all = rule.api_groups.iter().flatten().chain(rule.resources.iter().flatten()).chain(&rule.verbs);
            assert!(all.all(|s| s != "*"), "{}: no wildcards", at(r, &name));
        }
        let granted = expand(rules.iter().map(|rule| {
            (rule.api_groups.as_deref().unwrap_or_default(), rule.resources.as_deref().unwrap_or_default(), rule.verbs.as_slice())
        }));
        assert_eq!(granted, wanted, "{}: the Role is blaze_sandbox::kube::API_PERMISSIONS", at(r, &name));

        let bindings: Vec<_> = r.role_bindings().collect();
        assert_eq!(bindings.len(), 1, "{}: one RoleBinding", at(r, "RBAC"));
        let binding = bindings[0];
        assert_eq!(binding.metadata.namespace.as_deref(), Some(SANDBOX_NS));
        assert_eq!((binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()), ("Role", name.as_str()), "{}", at(r, "roleRef"));
        let subjects: Vec<_> = binding
            .subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(subjects, [("ServiceAccount", "blaze-execution", PLATFORM_NS)], "{}: bound to execution only", at(r, "RBAC"));
    }
}

#[test]
fn the_sandbox_namespace_ships_the_drivers_baseline_and_closes_everything_else() {
    let driver_baseline = serde_json::to_value(blaze_sandbox::kube::baseline_network_policy()).expect("serialises");
    for r in Rendered::both() {
        let policies: BTreeMap<String, _> = r
            .network_policies()
            .filter(|p| p.metadata.namespace.as_deref() == Some(SANDBOX_NS))
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p.clone()))
            .collect();
        let name = driver_baseline["metadata"]["name"].as_str().expect("baseline name");
        let mut shipped =
            serde_json::to_value(policies.get(name).unwrap_or_else(|| panic!("{}", at(r, format!("no {name}"))))).expect("json");
        shipped["metadata"].as_object_mut().expect("metadata").remove("namespace");
        assert_eq!(shipped, driver_baseline, "{}: the shipped baseline is the driver's", at(r, name));

        let default_deny =
            policies.get("default-deny").unwrap_or_else(|| panic!("{}", at(r, "no default-deny"))).spec.clone().expect("spec");
        assert_eq!(default_deny.pod_selector, Some(LabelSelector::default()), "{}: every pod", at(r, "default-deny"));
        assert_eq!(default_deny.policy_types, Some(vec!["Ingress".into(), "Egress".into()]));
        assert!(default_deny.ingress.unwrap_or_default().is_empty() && default_deny.egress.unwrap_or_default().is_empty());

        let install = policies.get("blaze-sandbox-install-egress").unwrap_or_else(|| panic!("{}", at(r, "no install egress")));
        let install = install.spec.clone().expect("spec");
        let selector = install.pod_selector.clone().unwrap_or_default();
        assert_eq!(selector.match_labels, Some(BTreeMap::from([("blaze.dev/kind".to_owned(), "install".to_owned())])));
        assert_eq!(install.policy_types, Some(vec!["Egress".into()]), "{}: adds egress only", at(r, "install egress"));
        // A rule without peers or ports allows every destination or port.
        for (policy, spec) in &policies {
            for rule in spec.spec.as_ref().and_then(|s| s.egress.as_ref()).into_iter().flatten() {
                assert!(!rule.to.clone().unwrap_or_default().is_empty(), "{}: egress to named peers only", at(r, policy));
                assert!(!rule.ports.clone().unwrap_or_default().is_empty(), "{}: egress to named ports only", at(r, policy));
            }
        }
        assert!(r.find("ResourceQuota", Some(SANDBOX_NS), "blaze-sandboxes").is_some(), "{}", at(r, "ResourceQuota"));
        assert!(r.find("LimitRange", Some(SANDBOX_NS), "blaze-sandboxes").is_some(), "{}", at(r, "LimitRange"));
    }
}

/// A plausible content for a secret file of `setting` (the provider map is
/// JSON; the rest are strings).
fn sample_secret(setting: &str) -> &'static str {
    if setting == "BLAZE_LLM_PROVIDERS" { "{}" } else { "sample-secret" }
}

#[test]
fn every_container_gets_a_configuration_the_binary_accepts() {
    let known: BTreeSet<String> = Config::reference().into_iter().map(|(var, _, _)| var).collect();
    for r in Rendered::both() {
        for pod in r.pods() {
            for c in &pod.spec.containers {
                let owner = at(r, format!("{} container {}", pod.owner, c.name));
                let files = tempfile::tempdir().expect("temp dir");
                let mut env = Vec::new();
                let mut from_files = BTreeSet::new();
                for (name, value) in container_env(r, &pod, c) {
                    if name == "BLAZE_CONFIG" {
                        let (kind, config_map, key) = mounted_file(r, &pod, c, &value);
                        assert_eq!(kind, "ConfigMap", "{owner}: the config file");
                        let text = r.config_map(&config_map).data.clone().unwrap_or_default().remove(&key).expect("the config file");
                        let path = files.path().join("blaze.toml");
                        std::fs::write(&path, text).expect("write");
                        env.push((name, path.display().to_string()));
                    } else if let Some(setting) = name.strip_suffix("_FILE").filter(|s| known.contains(*s)) {
                        let (kind, _, key) = mounted_file(r, &pod, c, &value);
                        assert_eq!(kind, "Secret", "{owner}: {name} is a mounted Secret key");
                        let path = files.path().join(&key);
                        std::fs::write(&path, sample_secret(setting)).expect("write");
                        from_files.insert(setting.to_owned());
                        env.push((name, path.display().to_string()));
                    } else {
                        // The binary ignores variables it does not know, so
                        // a misspelt one would silently not apply.
                        assert!(!name.starts_with("BLAZE_") || known.contains(&name), "{owner}: {name} is no setting");
                        assert!(!SECRET_SETTINGS.contains(&name.as_str()), "{owner}: {name} must come from a file ({name}_FILE)");
                        env.push((name, value));
                    }
                }
                let cfg = Config::load(&ConfigSource { file: None, env: Some(env) }).unwrap_or_else(|e| panic!("{owner}: {e}"));
                assert!(!cfg.auth.dev_mode, "{owner}: dev mode trusts headers");
                assert_eq!(cfg.sandbox.driver, "kube", "{owner}");
                assert_eq!(cfg.sandbox.namespace, SANDBOX_NS, "{owner}: the namespace of the driver's Role");
                assert_eq!(cfg.sandbox.kube_platform_namespace, PLATFORM_NS, "{owner}: dev servers accept the platform's pods");

                // Least privilege on secrets: the schema owner's DSN only in
                // the migration Job, and what each role needs to start.
                let migrate = pod.owner == "Job/blaze-migrate";
                assert_eq!(from_files.contains("BLAZE_DATABASE_MIGRATION_URL"), migrate, "{owner}: the owner DSN");
                if migrate {
                    assert_eq!(c.args, Some(vec!["migrate".to_owned()]), "{owner}: runs the migrations");
                } else {
                    let role = pod.owner.trim_start_matches("Deployment/blaze-");
                    assert_eq!(cfg.listen_addr(role), format!("0.0.0.0:{}", ROLES.iter().find(|(r, _)| *r == role).expect("a role").1));
                    let mut needed = vec!["BLAZE_AUTH_SIGNING_KEY", "BLAZE_REDIS_URL"];
                    match role {
                        "identity" | "orchestrator" => needed.push("BLAZE_DATABASE_URL"),
                        "control-plane" => needed.extend(["BLAZE_DATABASE_URL", "BLAZE_SECRETS_ENCRYPTION_KEY"]),
                        "execution" => {
                            needed.extend(["BLAZE_DATABASE_URL", "BLAZE_AMQP_URL", "BLAZE_S3_ACCESS_KEY", "BLAZE_S3_SECRET_KEY"])
                        }
                        "artifacts" => needed.extend(["BLAZE_S3_ACCESS_KEY", "BLAZE_S3_SECRET_KEY"]),
                        _ => {}
                    }
                    for setting in needed {
                        assert!(from_files.contains(setting), "{owner}: {setting}_FILE");
                    }
                }
            }
        }
    }
}

#[test]
fn the_ingress_sends_api_preview_and_app_hosts_to_the_edge() {
    for r in Rendered::both() {
        let public = url::Url::parse(r.shared_env().get("BLAZE_EDGE_PUBLIC_URL").expect("edge.public_url is set")).expect("public URL");
        let domain = public.host_str().expect("public host").to_owned();
        let expected: BTreeSet<String> = [domain.clone(), format!("*.preview.{domain}"), format!("*.apps.{domain}")].into();
        let ingresses: Vec<_> = r.ingresses().collect();
        assert_eq!(ingresses.len(), 1, "{}", at(r, "one Ingress"));
        let spec = ingresses[0].spec.clone().expect("spec");
        let mut hosts = BTreeSet::new();
        for rule in spec.rules.iter().flatten() {
            hosts.insert(rule.host.clone().unwrap_or_default());
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                let service = path.backend.service.as_ref().expect("a Service backend");
                assert_eq!(service.name, "blaze-edge", "{}: only the edge is public", at(r, "Ingress"));
                assert_eq!(service.port.as_ref().and_then(|p| p.name.as_deref()), Some("http"));
                assert_eq!((path.path.as_deref(), path.path_type.as_str()), (Some("/"), "Prefix"));
            }
        }
        assert_eq!(hosts, expected, "{}: hosts follow BLAZE_EDGE_PUBLIC_URL", at(r, "Ingress"));
        let tls_hosts: BTreeSet<String> = spec.tls.iter().flatten().flat_map(|t| t.hosts.clone().unwrap_or_default()).collect();
        match public.scheme() {
            "https" => assert_eq!(tls_hosts, expected, "{}: the certificate covers every host", at(r, "Ingress TLS")),
            _ => assert!(tls_hosts.is_empty(), "{}: plain HTTP", at(r, "Ingress TLS")),
        }
    }
}

#[test]
fn prod_runs_sandboxes_under_gvisor() {
    let prod = Rendered::prod();
    let Some(Object::RuntimeClass(gvisor)) = prod.find("RuntimeClass", None, "gvisor") else { panic!("prod: no RuntimeClass gvisor") };
    assert_eq!(gvisor.handler, "runsc");
    assert_eq!(prod.shared_env().get("BLAZE_SANDBOX_RUNTIME_CLASS").map(String::as_str), Some("gvisor"));

    let dev = Rendered::dev();
    assert!(dev.find("RuntimeClass", None, "gvisor").is_none(), "dev nodes need not have runsc");
    assert_eq!(dev.shared_env().get("BLAZE_SANDBOX_RUNTIME_CLASS").map(String::as_str), Some(""));
}

#[test]
fn the_migration_job_can_be_applied_alone_before_the_rollout() {
    const PHASE: (&str, &str) = ("blaze.dev/phase", "migrate");
    let has_phase = |labels: Option<&BTreeMap<String, String>>| labels.and_then(|l| l.get(PHASE.0)).map(String::as_str) == Some(PHASE.1);
    for r in Rendered::both() {
        let jobs: Vec<_> = r.jobs().collect();
        assert_eq!(jobs.len(), 1, "{}", at(r, "one Job, the migration"));
        let job = jobs[0];
        assert!(has_phase(job.metadata.labels.as_ref()), "{}: selected by -l blaze.dev/phase=migrate", at(r, "Job"));
        let template = &job.spec.as_ref().expect("spec").template;
        let pod = template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "{}: a failed attempt is a new pod", at(r, "Job"));
        // `kubectl apply -l blaze.dev/phase=migrate` must bring everything
        // the Job needs (its namespace, account and ConfigMaps; the Secret is
        // the operator's).
        let mut needed = vec![("Namespace", None, PLATFORM_NS.to_owned())];
        needed.push(("ServiceAccount", Some(PLATFORM_NS), pod.service_account_name.clone().expect("account")));
        for c in &pod.containers {
            needed.extend(
                c.env_from
                    .iter()
                    .flatten()
                    .filter_map(|e| e.config_map_ref.as_ref())
                    .map(|c| ("ConfigMap", Some(PLATFORM_NS), c.name.clone())),
            );
        }
        needed.extend(
            pod.volumes.iter().flatten().filter_map(|v| v.config_map.as_ref()).map(|c| ("ConfigMap", Some(PLATFORM_NS), c.name.clone())),
        );
        for (kind, namespace, name) in needed {
            let object = r.find(kind, namespace, &name).unwrap_or_else(|| panic!("{}", at(r, format!("no {kind} {name}"))));
            assert!(has_phase(object.metadata().labels.as_ref()), "{}: labelled {}={}", at(r, format!("{kind} {name}")), PHASE.0, PHASE.1);
        }
    }
}
