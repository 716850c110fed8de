//! The Dockerfile and docker-compose.yml: valid, and free of credentials.
//! (No Docker engine runs here; `docker-compose config` validates offline.)

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn docker_compose_config_is_valid() {
    let output = Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .args(["config", "-q"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): install it with `apt-get install docker-compose` (scripts/test does)")
        });
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("replicas: 3"), "three workers: {text}");
    assert!(text.contains("--queue=redis://redis:6379"), "{text}");
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
