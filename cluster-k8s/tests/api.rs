//! The exact requests launch / status / scale / teardown send, and how the
//! API server's refusals surface, against kube's `tower_test` mock pair
//! (no API server can be installed here).

use std::time::Duration;

use forloop_cluster_k8s::{K8sLauncher, K8sOptions, ScaleTrigger};
use forloop_core::cluster::LaunchOutcome;
use forloop_core::{ClusterLauncher, LaunchHandle, LaunchSpec};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn mock_launcher(options: K8sOptions) -> (K8sLauncher, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (K8sLauncher::new(client, options), handle)
}

fn spec() -> LaunchSpec {
    LaunchSpec::new(
        "videos",
        3,
        vec![
            "runner".into(),
            "work".into(),
            "--".into(),
            "echo".into(),
            "{}".into(),
        ],
    )
    .with_image("registry.example/forloop-worker:1")
    .with_env("FORLOOP_QUEUE", "pubsub://proj/videos")
}

/// One request the launcher sent: method, path and query, JSON body.
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

/// Take the next request and answer it with `status` and `answer`.
async fn answer(handle: &mut Handle, status: u16, answer: Value) -> Seen {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the launcher sent no request within 10 s")
        .expect("the client was dropped before sending a request");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    respond.send_response(
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    Seen { method, uri, body }
}

fn status_answer(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "code": code, "reason": reason, "message": message,
    })
}

fn job_answer(name: &str, status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "batch"},
        "spec": {
            "parallelism": 3,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}},
            "template": {"spec": {"containers": []}},
        },
        "status": status,
    })
}

fn pod(phase: &str, extra: Value) -> Value {
    let mut status = json!({"phase": phase});
    if let Value::Object(map) = extra {
        for (k, v) in map {
            status[k] = v;
        }
    }
    json!({"metadata": {"name": format!("videos-{phase}")}, "status": status})
}

#[tokio::test]
async fn launch_posts_the_job_and_returns_its_name() {
    let (launcher, mut handle) =
        mock_launcher(K8sOptions::new("batch").with_service_account("forloop"));
    let call = tokio::spawn(async move { launcher.launch(&spec()).await });
    let seen = answer(&mut handle, 201, job_answer("videos", json!({}))).await;
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/apis/batch/v1/namespaces/batch/jobs?");
    let job = &seen.body;
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["name"], "videos");
    assert_eq!(job["spec"]["parallelism"], 3);
    assert!(job["spec"].get("completions").is_none());
    assert_eq!(
        job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"],
        "DisruptionTarget"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "forloop");
    assert_eq!(
        pod["containers"][0]["command"],
        json!(["runner", "work", "--", "echo", "{}"])
    );
    assert_eq!(
        pod["containers"][0]["env"],
        json!([{"name": "FORLOOP_QUEUE", "value": "pubsub://proj/videos"}])
    );
    let handle = call.await.unwrap().unwrap();
    assert_eq!(handle, LaunchHandle("videos".into()));
}

#[tokio::test]
async fn launch_refusals_say_what_to_do() {
    for (code, reason, said, expect) in [
        (
            409,
            "AlreadyExists",
            "jobs.batch \"videos\" already exists",
            "kubectl delete job NAME -n batch",
        ),
        (
            403,
            "Forbidden",
            "jobs.batch is forbidden: User \"me\" cannot create",
            "roles/container.developer",
        ),
        (
            404,
            "NotFound",
            "namespaces \"batch\" not found",
            "namespaces \"batch\" not found",
        ),
        (401, "Unauthorized", "Unauthorized", "get-credentials"),
    ] {
        let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
        let call = tokio::spawn(async move { launcher.launch(&spec()).await });
        answer(&mut handle, code, status_answer(code, reason, said)).await;
        let error = call.await.unwrap().unwrap_err().to_string();
        assert!(
            error.contains("creating Job videos in namespace batch") && error.contains(expect),
            "{code}: {error}"
        );
    }
}

#[tokio::test]
async fn invalid_launches_send_nothing() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let bad = spec().with_env("REDIS_PASSWORD", "hunter2");
    let error = launcher.launch(&bad).await.unwrap_err().to_string();
    assert!(
        error.contains("REDIS_PASSWORD") && !error.contains("hunter2"),
        "{error}"
    );
    drop(launcher);
    assert!(
        handle.next_request().await.is_none(),
        "a request went out for an invalid launch"
    );
}

