//! An overlay of `k8s/` as `kubectl kustomize` renders it, every document
//! read strictly into its k8s-openapi type.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use k8s_openapi::{
    Metadata, Resource,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::Job,
        core::v1::{ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, PodSpec, ResourceQuota, Service, ServiceAccount},
        networking::v1::{Ingress, NetworkPolicy},
        node::v1::RuntimeClass,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The kinds the manifests may contain, each with its k8s-openapi type. A
/// kind outside this list fails the render: in particular ClusterRole and
/// ClusterRoleBinding, since the platform needs no cluster-wide rights.
macro_rules! kinds {
    ($($kind:ident),* $(,)?) => {
        // A handful of objects per render: boxing the big variants buys nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum Object {
            $($kind($kind)),*
        }

        impl Object {
            fn parse(doc: &Value) -> Result<Object, String> {
                let api_version = doc["apiVersion"].as_str().unwrap_or_default();
                let kind = doc["kind"].as_str().unwrap_or_default();
                $(
                    if api_version == <$kind as Resource>::API_VERSION && kind == <$kind as Resource>::KIND {
                        return strict::<$kind>(doc).map(Object::$kind);
                    }
                )*
                Err(format!("{api_version} {kind} is not a kind the manifests may use"))
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Object::$kind(o) => o.metadata()),*
                }
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $(Object::$kind(_) => <$kind as Resource>::KIND),*
                }
            }
        }
    };
}

kinds! {
    Namespace, ServiceAccount, ConfigMap, Service, Deployment, Job, PodDisruptionBudget, HorizontalPodAutoscaler, Ingress,
    NetworkPolicy, ResourceQuota, LimitRange, Role, RoleBinding, PersistentVolumeClaim, RuntimeClass,
}

/// Deserialise `doc` as `K`, refusing any field `K` does not have.
///
/// k8s-openapi's types (like the API server itself, which silently drops a
/// misspelt `readinesProbe`) ignore unknown fields, and serde's
/// `deny_unknown_fields` can not be added from outside. So the document
/// makes a round trip: typed, then back to JSON, then compared with the
/// original. A field that did not survive is one the type does not know (or
/// a value of the wrong shape); `null`s are dropped on both sides first,
/// since they mean "unset" to both.
fn strict<K: DeserializeOwned + Serialize>(doc: &Value) -> Result<K, String> {
    let typed: K = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut differences = Vec::new();
    compare(&without_nulls(doc.clone()), &without_nulls(back), "", &mut differences);
    if differences.is_empty() { Ok(typed) } else { Err(differences.join("; ")) }
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn compare(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let at = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => compare(value, other, &at, out),
                    None => out.push(format!("unknown field {at}")),
                }
            }
            out.extend(b.keys().filter(|k| !a.contains_key(*k)).map(|k| format!("field {path}.{k} appeared")));
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        // A quantity written as a bare number (`cpu: 1`) reads back as a
        // string; the API server accepts both.
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// One rendered overlay.
pub struct Rendered {
    pub overlay: &'static str,
    pub objects: Vec<Object>,
}

/// A pod template of a workload, with where it comes from.
pub struct Pod<'a> {
    /// `Deployment/blaze-edge`, `Job/blaze-migrate`.
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: &'a PodSpec,
    /// Deployments run until stopped; Jobs run to completion.
    pub long_running: bool,
}

