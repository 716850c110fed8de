//! The Dockerfile and docker-compose.yml: valid, and free of credentials.
//! (No Docker engine runs here; `docker-compose config` validates offline.)

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose(args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): install it with `apt-get install docker-compose` (scripts/test does)")
        })
}

#[test]
fn docker_compose_config_is_valid() {
    let output = compose(&["config", "-q"]);
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn each_profile_is_a_queue_server_and_three_workers_on_it() {
    for (profile, server, worker, queue) in [
        ("redis", "redis", "worker", "--queue=redis://redis:6379"),
        (
            "pubsub",
            "pubsub",
            "worker-pubsub",
            "--queue=pubsub://local/forloop",
        ),
        ("sqs", "sqs", "worker-sqs", "--queue=sqs://forloop"),
    ] {
        let services = compose(&["--profile", profile, "config", "--services"]);
        let services = String::from_utf8_lossy(&services.stdout).to_string();
        let names: Vec<&str> = services.lines().collect();
        assert!(
            names.contains(&server) && names.contains(&worker),
            "profile {profile}: {names:?}"
        );
        let rendered = compose(&["--profile", profile, "config"]);
        let config = yaml_to_json(&rendered.stdout);
        let service = &config["services"][worker];
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{worker} has no command: {service}"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            command.contains(&queue),
            "{worker} does not use {queue}: {command:?}"
        );
        assert!(
            command.contains(&"work"),
            "{worker} is not a worker: {command:?}"
        );
        assert_eq!(service["deploy"]["replicas"], 3, "{worker}: {service}");
    }
}

/// YAML to JSON with PyYAML (installed with kubernetes-validate).
fn yaml_to_json(yaml: &[u8]) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (python3 -m pip install kubernetes-validate brings it)");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML cannot read the compose config"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sqs_emulator_env_holds_placeholders_only() {
    let text = std::fs::read_to_string(root().join("docker/sqs-emulator.env")).unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.split_once('=').unwrap();
        if key.contains("KEY") {
            assert_eq!(value, "emulator", "{key} must stay a placeholder");
        }
    }
}

#[test]
fn images_and_compose_carry_no_credentials_and_run_as_non_root() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    for (name, text) in [
        ("Dockerfile", &dockerfile),
        ("docker-compose.yml", &compose),
    ] {
        let upper = text.to_uppercase();
        for word in [
            "PASSWORD",
            "SECRET",
            "ACCESS_KEY",
            "TOKEN",
            "CREDENTIALS=",
            "KEY_FILE",
            ".JSON",
        ] {
            assert!(
                !upper.contains(word),
                "{name} mentions {word}: credentials never go into images or manifests"
            );
        }
    }
    assert!(
        dockerfile.contains("USER 10001"),
        "the image runs as a non-root user"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore keeps target/ out of the build context"
    );
}

#[test]
fn the_image_runs_runner_under_an_init_that_reaps_orphans() {
    // As PID 1 with no init, runner would leave every orphaned grandchild of
    // a command a zombie for the container's life.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let installs_tini = dockerfile
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .any(|l| l.split_whitespace().any(|word| word == "tini"));
    assert!(installs_tini, "the image installs Debian's tini");
    let entrypoint: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("ENTRYPOINT"))
        .collect();
    assert_eq!(
        entrypoint,
        [r#"ENTRYPOINT ["tini", "--", "runner"]"#],
        "runner runs under tini, not as PID 1"
    );
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    assert!(
        !compose.contains("entrypoint"),
        "no compose service bypasses the image's init"
    );
}

/// The Dockerfile's instructions, each with its `\` continuation lines
/// joined into one line, comments left out.
fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn the_image_carries_a_stripped_binary() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instructions = dockerfile_instructions(&dockerfile);
    let build: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("RUN") && i.contains("cargo build"))
        .collect();
    assert_eq!(build.len(), 1, "one cargo build in the image: {build:?}");
    let words: Vec<&str> = build[0].split_whitespace().collect();
    let stripped_by_cargo = words.contains(&"CARGO_PROFILE_RELEASE_STRIP=symbols");
    let stripped_after = words
        .windows(2)
        .any(|w| w[0] == "strip" && w[1].ends_with("/runner"));
    assert!(
        stripped_by_cargo || stripped_after,
        "the runner in the image is built stripped (CARGO_PROFILE_RELEASE_STRIP=symbols) \
         or stripped after the build: {}",
        build[0]
    );
    assert!(
        words.contains(&"--release") && build[0].contains("cp target/release/runner /runner"),
        "the image copies the release binary the same step built: {}",
        build[0]
    );
    assert!(
        instructions
            .iter()
            .any(|i| i == "COPY --from=build /runner /usr/local/bin/runner"),
        "the final image takes that binary"
    );
}

#[test]
fn continuation_lines_join_into_one_instruction() {
    let text = "# comment\nFROM x AS build\nRUN a \\\n && b\n\nUSER 1\n";
    assert_eq!(
        dockerfile_instructions(text),
        ["FROM x AS build", "RUN a  && b", "USER 1"]
    );
}
