//! The output store: a URL turned into an object-store client (each
//! cloud's own credential chain read by its builder), checked with a probe
//! object before anything runs, every call under a deadline.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

/// The name of a probe object starts so (under `PREFIX/_forloop/`).
const PROBE: &str = "probe-";
use object_store::path::Path;

/// How the store is called.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// The deadline of one store call (a put, one part of a large file, a
    /// list page, a delete). A call past it fails the attempt that made it.
    pub call_timeout: Duration,
    /// Files larger than this go up in parts of this size (multipart);
    /// smaller ones in one put. At least 5 MiB (S3's smallest part).
    pub part_size: usize,
    /// Parts of one file in flight at once: a part is read only when there
    /// is room to send it, so an upload holds `parts_in_flight * part_size`
    /// of the file at most, whatever its size.
    pub parts_in_flight: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(60),
            part_size: 8 << 20,
            parts_in_flight: 2,
        }
    }
}

/// Why the output store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    /// The URL is not one of the forms the store takes.
    #[error("--outputs `{url}` is not a store URL: {why}")]
    BadUrl {
        /// The URL, as shown (no query, no user info).
        url: String,
        /// What is wrong and what to write instead.
        why: String,
    },
    /// The store's client could not be made (a setting of its cloud's
    /// chain is invalid).
    #[error("cannot open the output store `{url}`: {why}")]
    Open {
        /// The URL as shown.
        url: String,
        /// What the client said.
        why: String,
    },
    /// A store call failed.
    #[error("cannot {what} in the output store `{url}`: {advice}")]
    Call {
        /// The URL as shown.
        url: String,
        /// The call ("write the probe object", "upload `out/a.mp4`").
        what: String,
        /// What to do about it.
        advice: &'static str,
        /// The store's error (boxed: it is large, and errors are rare).
        #[source]
        source: Box<object_store::Error>,
    },
    /// A store call did not answer within its deadline.
    #[error(
        "cannot {what} in the output store `{url}`: no answer within {after:?} (the store is slow or unreachable)"
    )]
    Timeout {
        /// The URL as shown.
        url: String,
        /// The call.
        what: String,
        /// Its deadline.
        after: Duration,
    },
    /// Downloaded objects whose bytes are not what their item's record
    /// says. Each was removed from the download; the rest were kept.
    #[error(
        "{} of the objects fetched from `{url}` are not the bytes their item's record names \
         (SHA-256), and were not kept: {}. A worker that lost an item's lease can write an object \
         after the item's last attempt; run those items again to make their outputs whole",
        .objects.len(),
        .objects.join(", ")
    )]
    Mismatch {
        /// The URL as shown.
        url: String,
        /// The objects' keys.
        objects: Vec<String>,
    },
    /// A local file could not be read.
    #[error("cannot read the output file `{path}`")]
    Local {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl OutputsError {
    fn advice(error: &object_store::Error) -> &'static str {
        // A put to a bucket that is not there is a generic error with the
        // server's words in it on S3 and GCS.
        let said = forloop_core::ErrorChain(error).to_string();
        let missing = ["NoSuchBucket", "bucket does not exist", "bucket not found"]
            .iter()
            .any(|words| said.contains(words));
        let refused = ["AccessDenied", "403 Forbidden", "status: 403"]
            .iter()
            .any(|words| said.contains(words));
        match error {
            _ if missing => "the bucket or folder does not exist: create it first, or fix the URL",
            _ if refused => {
                "these credentials may not write there: grant them write and delete on the prefix"
            }
            object_store::Error::NotFound { .. } => {
                "the bucket or folder does not exist: create it first, or fix the URL"
            }
            object_store::Error::Unauthenticated { .. } => {
                "no credentials were accepted: set up this cloud's credentials (AWS: the AWS_* \
                 variables, a profile or an instance role; Google Cloud: Application Default \
                 Credentials or Workload Identity)"
            }
            object_store::Error::PermissionDenied { .. } => {
                "these credentials may not write there: grant them write and delete on the prefix"
            }
            _ => "check the URL, that the store answers, and this machine's credentials",
        }
    }
}

/// An open output store: the client, the prefix inside its bucket, and the
/// URL as errors and logs show it. Its `Debug` shows the URL only: the
/// client holds credentials.
#[derive(Clone)]
pub struct OutputStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The prefix inside the bucket (empty: the bucket's root).
    pub(crate) root: Path,
    /// `scheme://bucket/prefix` (no query, no user info).
    shown: String,
    /// `scheme://bucket` for the URLs of objects (`file://` + directory).
    base: String,
    pub(crate) settings: StoreSettings,
}

impl fmt::Debug for OutputStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

fn not_built(scheme: &str, feature: &str) -> String {
    format!(
        "this build carries no `{scheme}` store: build the runner with the feature \
         `outputs-{feature}`"
    )
}

