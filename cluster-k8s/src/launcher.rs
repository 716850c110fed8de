//! [`K8sLauncher`]: create, watch, scale and delete a run's Job.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::cluster::{LaunchOutcome, LaunchState};
use forloop_core::{
    ClusterLauncher, ErrorChain, LaunchError, LaunchHandle, LaunchSpec, WorkerCounts,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use crate::manifest;
use crate::options::{K8sOptions, Nodes};

/// Runs a launch's workers as a Kubernetes Job (see the crate docs).
#[derive(Clone)]
pub struct K8sLauncher {
    client: Client,
    options: K8sOptions,
    server: String,
}

impl std::fmt::Debug for K8sLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds credentials: show only where it points.
        f.debug_struct("K8sLauncher")
            .field("server", &self.server)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The message for a failed kubeconfig exec plugin (`gke-gcloud-auth-plugin`).
fn plugin_hint(text: &str) -> Option<String> {
    (text.contains("auth exec") || text.contains("exec-plugin")).then(|| {
        format!(
            "the kubeconfig's credential plugin failed ({text}). For GKE install \
             gke-gcloud-auth-plugin (`gcloud components install gke-gcloud-auth-plugin`, or the \
             Debian package google-cloud-cli-gke-gcloud-auth-plugin) and make sure it is on PATH"
        )
    })
}

impl K8sLauncher {
    /// A launcher on an existing client (tests pass a mock service's client).
    pub fn new(client: Client, options: K8sOptions) -> Self {
        Self {
            client,
            options,
            server: "the Kubernetes API server".to_string(),
        }
    }

    /// Connect the way kubectl does: `kubeconfig` if given, else KUBECONFIG
    /// or `~/.kube/config`, else the pod's in-cluster service account.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        options: K8sOptions,
    ) -> Result<Self, LaunchError> {
        const GET_CREDENTIALS: &str = "for GKE, `gcloud container clusters get-credentials \
                                       CLUSTER --location LOCATION` writes one";
        let mut config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    LaunchError::new(format!(
                        "cannot use the kubeconfig {}: {}; {GET_CREDENTIALS}",
                        path.display(),
                        ErrorChain(&e)
                    ))
                })?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| {
                        LaunchError::new(format!(
                            "cannot use the kubeconfig {}: {}; {GET_CREDENTIALS}",
                            path.display(),
                            ErrorChain(&e)
                        ))
                    })?
            }
            None => Config::infer().await.map_err(|e| {
                LaunchError::new(format!(
                    "no usable Kubernetes configuration: KUBECONFIG, ~/.kube/config and the \
                     in-cluster service account all failed ({}); {GET_CREDENTIALS}",
                    ErrorChain(&e)
                ))
            })?,
        };
        // kube has no read timeout by default; a hung server must not hang us.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(options.call_timeout);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| {
            let text = ErrorChain(&e).to_string();
            LaunchError::new(plugin_hint(&text).unwrap_or_else(|| {
                format!("cannot set up a client for the Kubernetes API server at {server}: {text}")
            }))
        })?;
        Ok(Self {
            client,
            options,
            server,
        })
    }

    /// The options this launcher was made with.
    pub fn options(&self) -> &K8sOptions {
        &self.options
    }

    /// The handle of the run named `name` (its Job's name).
    pub fn handle(name: &str) -> LaunchHandle {
        LaunchHandle(name.to_string())
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.options.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.options.namespace)
    }

    /// KEDA's custom resources (`ScaledJob`, `TriggerAuthentication`).
    fn keda(&self, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", kind);
        let plural = format!("{}s", kind.to_ascii_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        Api::namespaced_with(self.client.clone(), &self.options.namespace, &resource)
    }

    /// Google Managed Prometheus' `PodMonitoring` objects.
    fn monitoring(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("monitoring.googleapis.com", "v1", "PodMonitoring");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "podmonitorings");
        Api::namespaced_with(self.client.clone(), &self.options.namespace, &resource)
    }

    /// Create the run's PodMonitoring, where it has one, owned by `owner`
    /// (the Job, so it goes with it). A cluster without Managed Prometheus
    /// has no such kind: the workers still serve metrics, so that is a
    /// warning, not a failed launch.
    async fn create_pod_monitoring(
        &self,
        spec: &LaunchSpec,
        owner: Option<Value>,
    ) -> Result<(), LaunchError> {
        let Some(mut document) = manifest::pod_monitoring(spec, &self.options) else {
            return Ok(());
        };
        if let Some(owner) = owner {
            document["metadata"]["ownerReferences"] = json!([owner]);
        }
        let object: DynamicObject = serde_json::from_value(document).map_err(|e| {
            LaunchError::new(format!("internal error building the PodMonitoring: {e}"))
        })?;
        let what = format!(
            "creating PodMonitoring {} in namespace {}",
            spec.name, self.options.namespace
        );
        match self
            .call(
                &what,
                self.monitoring().create(&PostParams::default(), &object),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => {
                tracing::warn!(
                    "{what}: this cluster has no monitoring.googleapis.com/v1 PodMonitoring \
                     (Google Managed Prometheus is off); the workers serve metrics anyway, and \
                     their pods carry prometheus.io annotations for other scrapers"
                );
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Create the KEDA objects of a `--keda` launch; KEDA then starts
    /// one-worker Jobs while the queue has items.
    async fn launch_keda(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError> {
        for document in manifest::manifests(spec, &self.options)? {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            if kind == "PodMonitoring" {
                continue;
            }
            let object: DynamicObject = serde_json::from_value(document).map_err(|e| {
                LaunchError::new(format!("internal error building the {kind}: {e}"))
            })?;
            let what = format!(
                "creating KEDA {kind} {} in namespace {}",
                object.metadata.name.as_deref().unwrap_or_default(),
                self.options.namespace
            );
            let api = self.keda(&kind);
            match self
                .call(&what, api.create(&PostParams::default(), &object))
                .await
            {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {
                    return Err(LaunchError::new(format!(
                        "{what}: this cluster has no keda.sh/v1alpha1 {kind}: install KEDA \
                         (https://keda.sh/docs/deploy/) or launch without --keda"
                    )));
                }
                Err(error) => return Err(error),
            }
        }
        self.create_pod_monitoring(spec, None).await?;
        Ok(LaunchHandle(spec.name.clone()))
    }

    /// Delete `api`'s object `name`; gone already (or no such kind) is fine.
    /// Returns whether there was one.
    async fn delete_if_there<K>(
        &self,
        api: Api<K>,
        name: &str,
        what: &str,
    ) -> Result<bool, LaunchError>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let doing = format!("deleting {what} {name}");
        match self
            .call(&doing, api.delete(name, &DeleteParams::background()))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Run `call` with the per-call timeout; `what` says what it was doing.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LaunchError> {
        match tokio::time::timeout(self.options.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.explain(what, error)),
            Err(_) => Err(LaunchError::new(format!(
                "{} did not answer within {:?} while {what}",
                self.server, self.options.call_timeout
            ))),
        }
    }

    /// A kube error as a message that says what to do.
    fn explain(&self, what: &str, error: kube::Error) -> LaunchError {
        let namespace = &self.options.namespace;
        let message = match &error {
            kube::Error::Api(status) => {
                let said = &status.message;
                match status.code {
                    401 => format!(
                        "{what}: the API server rejected your credentials ({said}); refresh \
                         them (for GKE: `gcloud auth login` and `gcloud container clusters \
                         get-credentials`)"
                    ),
                    403 => format!(
                        "{what}: forbidden ({said}). Your Kubernetes identity needs permission to \
                         create, get, patch and delete jobs and to list pods in namespace \
                         {namespace} (on GKE the role roles/container.developer grants it)"
                    ),
                    404 => format!("{what}: not found ({said})"),
                    409 => format!(
                        "{what}: it already exists ({said}). A run of this name is still there \
                         or finished less than its TTL ago: wait for it, delete it (`kubectl \
                         delete job NAME -n {namespace}`), or use another --name"
                    ),
                    422 => format!("{what}: the API server refused the manifest ({said})"),
                    code => format!("{what}: the API server answered {code} ({said})"),
                }
            }
            other => {
                let text = ErrorChain(other).to_string();
                if let Some(hint) = plugin_hint(&text) {
                    format!("{what}: {hint}")
                } else {
                    format!(
                        "{what}: cannot reach {} ({text}); check that the cluster is up and \
                         that your kubeconfig's current context is the right one (`kubectl \
                         config current-context`)",
                        self.server
                    )
                }
            }
        };
        LaunchError::new(message).with_source(error)
    }

    /// The Job and its pods.
    async fn job_state(&self, handle: &LaunchHandle) -> Result<LaunchState, LaunchError> {
        let name = &handle.0;
        let namespace = &self.options.namespace;
        let job = self
            .call(
                &format!("reading Job {name} in namespace {namespace}"),
                self.jobs().get(name),
            )
            .await?;
        let spec = job.spec.as_ref();
        let desired = spec.and_then(|s| s.parallelism).unwrap_or(1).max(0) as u32;
        // The Job's own selector (its controller uid) excludes pods of an
        // older Job of the same name.
        let selector = spec
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| format!("batch.kubernetes.io/job-name={name}"));
        let pods = self
            .call(
                &format!("listing the pods of Job {name}"),
                self.pods().list(&ListParams::default().labels(&selector)),
            )
            .await?;
        let mut counts = WorkerCounts {
            desired,
            ..WorkerCounts::default()
        };
        for pod in &pods.items {
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            match phase {
                "Succeeded" => counts.succeeded += 1,
                "Failed" => {
                    let disrupted =
                        status
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|conditions| {
                                conditions
                                    .iter()
                                    .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
                            })
                            || matches!(
                                status.and_then(|s| s.reason.as_deref()),
                                Some("Evicted" | "Shutdown" | "NodeShutdown" | "Terminated")
                            );
                    if disrupted {
                        counts.disrupted += 1;
                    } else {
                        counts.failed += 1;
                    }
                }
                _ => counts.running += 1,
            }
        }
        let outcome = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| {
                conditions.iter().find_map(|c| {
                    if c.status != "True" {
                        return None;
                    }
                    match c.type_.as_str() {
                        "Complete" => Some(LaunchOutcome::Complete),
                        "Failed" => Some(LaunchOutcome::Failed {
                            reason: c.reason.clone().unwrap_or_default(),
                            message: c.message.clone().unwrap_or_default(),
                        }),
                        _ => None,
                    }
                })
            });
        if outcome.is_none() && desired > 0 {
            counts.running = counts.running.max(1);
        }
        Ok(LaunchState { counts, outcome })
    }
}