impl Rendered {
    pub fn dev() -> &'static Rendered {
        static DEV: OnceLock<Rendered> = OnceLock::new();
        DEV.get_or_init(|| Rendered::render("dev"))
    }

    pub fn prod() -> &'static Rendered {
        static PROD: OnceLock<Rendered> = OnceLock::new();
        PROD.get_or_init(|| Rendered::render("prod"))
    }

    pub fn both() -> [&'static Rendered; 2] {
        [Rendered::dev(), Rendered::prod()]
    }

    fn render(overlay: &'static str) -> Rendered {
        let dir = k8s_dir().join("overlays").join(overlay);
        let output = Command::new(kubectl())
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("running kubectl kustomize {}: {e}", dir.display()));
        assert!(output.status.success(), "kubectl kustomize {} failed:\n{}", dir.display(), String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document).unwrap_or_else(|e| panic!("{overlay}: rendered YAML does not parse: {e}"));
            if doc.is_null() {
                continue;
            }
            let name = format!("{} {}", doc["kind"].as_str().unwrap_or("?"), doc["metadata"]["name"].as_str().unwrap_or("?"));
            match Object::parse(&doc) {
                Ok(object) => objects.push(object),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        assert!(errors.is_empty(), "{overlay}: objects that are not valid Kubernetes objects:\n{}", errors.join("\n"));
        assert!(!objects.is_empty(), "{overlay}: nothing rendered");
        Rendered { overlay, objects }
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.objects.iter().filter_map(|o| if let Object::Deployment(d) = o { Some(d) } else { None })
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.objects.iter().filter_map(|o| if let Object::Job(j) = o { Some(j) } else { None })
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects.iter().filter_map(|o| if let Object::Service(s) = o { Some(s) } else { None })
    }

    pub fn config_maps(&self) -> impl Iterator<Item = &ConfigMap> {
        self.objects.iter().filter_map(|o| if let Object::ConfigMap(c) = o { Some(c) } else { None })
    }

    pub fn network_policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.objects.iter().filter_map(|o| if let Object::NetworkPolicy(n) = o { Some(n) } else { None })
    }

    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.objects.iter().filter_map(|o| if let Object::Role(r) = o { Some(r) } else { None })
    }

    pub fn role_bindings(&self) -> impl Iterator<Item = &RoleBinding> {
        self.objects.iter().filter_map(|o| if let Object::RoleBinding(r) = o { Some(r) } else { None })
    }

    pub fn pdbs(&self) -> impl Iterator<Item = &PodDisruptionBudget> {
        self.objects.iter().filter_map(|o| if let Object::PodDisruptionBudget(p) = o { Some(p) } else { None })
    }

    pub fn hpas(&self) -> impl Iterator<Item = &HorizontalPodAutoscaler> {
        self.objects.iter().filter_map(|o| if let Object::HorizontalPodAutoscaler(h) = o { Some(h) } else { None })
    }

    pub fn ingresses(&self) -> impl Iterator<Item = &Ingress> {
        self.objects.iter().filter_map(|o| if let Object::Ingress(i) = o { Some(i) } else { None })
    }

    pub fn deployment(&self, name: &str) -> &Deployment {
        self.deployments()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no Deployment {name}", self.overlay))
    }

    /// An object by kind, namespace and name.
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Object> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.metadata().namespace.as_deref() == namespace && o.metadata().name.as_deref() == Some(name))
    }

    /// The ConfigMap a workload names (kustomize adds a content hash to
    /// generated names and rewrites the references).
    pub fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.overlay))
    }

    /// The `blaze-env` ConfigMap: the environment shared by every container.
    pub fn shared_env(&self) -> &BTreeMap<String, String> {
        let env = self
            .config_maps()
            .find(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with("blaze-env-")))
            .unwrap_or_else(|| panic!("{}: no blaze-env ConfigMap", self.overlay));
        env.data.as_ref().expect("blaze-env has data")
    }

    /// Every pod template: Deployments and Jobs.
    pub fn pods(&self) -> Vec<Pod<'_>> {
        let deployments = self.deployments().map(|d| {
            let template = &d.spec.template;
            (format!("Deployment/{}", d.metadata.name.as_deref().unwrap_or("?")), template, true)
        });
        let jobs = self.jobs().map(|j| {
            let template = &j.spec.as_ref().expect("job spec").template;
            (format!("Job/{}", j.metadata.name.as_deref().unwrap_or("?")), template, false)
        });
        deployments
            .chain(jobs)
            .map(|(owner, template, long_running)| {
                let meta = template.metadata.clone().unwrap_or_default();
                Pod {
                    owner,
                    labels: meta.labels.unwrap_or_default(),
                    annotations: meta.annotations.unwrap_or_default(),
                    spec: template.spec.as_ref().expect("pod spec"),
                    long_running,
                }
            })
            .collect()
    }
}

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("k8s")
}

/// `BLAZE_KUBECTL`, else `kubectl` on the PATH. Its built-in kustomize
/// renders the overlays exactly as `kubectl apply -k` would.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("BLAZE_KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kubectl not found on PATH (or in BLAZE_KUBECTL): run `make deps` to install it"))
}