#[tokio::test]
async fn status_reads_the_job_then_its_pods_by_controller_uid() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.state(&K8sLauncher::handle("videos")).await });
    let seen = answer(&mut handle, 200, job_answer("videos", json!({"active": 2}))).await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.uri, "/apis/batch/v1/namespaces/batch/jobs/videos");
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        pod("Running", json!({})),
        pod("Pending", json!({})),
        pod("Succeeded", json!({})),
        pod("Failed", json!({"conditions": [{"type": "DisruptionTarget", "status": "True"}]})),
        pod("Failed", json!({"reason": "Evicted"})),
        pod("Failed", json!({"conditions": [{"type": "Ready", "status": "False"}]})),
    ]});
    let seen = answer(&mut handle, 200, pods).await;
    assert_eq!(seen.method, Method::GET);
    assert_eq!(
        seen.uri,
        "/api/v1/namespaces/batch/pods?&labelSelector=batch.kubernetes.io%2Fcontroller-uid%3Du-1"
    );
    let state = call.await.unwrap().unwrap();
    assert_eq!(state.outcome, None);
    let c = state.counts;
    assert_eq!(
        (c.desired, c.running, c.succeeded, c.disrupted, c.failed),
        (3, 2, 1, 2, 1)
    );
}

#[tokio::test]
async fn status_reports_how_the_job_ended() {
    for (conditions, expected) in [
        (
            json!([{"type": "Complete", "status": "True"}]),
            Some(LaunchOutcome::Complete),
        ),
        (
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
            Some(LaunchOutcome::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            }),
        ),
        (json!([{"type": "Suspended", "status": "True"}]), None),
    ] {
        let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
        let call =
            tokio::spawn(async move { launcher.state(&K8sLauncher::handle("videos")).await });
        answer(
            &mut handle,
            200,
            job_answer("videos", json!({"conditions": conditions})),
        )
        .await;
        answer(
            &mut handle,
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
        )
        .await;
        let state = call.await.unwrap().unwrap();
        assert_eq!(state.outcome, expected);
        // Not finished and no pod yet: the Job will start some.
        let running = if expected.is_none() { 1 } else { 0 };
        assert_eq!(state.counts.running, running);
    }
}

#[tokio::test]
async fn status_of_a_missing_job_says_so() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.state(&K8sLauncher::handle("videos")).await });
    answer(
        &mut handle,
        404,
        status_answer(404, "NotFound", "jobs.batch \"videos\" not found"),
    )
    .await;
    let error = call.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("reading Job videos in namespace batch") && error.contains("not found"),
        "{error}"
    );
}

#[tokio::test]
async fn scale_patches_parallelism_only() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.scale(&K8sLauncher::handle("videos"), 7).await });
    let seen = answer(&mut handle, 200, job_answer("videos", json!({}))).await;
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.uri, "/apis/batch/v1/namespaces/batch/jobs/videos?");
    assert_eq!(seen.body, json!({"spec": {"parallelism": 7}}));
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn teardown_deletes_the_job_in_the_background() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.teardown(&K8sLauncher::handle("videos")).await });
    let seen = answer(&mut handle, 200, job_answer("videos", json!({}))).await;
    assert_eq!(seen.method, Method::DELETE);
    assert_eq!(seen.uri, "/apis/batch/v1/namespaces/batch/jobs/videos?");
    assert_eq!(seen.body["propagationPolicy"], "Background");
    call.await.unwrap().unwrap();
    assert!(
        handle.next_request().await.is_none(),
        "more than one request"
    );
}

#[tokio::test]
async fn teardown_without_a_job_removes_a_keda_launch_and_gone_is_fine() {
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.teardown(&K8sLauncher::handle("videos")).await });
    let gone = status_answer(404, "NotFound", "not found");
    let job = answer(&mut handle, 404, gone.clone()).await;
    assert_eq!(job.uri, "/apis/batch/v1/namespaces/batch/jobs/videos?");
    let scaled = answer(&mut handle, 200, json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "videos"}})).await;
    assert_eq!(scaled.method, Method::DELETE);
    assert_eq!(
        scaled.uri,
        "/apis/keda.sh/v1alpha1/namespaces/batch/scaledjobs/videos?"
    );
    assert_eq!(scaled.body["propagationPolicy"], "Background");
    let auth = answer(&mut handle, 404, gone).await;
    assert_eq!(
        auth.uri,
        "/apis/keda.sh/v1alpha1/namespaces/batch/triggerauthentications/videos-keda?"
    );
    call.await.unwrap().unwrap();

    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call = tokio::spawn(async move { launcher.teardown(&K8sLauncher::handle("videos")).await });
    answer(
        &mut handle,
        403,
        status_answer(403, "Forbidden", "cannot delete"),
    )
    .await;
    let error = call.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("deleting Job videos") && error.contains("forbidden"),
        "{error}"
    );
}

