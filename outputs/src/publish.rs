//! An attempt's files into the store: every file streamed (large ones in
//! parts, never whole in memory) under the item's own prefix, then the
//! item's record naming each (key, size, SHA-256), then whatever an earlier
//! attempt left under the prefix that this one did not write is deleted, so
//! the store holds one set of objects per item.
//!
//! ```text
//! PREFIX/JOB/ITEMKEY/<the files, as f wrote them under FORLOOP_OUTPUT_DIR>
//! PREFIX/JOB/_forloop/items/ITEMKEY.json   the item's record
//! PREFIX/JOB/_forloop/manifest.json        the job's manifest, at its end
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use forloop_core::Item;

use crate::key::{item_key, job_folder};
use crate::store::{OutputStore, OutputsError};

/// The folder beside a job's items that holds forloop's own objects.
pub(crate) const META: &str = "_forloop";

/// One file an attempt produced, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Its path under the attempt's output directory (`a/b.mp4`).
    pub path: String,
    /// Its object key, from the bucket's root.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, in hex.
    pub sha256: String,
}

/// What the store holds of one item: written after its files and before
/// its receipt and ack, so an item that counts as done has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The item's job, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Its sequence number in the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Its key: the folder of its files ([`crate::item_key`]).
    pub key: String,
    /// The item, cut at 1 KiB (invalid UTF-8 replaced).
    pub item: String,
    /// The attempt that produced the files.
    pub attempt: u32,
    /// When the record was written (Unix milliseconds).
    pub at: u64,
    /// The files.
    pub files: Vec<OutputFile>,
}

/// The whole job's outputs in one object, written at the job's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job.
    pub job: String,
    /// The store, as a URL.
    pub store: String,
    /// Every item that has outputs, by seq.
    pub items: Vec<ItemRecord>,
}

struct LocalFile {
    /// Path parts under the output directory, as f named them.
    parts: Vec<String>,
    path: PathBuf,
}

/// Every regular file under `dir` (symbolic links and special files are
/// not outputs: a link could point anywhere on the machine).
fn walk(dir: &std::path::Path) -> Result<Vec<LocalFile>, OutputsError> {
    let local = |path: &std::path::Path, source| OutputsError::Local {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), Vec::<String>::new())];
    while let Some((folder, parts)) = stack.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| local(&folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| local(&folder, e))?;
            let kind = entry.file_type().map_err(|e| local(&entry.path(), e))?;
            let mut child = parts.clone();
            child.push(entry.file_name().to_string_lossy().into_owned());
            if kind.is_dir() {
                stack.push((entry.path(), child));
            } else if kind.is_file() {
                out.push(LocalFile {
                    parts: child,
                    path: entry.path(),
                });
            } else {
                tracing::warn!(path = %entry.path().display(),
                    "not a regular file: left out of the item's outputs");
            }
        }
    }
    out.sort_by(|a, b| a.parts.cmp(&b.parts));
    Ok(out)
}

impl OutputStore {
    /// The prefix of an item's files.
    pub(crate) fn item_prefix(&self, item: &Item) -> (String, String, Path) {
        let job = job_folder(item);
        let key = item_key(item);
        let prefix = self.under(&[&job, &key]);
        (job, key, prefix)
    }

    fn record_path(&self, job: &str, key: &str) -> Path {
        self.under(&[job, META, "items", &format!("{key}.json")])
    }