impl K8sLauncher {
    /// Make room for a new run named `handle`: nothing there is fine; a
    /// finished Job of an earlier run (kept for its TTL) is deleted; a Job
    /// still running is an error that says what to do.
    pub async fn ensure_free(&self, handle: &LaunchHandle) -> Result<(), LaunchError> {
        match self.job_state(handle).await {
            Ok(LaunchState {
                outcome: Some(_), ..
            }) => {
                tracing::info!(job = %handle, "deleting the finished Job of an earlier run of this name");
                self.teardown(handle).await
            }
            Ok(LaunchState { counts, .. }) => Err(LaunchError::new(format!(
                "a run named {handle} is still going in namespace {} ({} workers running): \
                 watch it with `runner --name {handle} cluster status`, stop it with \
                 `runner --name {handle} cluster teardown`, or pick another --name",
                self.options.namespace, counts.running
            ))),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Whether `error` came from a 404 answer.
fn is_not_found(error: &LaunchError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<kube::Error>())
        .is_some_and(|e| matches!(e, kube::Error::Api(status) if status.code == 404))
}

/// GKE gives a spot or preemptible node's pods about this long after SIGTERM.
const SPOT_NOTICE: Duration = Duration::from_secs(15);

#[async_trait]
impl ClusterLauncher for K8sLauncher {
    /// The manifests render and validate; a spot launch whose grace is
    /// longer than the spot notice is warned about; a Job of the same name
    /// still running is refused, a finished one deleted (a `--keda` launch
    /// is refused by the API server if its `ScaledJob` is there).
    async fn check(&self, spec: &LaunchSpec) -> Result<(), LaunchError> {
        manifest::manifests(spec, &self.options)?;
        if self.options.nodes != Nodes::Any && spec.grace > SPOT_NOTICE {
            tracing::warn!(
                "--grace plus {}s to exit is {}, but a preempted spot node gives pods about {}: \
                 items still running then come back when their lease runs out",
                crate::plug::EXIT_MARGIN.as_secs(),
                humantime::format_duration(spec.grace),
                humantime::format_duration(SPOT_NOTICE)
            );
        }
        if self.options.keda.is_some() {
            return Ok(());
        }
        self.ensure_free(&Self::handle(&spec.name)).await
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError> {
        if self.options.keda.is_some() {
            return self.launch_keda(spec).await;
        }
        let job: Job = serde_json::from_value(manifest::job(spec, &self.options)?)
            .map_err(|e| LaunchError::new(format!("internal error building the Job: {e}")))?;
        let created = self
            .call(
                &format!(
                    "creating Job {} in namespace {}",
                    spec.name, self.options.namespace
                ),
                self.jobs().create(&PostParams::default(), &job),
            )
            .await?;
        let name = created.metadata.name.unwrap_or_else(|| spec.name.clone());
        tracing::info!(job = %name, namespace = %self.options.namespace, workers = spec.workers, "created Job");
        let owner = created
            .metadata
            .uid
            .map(|uid| json!({"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}));
        self.create_pod_monitoring(spec, owner).await?;
        Ok(LaunchHandle(name))
    }

    async fn state(&self, handle: &LaunchHandle) -> Result<LaunchState, LaunchError> {
        self.job_state(handle).await
    }

    async fn scale(&self, handle: &LaunchHandle, workers: u32) -> Result<(), LaunchError> {
        let patch = json!({"spec": {"parallelism": workers}});
        self.call(
            &format!("scaling Job {} to {workers} workers", handle.0),
            self.jobs()
                .patch(&handle.0, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        Ok(())
    }

    async fn teardown(&self, handle: &LaunchHandle) -> Result<(), LaunchError> {
        // Background propagation: the Job goes now, its pods get SIGTERM and
        // their grace period, so running items are handed back.
        let name = &handle.0;
        if self.options.metrics_port.is_some() {
            self.delete_if_there(self.monitoring(), name, "PodMonitoring")
                .await?;
        }
        if self.delete_if_there(self.jobs(), name, "Job").await? {
            return Ok(());
        }
        // No Job: perhaps a --keda launch, whose ScaledJob owns its Jobs.
        self.delete_if_there(self.keda("ScaledJob"), name, "KEDA ScaledJob")
            .await?;
        self.delete_if_there(
            self.keda("TriggerAuthentication"),
            &format!("{name}-keda"),
            "KEDA TriggerAuthentication",
        )
        .await?;
        Ok(())
    }

    fn render(&self, spec: &LaunchSpec) -> Result<String, LaunchError> {
        Ok(crate::to_yaml(&manifest::manifests(spec, &self.options)?))
    }

    fn persists(&self) -> bool {
        true
    }

    /// A KEDA `ScaledJob` keeps starting Jobs as items arrive.
    fn ends(&self) -> bool {
        self.options.keda.is_none()
    }

    fn name_of(&self, handle: &LaunchHandle) -> String {
        format!("Job {handle}")
    }

    fn describe_workers(&self, counts: &WorkerCounts) -> String {
        format!(
            "workers: {} running, {} exited 0, {} failed, {} preempted or evicted",
            counts.running, counts.succeeded, counts.failed, counts.disrupted
        )
    }

    fn describe_outcome(&self, outcome: &LaunchOutcome) -> String {
        match outcome {
            LaunchOutcome::Complete => "the Job completed".to_string(),
            LaunchOutcome::Failed { reason, message } => {
                format!("the Job failed: {reason}: {message}")
            }
        }
    }

    fn launched(&self, handle: &LaunchHandle, spec: &LaunchSpec, cluster: &str) -> Option<String> {
        let namespace = &self.options.namespace;
        Some(if self.options.keda.is_some() {
            format!(
                "created KEDA ScaledJob {handle} in namespace {namespace}: KEDA starts up to {} \
                 one-worker Jobs while the queue has items. Submit with `runner submit`; remove \
                 it with `runner --cluster {cluster} --name {handle} cluster teardown`",
                spec.workers
            )
        } else {
            format!(
                "created Job {handle} in namespace {namespace} with {} workers",
                spec.workers
            )
        })
    }

    fn follow_hint(&self, handle: &LaunchHandle, cluster: &str) -> String {
        format!(
            "follow it with `runner --cluster {cluster} --name {handle} cluster status --namespace {}`",
            self.options.namespace
        )
    }
}

/// Rendering needs no client: the same manifests, for `--dry-run` without a cluster.
impl K8sOptions {
    /// The manifests of `spec` as YAML, as [`ClusterLauncher::render`] gives them.
    pub fn render(&self, spec: &LaunchSpec) -> Result<String, LaunchError> {
        Ok(crate::to_yaml(&manifest::manifests(spec, self)?))
    }
}