/// The URL with its query, fragment and user info taken off: what errors
/// and logs may show.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.scheme().len() > 1 => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        _ => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

impl OutputStore {
    /// Open the store at `url`: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///dir` or a plain path (made if
    /// missing). Reads each cloud's own credential chain; nothing is
    /// called yet ([`OutputStore::probe`] checks it can be written).
    pub fn open(url: &str, settings: StoreSettings) -> Result<Self, OutputsError> {
        Self::open_with_env(url, settings, &|key| std::env::var(key).ok())
    }

    /// [`OutputStore::open`], with the variables this crate reads itself
    /// (endpoint, region, keys, emulator host) looked up with `env` rather
    /// than in the process's environment (which each cloud's builder still
    /// reads): how a test points one store at its own server.
    pub fn open_with_env(
        url: &str,
        settings: StoreSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, OutputsError> {
        let shown = redact(url);
        let bad = |why: String| OutputsError::BadUrl {
            url: shown.clone(),
            why,
        };
        if url.trim().is_empty() {
            return Err(bad(
                "it is empty; give e.g. s3://bucket/prefix, gs://bucket/prefix or a directory"
                    .into(),
            ));
        }
        let parsed = match url::Url::parse(url) {
            Ok(parsed) if parsed.scheme().len() > 1 => Some(parsed),
            // A plain path (`out`, `/data/out`, `C:`-less on Unix).
            _ => None,
        };
        let Some(parsed) = parsed else {
            return Self::local(std::path::Path::new(url), settings);
        };
        if parsed.query().is_some() || !parsed.username().is_empty() || parsed.password().is_some()
        {
            return Err(bad(
                "it carries a query or user info: credentials come from the cloud's own chain \
                 (environment, profile, metadata server), never from the URL"
                    .into(),
            ));
        }
        let scheme = parsed.scheme().to_string();
        if scheme == "file" {
            let path = parsed
                .to_file_path()
                .map_err(|()| bad("a file URL names an absolute local path: file:///dir".into()))?;
            return Self::local(&path, settings);
        }
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(bad(format!(
                "it names no bucket: write {scheme}://BUCKET/PREFIX"
            )));
        }
        let root = Path::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
        let store = Self::cloud(&scheme, &parsed, settings, env).map_err(|why| match why {
            Err(why) => bad(why),
            Ok(why) => OutputsError::Open {
                url: shown.clone(),
                why,
            },
        })?;
        Ok(Self {
            store,
            root,
            base: format!("{scheme}://{bucket}"),
            shown,
            settings,
        })
    }

