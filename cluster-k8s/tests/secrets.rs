//! One definition of a secret: whatever a Kubernetes manifest refuses to
//! carry, a log line hides, and nothing else.

use forloop_cluster_k8s::has_url_secret;
use forloop_core::kit::redact_url;

/// Queue addresses and endpoints users pass, with and without credentials.
const URLS: [(&str, bool); 16] = [
    ("redis://:hunter2@h:6379/0", true),
    ("rediss://user:pw@h", true),
    ("redis://user@h:6379", false),
    ("redis://h:6379", false),
    (
        "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=abc",
        true,
    ),
    ("https://h/hook?auth=abc", true),
    ("https://h/q?X-Amz-Signature=abc&region=eu", true),
    ("https://h/q?api_key=abc", true),
    ("https://h/q?apikey=abc", true),
    ("https://h/q?key=abc", true),
    ("https://h/q?sas_token=abc", true),
    ("https://h/cb?code=abc", true),
    ("https://h/q?password=abc", true),
    ("sqs://queue/name?region=eu-west-1", false),
    ("pubsub://project/name?max_outstanding=10", false),
    ("https://h/search?keyword=rust&codec=h264", false),
];

#[test]
fn a_manifest_refuses_exactly_what_a_log_line_hides() {
    for (url, secret) in URLS {
        assert_eq!(
            has_url_secret(url),
            secret,
            "{url}: a manifest {} it",
            if secret { "must refuse" } else { "may carry" }
        );
        let shown = redact_url(url);
        assert_eq!(
            shown != url,
            secret,
            "{url}: a log line shows `{shown}`, {}",
            if secret {
                "which leaks a credential"
            } else {
                "hiding nothing secret"
            }
        );
    }
}
