//! A stand-in for a Kubernetes cluster, since no API server can be installed
//! here: a loopback HTTP server that speaks the few Job and Pod calls the
//! launcher makes, and a "kubelet" that runs each pod of a created Job as a
//! local process, with the container's command and environment from the
//! manifest (the image's `runner` replaced by this build's binary).
//!
//! So a test of `runner --cluster gke run` checks what a cluster would do
//! with the manifest: that its command and env really make working workers.
//! It is not Kubernetes: no scheduling, no replacement of failed pods.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::scenarios::signal;

struct JobRun {
    manifest: Value,
    uid: String,
    pods: Vec<Child>,
    exits: Vec<Option<i32>>,
    /// Pods ended by a (fake) preemption: Kubernetes marks them
    /// `DisruptionTarget`, and the Job's policy does not count them.
    disrupted: Vec<bool>,
}

impl JobRun {
    fn poll(&mut self) {
        for (pod, exit) in self.pods.iter_mut().zip(self.exits.iter_mut()) {
            if exit.is_none()
                && let Ok(Some(status)) = pod.try_wait()
            {
                use std::os::unix::process::ExitStatusExt;
                *exit = Some(status.code().unwrap_or(128 + status.signal().unwrap_or(0)));
            }
        }
    }

    fn object(&mut self) -> Value {
        self.poll();
        let mut job = self.manifest.clone();
        job["metadata"]["uid"] = json!(self.uid);
        job["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": self.uid}});
        let active = self.exits.iter().filter(|e| e.is_none()).count();
        let failed = (0..self.exits.len())
            .filter(|&i| !self.disrupted[i] && !matches!(self.exits[i], None | Some(0)))
            .count();
        let succeeded = self.exits.iter().filter(|e| **e == Some(0)).count();
        let mut status = json!({"active": active, "succeeded": succeeded, "failed": failed});
        if active == 0 {
            status["conditions"] = if succeeded > 0 {
                json!([{"type": "Complete", "status": "True"}])
            } else {
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "every pod failed"}])
            };
        }
        job["status"] = status;
        job
    }

    fn pod_list(&mut self) -> Value {
        self.poll();
        let items: Vec<Value> = self
            .exits
            .iter()
            .enumerate()
            .map(|(i, exit)| {
                let phase = match exit {
                    None => "Running",
                    Some(0) => "Succeeded",
                    Some(_) => "Failed",
                };
                let mut status = json!({"phase": phase});
                if self.disrupted[i] {
                    status["conditions"] =
                        json!([{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]);
                }
                json!({"metadata": {"name": format!("pod-{i}")}, "status": status})
            })
            .collect();
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
    }

    fn terminate(&mut self) {
        for pod in &self.pods {
            signal(pod.id(), libc::SIGTERM);
        }
    }
}

#[derive(Default)]
struct State {
    kubelet: Option<Arc<Kubelet>>,
    jobs: BTreeMap<String, JobRun>,
    requests: Vec<String>,
    created: Vec<Value>,
    next_uid: u64,
}

/// The fake cluster; dropping it kills every pod process.
pub struct FakeCluster {
    kubeconfig: PathBuf,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl FakeCluster {
    /// Start the API server; pods run `runner` as `runner_bin`, with this
    /// process's environment (minus `FORLOOP_*`), the manifest's env, and
    /// then `pod_env` over it. Their output goes to `dir/pod-N.log`.
    pub fn start(runner_bin: PathBuf, dir: &Path, pod_env: &[(&str, &str)]) -> FakeCluster {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n"
            ),
        )
        .unwrap();
        let kubelet = Arc::new(Kubelet {
            runner_bin,
            dir: dir.to_path_buf(),
            pod_env: pod_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        let state = Arc::new(Mutex::new(State {
            kubelet: Some(Arc::clone(&kubelet)),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = Arc::clone(&shared);
                let kubelet = Arc::clone(&kubelet);
                std::thread::spawn(move || serve(stream, &state, &kubelet));
            }
        });
        FakeCluster { kubeconfig, state }
    }

    /// A kubeconfig file that points at this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every Job manifest created so far, as sent.
    pub fn created(&self) -> Vec<Value> {
        self.state.lock().unwrap().created.clone()
    }

    /// Preempt a running pod of Job `name` the way a spot node's graceful
    /// shutdown does: SIGTERM, the pod marked `DisruptionTarget`, and (the
    /// Job's policy ignoring it) a replacement pod started. Returns whether
    /// a running pod was found.
    pub fn preempt(&self, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        let kubelet = state.kubelet.clone().unwrap();
        let Some(run) = state.jobs.get_mut(name) else {
            return false;
        };
        run.poll();
        let Some(i) = run.exits.iter().position(Option::is_none) else {
            return false;
        };
        signal(run.pods[i].id(), libc::SIGTERM);
        run.disrupted[i] = true;
        let index = run.pods.len();
        let pod = kubelet.spawn_pod(&run.manifest, &run.uid, index);
        run.pods.push(pod);
        run.exits.push(None);
        run.disrupted.push(false);
        true
    }

    /// Jobs that exist now.
    pub fn jobs(&self) -> Vec<String> {
        self.state.lock().unwrap().jobs.keys().cloned().collect()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        for job in state.jobs.values_mut() {
            for pod in &mut job.pods {
                let _ = pod.kill();
                let _ = pod.wait();
            }
        }
    }
}

struct Kubelet {
    runner_bin: PathBuf,
    dir: PathBuf,
    pod_env: Vec<(String, String)>,
}

impl Kubelet {
    fn run_pods(&self, job: &Value, uid: &str) -> Vec<Child> {
        let parallelism = job["spec"]["parallelism"].as_u64().unwrap_or(1);
        (0..parallelism as usize)
            .map(|i| self.spawn_pod(job, uid, i))
            .collect()
    }