    fn local(dir: &std::path::Path, settings: StoreSettings) -> Result<Self, OutputsError> {
        let shown = dir.display().to_string();
        let open = |why: String| OutputsError::Open {
            url: shown.clone(),
            why,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open(format!("cannot make the directory: {e}")))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| open(format!("cannot resolve the directory: {e}")))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| open(e.to_string()))?
            .with_automatic_cleanup(true);
        let base = format!("file://{}", dir.display());
        Ok(Self {
            store: Arc::new(store),
            root: Path::default(),
            shown: base.clone(),
            base,
            settings,
        })
    }

    /// The client for a cloud URL. `Err(Err(_))`: the URL is wrong;
    /// `Err(Ok(_))`: the client could not be made.
    #[allow(unused_variables)]
    fn cloud(
        scheme: &str,
        url: &url::Url,
        settings: StoreSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn ObjectStore>, Result<String, String>> {
        #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
        let (retry, client, made) = (
            object_store::RetryConfig {
                // The store's own retries stay inside one call's deadline.
                max_retries: 3,
                retry_timeout: settings.call_timeout,
                ..object_store::RetryConfig::default()
            },
            object_store::ClientOptions::new()
                .with_timeout(settings.call_timeout)
                .with_connect_timeout(Duration::from_secs(10)),
            |e: object_store::Error| -> Result<String, String> { Ok(e.to_string()) },
        );
        match scheme {
            #[cfg(feature = "s3")]
            "s3" | "s3a" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
                // The AWS SDKs' own variables (AWS_ENDPOINT_URL_S3 is the
                // S3-only one, for an S3-compatible server).
                for (var, key) in [
                    ("AWS_ENDPOINT_URL", AmazonS3ConfigKey::Endpoint),
                    ("AWS_ENDPOINT_URL_S3", AmazonS3ConfigKey::Endpoint),
                    ("AWS_DEFAULT_REGION", AmazonS3ConfigKey::Region),
                    ("AWS_REGION", AmazonS3ConfigKey::Region),
                    ("AWS_ACCESS_KEY_ID", AmazonS3ConfigKey::AccessKeyId),
                    ("AWS_SECRET_ACCESS_KEY", AmazonS3ConfigKey::SecretAccessKey),
                    ("AWS_SESSION_TOKEN", AmazonS3ConfigKey::Token),
                ] {
                    if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                        builder = builder.with_config(key, value);
                    }
                }
                // Plain HTTP only for an endpoint given as such (a test or
                // in-cluster server); the allowance is a client option.
                let client = if builder
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .is_some_and(|e| e.starts_with("http://"))
                {
                    client.with_allow_http(true)
                } else {
                    client
                };
                if builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                let store = builder
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(made)?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "gcs")]
            "gs" => {
                use object_store::gcp::GoogleCloudStorageBuilder;
                let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
                // The variable Google's own clients read for an emulator,
                // which takes no credentials.
                if let Some(host) = env("STORAGE_EMULATOR_HOST").filter(|h| !h.is_empty()) {
                    let host = if host.contains("://") {
                        host
                    } else {
                        format!("http://{host}")
                    };
                    // An emulator takes any token (object_store's uploads
                    // ask for one even with skip_signature).
                    let token = object_store::gcp::GcpCredential {
                        bearer: "emulator".to_string(),
                    };
                    builder = builder
                        .with_base_url(host.trim_end_matches('/'))
                        .with_skip_signature(true)
                        .with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                            token,
                        )))
                        .with_client_options(client.clone().with_allow_http(true));
                } else {
                    builder = builder.with_client_options(client);
                }
                let store = builder.with_retry(retry).build().map_err(made)?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "azure")]
            "az" | "azure" | "abfs" | "abfss" => {
                use object_store::azure::MicrosoftAzureBuilder;
                let store = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(made)?;
                Ok(Arc::new(store))
            }
            other => Err(Err(match other {
                "s3" | "s3a" => not_built(other, "s3"),
                "gs" => not_built(other, "gcs"),
                "az" | "azure" | "abfs" | "abfss" => not_built(other, "azure"),
                _ => format!(
                    "`{other}://` is not a store this runner knows: use s3://, gs://, az://, \
                     file:/// or a directory"
                ),
            })),
        }
    }

    /// The URL as errors and logs show it.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The settings its calls run with.
    pub fn settings(&self) -> StoreSettings {
        self.settings
    }

    /// The URL of the object at `key` (a key as the store's records hold
    /// it: from the bucket's root).
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    /// Under the store's prefix.
    pub(crate) fn under(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    /// Run one store call under the deadline.
    pub(crate) async fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, OutputsError> {
        match tokio::time::timeout(self.settings.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(OutputsError::Call {
                url: self.shown.clone(),
                what: what(),
                advice: OutputsError::advice(&source),
                source: Box::new(source),
            }),
            Err(_) => Err(OutputsError::Timeout {
                url: self.shown.clone(),
                what: what(),
                after: self.settings.call_timeout,
            }),
        }
    }

    /// Write a probe object under the prefix and delete it: the bucket is
    /// there, the credentials are accepted, and they may write and delete.
    /// Then remove the probes that processes killed between the two left
    /// more than an hour ago.
    pub async fn probe(&self) -> Result<(), OutputsError> {
        use object_store::ObjectStoreExt;
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let path = self.under(&["_forloop", &format!("{PROBE}{nonce}")]);
        self.call(
            || "write the probe object".into(),
            self.store.put(&path, "forloop probe".into()),
        )
        .await?;
        self.delete_probe(&path).await?;
        if let Err(error) = self.sweep_probes(Duration::from_secs(3600)).await {
            tracing::warn!(store = %self.shown, "cannot remove old probe objects: {error}");
        }
        Ok(())
    }

    /// Delete the probe objects (`_forloop/probe-*` under the prefix)
    /// older than `age`: those of processes killed between a probe's
    /// write and its delete. At a job's end (age zero) none stays; a
    /// probe of a process starting at that moment may be deleted under it,
    /// which its own delete takes as done. Returns how many went.
    pub async fn sweep_probes(&self, age: Duration) -> Result<usize, OutputsError> {
        use futures_util::StreamExt;
        let folder = self.under(&["_forloop"]);
        let cutoff = std::time::SystemTime::now() - age;
        let mut listing = self.store.list(Some(&folder));
        let mut stale = Vec::new();
        while let Some(meta) = self
            .call(|| "list the probe objects".into(), async {
                listing.next().await.transpose()
            })
            .await?
        {
            let probe = meta
                .location
                .filename()
                .is_some_and(|name| name.starts_with(PROBE));
            if probe && std::time::SystemTime::from(meta.last_modified) <= cutoff {
                stale.push(meta.location);
            }
        }
        for path in &stale {
            self.delete_probe(path).await?;
        }
        Ok(stale.len())
    }

    /// Delete a probe object; one already gone (another process swept it)
    /// is deleted.
    async fn delete_probe(&self, path: &Path) -> Result<(), OutputsError> {
        use object_store::ObjectStoreExt;
        match self
            .call(|| "delete the probe object".into(), self.store.delete(path))
            .await
        {
            Err(OutputsError::Call { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) =>
            {
                Ok(())
            }
            done => done,
        }
    }
}