    /// Upload every file under `dir` as the outputs of `item`, then its
    /// record, then delete what an earlier attempt left that this one did
    /// not write. Any failure fails the whole: the attempt is retried.
    pub async fn publish(
        &self,
        item: &Item,
        attempt: u32,
        dir: &std::path::Path,
    ) -> Result<ItemRecord, OutputsError> {
        let (job, key, prefix) = self.item_prefix(item);
        let dir_owned = dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || walk(&dir_owned))
            .await
            .map_err(|e| OutputsError::Local {
                path: dir.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        let mut stored = Vec::with_capacity(files.len());
        for file in &files {
            let mut path = prefix.clone();
            for part in &file.parts {
                path = path.join(PathPart::from(part.as_str()));
            }
            let (size, sha256) = self.upload_file(&file.path, &path).await?;
            stored.push(OutputFile {
                path: file.parts.join("/"),
                key: path.to_string(),
                size,
                sha256,
            });
        }
        let cut = &item.payload[..item.payload.len().min(forloop_core::job::MAX_RECEIPT_ITEM)];
        let record = ItemRecord {
            job: item.job.as_ref().map(|j| j.job.to_string()),
            seq: item.job.as_ref().map(|j| j.seq),
            key: key.clone(),
            item: String::from_utf8_lossy(cut).into_owned(),
            attempt,
            at: forloop_core::job::unix_millis(),
            files: stored,
        };
        let body = serde_json::to_vec(&record).expect("records serialize");
        let record_path = self.record_path(&job, &key);
        self.call(
            || format!("write the record of item `{key}`"),
            self.store.put(&record_path, PutPayload::from(body)),
        )
        .await?;
        self.sweep(&prefix, &record).await?;
        Ok(record)
    }

    /// Delete the objects under `prefix` the record does not name (an
    /// earlier attempt's files this one did not make again).
    async fn sweep(&self, prefix: &Path, record: &ItemRecord) -> Result<(), OutputsError> {
        let keep: HashSet<&str> = record.files.iter().map(|f| f.key.as_str()).collect();
        let listed = self.list(prefix).await?;
        for stale in listed.iter().filter(|p| !keep.contains(p.as_ref())) {
            self.call(
                || format!("delete the stale output `{stale}`"),
                self.store.delete(stale),
            )
            .await?;
        }
        Ok(())
    }

    /// Every object under `prefix`, each page under the deadline.
    pub(crate) async fn list(&self, prefix: &Path) -> Result<Vec<Path>, OutputsError> {
        let mut stream = self.store.list(Some(prefix));
        let mut out = Vec::new();
        loop {
            let next = self
                .call(|| format!("list `{prefix}`"), async {
                    stream.next().await.transpose()
                })
                .await?;
            match next {
                Some(meta) => out.push(meta.location),
                None => return Ok(out),
            }
        }
    }

    /// Stream one file up: one put when it fits in a part, else a multipart
    /// upload with at most `parts_in_flight` parts in the air, each under
    /// the deadline; an upload that fails is aborted. Returns the size and
    /// the SHA-256.
    async fn upload_file(
        &self,
        local: &std::path::Path,
        path: &Path,
    ) -> Result<(u64, String), OutputsError> {
        let read_error = |source| OutputsError::Local {
            path: local.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(read_error)?;
        let part_size = self.settings.part_size.max(5 << 20);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let first = read_part(&mut file, part_size).await.map_err(read_error)?;
        size += first.len() as u64;
        hasher.update(&first);
        if first.len() < part_size {
            self.call(
                || format!("upload `{path}`"),
                self.store.put(path, PutPayload::from(first)),
            )
            .await?;
            return Ok((size, hex(&hasher.finalize())));
        }
        let mut upload = self
            .call(
                || format!("start the upload of `{path}`"),
                self.store.put_multipart(path),
            )
            .await?;
        let parts = async {
            let mut in_flight = FuturesUnordered::new();
            let mut first = Some(first);
            loop {
                // A part is read only once there is room to send it: no
                // more than `parts_in_flight` parts are held at once.
                while in_flight.len() >= self.settings.parts_in_flight.max(1) {
                    in_flight.next().await.expect("parts in flight")?;
                }
                let part = match first.take() {
                    Some(part) => part,
                    None => {
                        let part = read_part(&mut file, part_size).await.map_err(read_error)?;
                        if part.is_empty() {
                            break;
                        }
                        size += part.len() as u64;
                        hasher.update(&part);
                        part
                    }
                };
                let sent = upload.put_part(PutPayload::from(part));
                in_flight.push(self.call(|| format!("upload a part of `{path}`"), sent));
            }
            while let Some(done) = in_flight.next().await {
                done?;
            }
            Ok::<(), OutputsError>(())
        }
        .await;
        let finished = match parts {
            Ok(()) => self
                .call(
                    || format!("finish the upload of `{path}`"),
                    upload.complete(),
                )
                .await
                .map(drop),
            Err(error) => Err(error),
        };
        if let Err(error) = finished {
            // Parts left behind cost storage until the bucket's lifecycle
            // rule removes them: abort, within the deadline.
            let _ = tokio::time::timeout(self.settings.call_timeout, upload.abort()).await;
            return Err(error);
        }
        Ok((size, hex(&hasher.finalize())))
    }

    /// The records of a job's items, by seq (then key).
    pub async fn records(&self, job: &str) -> Result<Vec<ItemRecord>, OutputsError> {
        let folder = self.under(&[job, META, "items"]);
        let mut records = Vec::new();
        for path in self.list(&folder).await? {
            let got = self
                .call(|| format!("read `{path}`"), async {
                    self.store.get(&path).await?.bytes().await
                })
                .await?;
            match serde_json::from_slice::<ItemRecord>(&got) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!(%path, %error, "not an item record; skipped"),
            }
        }
        records.sort_by(|a, b| (a.seq, &a.key).cmp(&(b.seq, &b.key)));
        Ok(records)
    }

    /// Write the job's manifest beside its items: every item record in one
    /// object. Returns its URL.
    pub async fn write_manifest(&self, job: &str) -> Result<(String, usize), OutputsError> {
        let items = self.records(job).await?;
        let count = items.len();
        let manifest = Manifest {
            job: job.to_string(),
            store: self.url().to_string(),
            items,
        };
        let path = self.under(&[job, META, "manifest.json"]);
        let body = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        self.call(
            || "write the job's manifest".into(),
            self.store.put(&path, PutPayload::from(body)),
        )
        .await?;
        // Nothing of the job's machinery stays beside its outputs: the
        // probes of workers killed mid-probe go with the job's end.
        if let Err(error) = self.sweep_probes(std::time::Duration::ZERO).await {
            tracing::warn!("cannot remove leftover probe objects: {error}");
        }
        Ok((self.object_url(path.as_ref()), count))
    }

    /// Fetch every output of `job` into `dest/ITEMKEY/...`, streamed.
    /// Returns the number of files and bytes.
    pub async fn download(
        &self,
        job: &str,
        dest: &std::path::Path,
    ) -> Result<(usize, u64), OutputsError> {
        let local = |path: &std::path::Path, source| OutputsError::Local {
            path: path.display().to_string(),
            source,
        };
        let (mut files, mut bytes) = (0, 0);
        for record in self.records(job).await? {
            let item_prefix = self.under(&[job, &record.key]);
            for file in &record.files {
                let key = Path::parse(&file.key).map_err(|e| OutputsError::Local {
                    path: file.key.clone(),
                    source: std::io::Error::other(e),
                })?;
                // Parts as the store holds them: never `..` or a separator.
                let Some(parts) = key.prefix_match(&item_prefix) else {
                    tracing::warn!(key = %file.key, "outside its item's prefix; skipped");
                    continue;
                };
                let mut target = dest.join(&record.key);
                for part in parts {
                    target.push(part.as_ref());
                }
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| local(parent, e))?;
                }
                let mut out = tokio::fs::File::create(&target)
                    .await
                    .map_err(|e| local(&target, e))?;
                let got = self
                    .call(|| format!("read `{key}`"), self.store.get(&key))
                    .await?;
                let mut stream = got.into_stream();
                loop {
                    let chunk = self
                        .call(|| format!("read `{key}`"), async {
                            stream.next().await.transpose()
                        })
                        .await?;
                    let Some(chunk) = chunk else { break };
                    tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                        .await
                        .map_err(|e| local(&target, e))?;
                    bytes += chunk.len() as u64;
                }
                // tokio writes in the background: done only once flushed.
                tokio::io::AsyncWriteExt::flush(&mut out)
                    .await
                    .map_err(|e| local(&target, e))?;
                files += 1;
            }
        }
        Ok((files, bytes))
    }
}

async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    (&mut *file).take(size as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
