//! Config loading and its error messages, through real kubeconfig files and a
//! loopback HTTP server that plays the API server.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use forloop_cluster_k8s::{K8sLauncher, K8sOptions};
use forloop_core::ClusterLauncher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback "API server" answering a Job and an empty pod list; it keeps
/// each request's head (request line and headers).
async fn fake_api_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let body = if head.starts_with("GET /api/v1/") {
                    r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"p"},"status":{"phase":"Running"}}]}"#
                } else {
                    r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"videos"},"spec":{"parallelism":4,"template":{"spec":{"containers":[]}}},"status":{}}"#
                };
                log.lock().unwrap().push(head);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn kubeconfig(dir: &str, server: &str, user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("forloop-kubeconfig-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    let text = format!(
        "apiVersion: v1
kind: Config
current-context: test
clusters:
- name: test
  cluster:
    server: {server}
contexts:
- name: test
  context:
    cluster: test
    user: me
    namespace: batch
users:
- name: me
  user:
{user}
"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_kubeconfig_file_is_used_with_its_token() {
    let (url, seen) = fake_api_server().await;
    let path = kubeconfig("token", &url, "    token: secret-token-123");
    let launcher = K8sLauncher::connect(Some(&path), K8sOptions::new("batch"))
        .await
        .unwrap();
    // Debug shows where it points, never the credentials.
    let debug = format!("{launcher:?}");
    assert!(
        debug.contains(&url) && !debug.contains("secret-token-123"),
        "{debug}"
    );
    let state = launcher
        .state(&K8sLauncher::handle("videos"))
        .await
        .unwrap();
    assert_eq!((state.counts.desired, state.counts.running), (4, 1));
    let seen = seen.lock().unwrap();
    assert!(
        seen[0].starts_with("GET /apis/batch/v1/namespaces/batch/jobs/videos "),
        "{}",
        seen[0]
    );
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer secret-token-123"),
        "the kubeconfig's token was not sent: {}",
        seen[0]
    );
}

#[tokio::test]
async fn a_missing_auth_plugin_names_the_plugin_and_the_fix() {
    let (url, _) = fake_api_server().await;
    let user = "    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: forloop-no-such-auth-plugin
      provideClusterInfo: true
      interactiveMode: Never";
    let path = kubeconfig("plugin", &url, user);
    let error = match K8sLauncher::connect(Some(&path), K8sOptions::new("batch")).await {
        // The plugin runs at connect or at the first call, depending on kube.
        Err(error) => error.to_string(),
        Ok(launcher) => launcher
            .state(&K8sLauncher::handle("videos"))
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(
        error.contains("credential plugin") && error.contains("gke-gcloud-auth-plugin"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_server_says_where_it_tried() {
    // Bind and drop: nothing listens on this port now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let path = kubeconfig("unreachable", &url, "    token: t");
    let launcher = K8sLauncher::connect(Some(&path), K8sOptions::new("batch"))
        .await
        .unwrap();
    let error = launcher
        .state(&K8sLauncher::handle("videos"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("cannot reach http://127.0.0.1:{port}/"))
            && error.contains("kubectl config current-context"),
        "{error}"
    );
}

#[tokio::test]
async fn missing_and_broken_kubeconfigs_are_named() {
    let missing = std::env::temp_dir().join("forloop-no-such-kubeconfig");
    let error = K8sLauncher::connect(Some(&missing), K8sOptions::new("batch"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&missing.display().to_string()) && error.contains("get-credentials"),
        "{error}"
    );
    let broken =
        std::env::temp_dir().join(format!("forloop-broken-kubeconfig-{}", std::process::id()));
    std::fs::write(&broken, "clusters: [oops").unwrap();
    let error = K8sLauncher::connect(Some(&broken), K8sOptions::new("batch"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot use the kubeconfig"), "{error}");
}
