//! forloop's Kubernetes launcher: the workers of a run as one work-queue
//! `batch/v1` Job, made for GKE spot nodes. [`K8sCluster`] is the plug the
//! runner registers for `--cluster gke` and `--cluster k8s`, as a queue
//! crate registers its driver; [`K8sLauncher`] starts and follows the Job.
//!
//! # The Job, and why each field is there
//!
//! | field | value | why |
//! | --- | --- | --- |
//! | `parallelism` | `--workers` | N pods pull from the queue at once |
//! | `completions` | unset | the work-queue pattern: the Job is complete once one pod exits 0 and the rest have ended; a worker exits 0 only when the queue is drained |
//! | `restartPolicy` | `Never` | a failed pod is replaced by a new one (and counted), not restarted in place |
//! | `shareProcessNamespace` | `true` | the container's `command` bypasses the image's init (tini), so the pod's pause process is PID 1 and reaps orphaned grandchildren of commands |
//! | `podFailurePolicy` | 1. `Ignore` on `DisruptionTarget` = `"True"`; 2. `FailJob` on exit code 2; 3. `FailJob` on exit code 3 | a spot preemption or eviction is not the work's fault and must not use up `backoffLimit`; exit 2 is a usage error that no retry fixes; exit 3 is a job halted past its `--max-dead` (the Job fails at once, its other pods are stopped and hand their items back; `--resume` continues it) |
//! | `backoffLimit` | `--backoff-limit` | real worker failures (exit 1: the queue is unreachable, ...) end the Job after this many |
//! | `ttlSecondsAfterFinished` | `--ttl` | a finished Job and its pods are deleted, so nothing is left behind |
//! | `activeDeadlineSeconds` | `--active-deadline` | optional hard stop for the whole run |
//! | `nodeSelector` + toleration | `cloud.google.com/gke-spot: "true"` (or `gke-preemptible` with `--preemptible`) | spot nodes, which the cluster autoscaler scales to zero afterwards |
//! | `terminationGracePeriodSeconds` | the worker's `--grace` + 5 s | time to give running items back after SIGTERM; spot nodes give pods about 15 s |
//! | `topologySpreadConstraints` | hostname and zone, `ScheduleAnyway` | one preempted node or zone takes few workers with it |
//! | resources | `--cpu`, `--memory`; memory limit = request | a worker is never OOM-killed for using what it asked for |
//! | `serviceAccountName` | `--service-account` | Workload Identity: Google credentials come from the platform, never from a key file or an env var |
//! | security | non-root (uid 10001), read-only root, no privilege escalation, all capabilities dropped, `RuntimeDefault` seccomp; an `emptyDir` at `/tmp` | the item's command runs with as little as it needs |
//!
//! The container runs `runner work -- CMD`; the queue and worker settings
//! travel as `FORLOOP_*` environment variables, which `runner` reads like its
//! flags. Values that look like credentials are refused: pass them from a
//! Secret (`K8sOptions::env_from_secrets`).
//!
//! # What a pod's life looks like
//!
//! - Drained: the worker exits 0. Kubernetes starts no new pods once one has
//!   succeeded, the others drain too, the Job completes, the TTL deletes it.
//! - Preempted: the node's graceful shutdown sends SIGTERM; the worker stops
//!   pulling, gives its running items back at once (nack, delay 0) and exits
//!   143. The pod carries `DisruptionTarget`, so the policy ignores it and the
//!   Job makes a replacement on a node that is left.
//! - Failed (exit 1): counted against `backoffLimit`, replaced.
//!
//! # KEDA
//!
//! With [`K8sOptions::keda`] the launch is a KEDA `ScaledJob` instead of a Job
//! (plus a `TriggerAuthentication` for Pub/Sub): KEDA starts one-worker Jobs of
//! the same pod template while the queue has items, up to the worker count, and
//! keeps doing so as new items arrive. The trigger follows the queue: `redis`
//! on the ready list, `aws-sqs-queue`, or for Pub/Sub the `prometheus` trigger
//! on Cloud Monitoring's PromQL API with Workload Identity (KEDA deprecated its
//! `gcp-pubsub` scaler). Teardown deletes the `ScaledJob`, which owns its Jobs.
//!
//! # Talking to the API server
//!
//! [`K8sLauncher::connect`] infers the config like kubectl does (KUBECONFIG,
//! `~/.kube/config`, or in-cluster), including exec plugins such as
//! `gke-gcloud-auth-plugin`. kube has no default read timeout, so every call
//! here has one ([`K8sOptions::call_timeout`]). Failures become messages that
//! say what to do: no config, a missing plugin, an unreachable server, 403
//! (which permission), 409 (a Job of that name is still there).
//!
//! This crate enables no `v1_*` feature of k8s-openapi; the binary that links
//! it picks one. Manifests are written as JSON and read into the typed
//! objects, so the same code serves every Kubernetes version.

#![deny(missing_docs)]

mod launcher;
mod manifest;
mod options;
mod plug;
mod yaml;

pub use forloop_core::ScaleTrigger;
pub use launcher::K8sLauncher;
pub use manifest::{RUN_LABEL, has_url_secret, manifests, validate_name};
pub use options::{K8sOptions, Nodes};
pub use plug::K8sCluster;
pub use yaml::to_yaml;