#[tokio::test]
async fn a_keda_launch_creates_its_trigger_auth_then_the_scaled_job() {
    let options = K8sOptions::new("batch").with_keda(Some(
        ScaleTrigger::new("prometheus")
            .with("query", "sum(x)")
            .with_pod_identity("gcp"),
    ));
    let (launcher, mut handle) = mock_launcher(options.clone());
    let call = tokio::spawn(async move { launcher.launch(&spec()).await });
    let auth = answer(&mut handle, 201, json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "videos-keda"}})).await;
    assert_eq!(auth.method, Method::POST);
    assert_eq!(
        auth.uri,
        "/apis/keda.sh/v1alpha1/namespaces/batch/triggerauthentications?"
    );
    assert_eq!(auth.body["spec"]["podIdentity"]["provider"], "gcp");
    let scaled = answer(&mut handle, 201, json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "videos"}})).await;
    assert_eq!(
        scaled.uri,
        "/apis/keda.sh/v1alpha1/namespaces/batch/scaledjobs?"
    );
    assert_eq!(scaled.body["spec"]["maxReplicaCount"], 3);
    assert_eq!(scaled.body["spec"]["triggers"][0]["type"], "prometheus");
    assert_eq!(
        scaled.body["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["command"][1],
        "work"
    );
    call.await.unwrap().unwrap();

    // Without KEDA in the cluster, the API server has no such resource.
    let (launcher, mut handle) = mock_launcher(options);
    let call = tokio::spawn(async move { launcher.launch(&spec()).await });
    answer(
        &mut handle,
        404,
        status_answer(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
    .await;
    let error = call.await.unwrap().unwrap_err().to_string();
    assert!(error.contains("install KEDA"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_with_a_message() {
    let options = K8sOptions::new("batch").with_call_timeout(Duration::from_secs(5));
    let (launcher, mut handle) = mock_launcher(options);
    let call = tokio::spawn(async move { launcher.state(&K8sLauncher::handle("videos")).await });
    // Take the request and never answer it.
    let _pending = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("did not answer within 5s while reading Job videos"),
        "{error}"
    );
}

#[tokio::test]
async fn ensure_free_accepts_no_job_deletes_a_finished_one_and_refuses_a_running_one() {
    // No Job of that name: one GET, nothing else.
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call =
        tokio::spawn(async move { launcher.ensure_free(&K8sLauncher::handle("videos")).await });
    answer(
        &mut handle,
        404,
        status_answer(404, "NotFound", "not found"),
    )
    .await;
    call.await.unwrap().unwrap();
    assert!(handle.next_request().await.is_none());

    // A finished Job of an earlier run: read, then deleted.
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call =
        tokio::spawn(async move { launcher.ensure_free(&K8sLauncher::handle("videos")).await });
    let done = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    answer(&mut handle, 200, job_answer("videos", done)).await;
    let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []});
    answer(&mut handle, 200, pods.clone()).await;
    let seen = answer(&mut handle, 200, job_answer("videos", json!({}))).await;
    assert_eq!(seen.method, Method::DELETE);
    call.await.unwrap().unwrap();

    // A running one: refused, nothing deleted.
    let (launcher, mut handle) = mock_launcher(K8sOptions::new("batch"));
    let call =
        tokio::spawn(async move { launcher.ensure_free(&K8sLauncher::handle("videos")).await });
    answer(&mut handle, 200, job_answer("videos", json!({"active": 3}))).await;
    answer(&mut handle, 200, pods).await;
    let error = call.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("still going") && error.contains("cluster teardown"),
        "{error}"
    );
    assert!(
        handle.next_request().await.is_none(),
        "it sent more requests"
    );
}