    /// Start pod `i` of `job` as a process.
    fn spawn_pod(&self, job: &Value, uid: &str, i: usize) -> Child {
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let argv: Vec<String> = container["command"]
            .as_array()
            .expect("container command")
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let program = if argv[0] == "runner" {
            self.runner_bin.clone()
        } else {
            PathBuf::from(&argv[0])
        };
        let mut command = Command::new(program);
        command.args(&argv[1..]);
        for (key, _) in std::env::vars() {
            if key.starts_with("FORLOOP_") {
                command.env_remove(key);
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            command.env(
                var["name"].as_str().unwrap(),
                var["value"].as_str().unwrap_or(""),
            );
        }
        // The test's own variables win, so a test can bend a pod.
        for (key, value) in &self.pod_env {
            command.env(key, value);
        }
        let log = std::fs::File::create(self.dir.join(format!("pod-{uid}-{i}.log"))).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command.spawn().expect("start a pod process")
    }
}

fn respond(stream: &mut TcpStream, code: u16, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn job_not_found(name: &str) -> Value {
    status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"))
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, kubelet: &Kubelet) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = target.split('?').next().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut state = state.lock().unwrap();
    state.requests.push(format!("{method} {path}"));
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["apis", "batch", "v1", "namespaces", _, "jobs"]) => {
            let job: Value = serde_json::from_slice(&body).unwrap();
            let name = job["metadata"]["name"].as_str().unwrap().to_string();
            if state.jobs.contains_key(&name) {
                let said = format!("jobs.batch \"{name}\" already exists");
                return respond(&mut stream, 409, &status(409, "AlreadyExists", &said));
            }
            state.created.push(job.clone());
            state.next_uid += 1;
            let uid = format!("uid-{}", state.next_uid);
            let pods = kubelet.run_pods(&job, &uid);
            let mut run = JobRun {
                manifest: job,
                uid,
                exits: vec![None; pods.len()],
                disrupted: vec![false; pods.len()],
                pods,
            };
            let object = run.object();
            state.jobs.insert(name, run);
            respond(&mut stream, 201, &object);
        }
        ("GET", ["apis", "batch", "v1", "namespaces", _, "jobs", name]) => {
            match state.jobs.get_mut(*name) {
                Some(run) => {
                    let object = run.object();
                    respond(&mut stream, 200, &object)
                }
                None => respond(&mut stream, 404, &job_not_found(name)),
            }
        }
        ("DELETE", ["apis", "batch", "v1", "namespaces", _, "jobs", name]) => {
            match state.jobs.remove(*name) {
                Some(mut run) => {
                    run.terminate();
                    let object = run.object();
                    // The pods end on their own (SIGTERM); reap them in the background.
                    std::thread::spawn(move || {
                        for mut pod in run.pods {
                            let _ = pod.wait();
                        }
                    });
                    respond(&mut stream, 200, &object)
                }
                None => respond(&mut stream, 404, &job_not_found(name)),
            }
        }
        ("PATCH", ["apis", "batch", "v1", "namespaces", _, "jobs", name]) => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            match state.jobs.get_mut(*name) {
                Some(run) => {
                    // Only parallelism is patched; the fake starts no new pods.
                    if let Some(n) = patch["spec"]["parallelism"].as_u64() {
                        run.manifest["spec"]["parallelism"] = json!(n);
                    }
                    let object = run.object();
                    respond(&mut stream, 200, &object)
                }
                None => respond(&mut stream, 404, &job_not_found(name)),
            }
        }
        ("GET", ["api", "v1", "namespaces", _, "pods"]) => {
            let uid = target
                .split("controller-uid%3D")
                .nth(1)
                .unwrap_or("")
                .split('&')
                .next()
                .unwrap_or("")
                .to_string();
            let list = state
                .jobs
                .values_mut()
                .find(|run| run.uid == uid)
                .map(JobRun::pod_list)
                .unwrap_or_else(
                    || json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
                );
            respond(&mut stream, 200, &list)
        }
        _ => respond(
            &mut stream,
            404,
            &status(404, "NotFound", &format!("the fake has no {method} {path}")),
        ),
    }
}
