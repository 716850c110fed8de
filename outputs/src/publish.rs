//! An attempt's files into the store: every file streamed (large ones in
//! parts, never whole in memory) under the item's own prefix, then the
//! item's record naming each (key, size, SHA-256), then whatever an earlier
//! attempt left under the prefix that this one did not write is deleted, so
//! the store holds one set of objects per item.
//!
//! ```text
//! PREFIX/JOB/ITEMKEY/<the files, as f wrote them under FORLOOP_OUTPUT_DIR>
//! PREFIX/JOB/_forloop/items/ITEMKEY.json    the item's record
//! PREFIX/JOB/_forloop/output/ITEMKEY.stdout its command's stdout (--capture)
//! PREFIX/JOB/_forloop/output/ITEMKEY.stderr its command's stderr (--capture)
//! PREFIX/JOB/_forloop/values/ITEMKEY.json   its value, when over 1 KiB
//! PREFIX/JOB/_forloop/manifest.json         the job's manifest, at its end
//! ```
//!
//! What forloop writes lives under `_forloop/`, never in an item's folder:
//! no file `f` makes can clash with it. A failed attempt uploads no files,
//! but with `--capture` its output goes up under the same keys, with a
//! record saying it failed (unless the item already has a successful
//! record, which stays): a dead item shows its last attempt's output, a
//! done one its successful attempt's, and each item has one set.

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
use forloop_core::handler::Captured;
use forloop_core::job::ItemValue;

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
    /// The command's streams the attempt kept (`--capture`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captured: Vec<CapturedOutput>,
    /// What `f` returned, when its JSON is at most 1 KiB
    /// ([`forloop_core::job::MAX_RECEIPT_VALUE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ItemValue>,
    /// A larger value: its object (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<OutputFile>,
    /// Why the attempt failed: the record of a failed attempt, kept for
    /// its output (`--capture`). Absent for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// One stream of the command an attempt kept (`--capture`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Its object key, from the bucket's root.
    pub key: String,
    /// The object's size in bytes (with the closing line of a cut stream).
    pub size: u64,
    /// The SHA-256 of the object, in hex.
    pub sha256: String,
    /// The stream's bytes in all; more than the object holds when it was
    /// cut at the limit (64 MiB, [`forloop_core::handler::CAPTURE_LIMIT`]).
    pub written: u64,
    /// Whether it was cut: the object holds its first 64 MiB and a closing
    /// line saying how much was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// What an attempt made besides its files: its kept streams and its value.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// Its kept streams ([`forloop_core::TaskOutcome::captured`]).
    pub captured: &'a [Captured],
    /// What `f` returned.
    pub value: Option<&'a ItemValue>,
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

    fn meta_path(&self, job: &str, folder: &str, name: &str) -> Path {
        self.under(&[job, META, folder, name])
    }

    /// Upload the kept streams of an attempt of the item `key`.
    async fn upload_captured(
        &self,
        job: &str,
        key: &str,
        captured: &[Captured],
    ) -> Result<Vec<CapturedOutput>, OutputsError> {
        let mut out = Vec::with_capacity(captured.len());
        for stream in captured {
            let name = stream.stream.name();
            let path = self.meta_path(job, "output", &format!("{key}.{name}"));
            let (size, sha256) = self.upload_file(&stream.path, &path).await?;
            out.push(CapturedOutput {
                stream: name.to_string(),
                key: path.to_string(),
                size,
                sha256,
                written: stream.written,
                cut: stream.cut(),
            });
        }
        Ok(out)
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
        self.publish_with(item, attempt, dir, Extras::default())
            .await
    }

    /// [`OutputStore::publish`], with the attempt's kept streams and its
    /// value: a value over 1 KiB goes to its own object, which the record
    /// names.
    pub async fn publish_with(
        &self,
        item: &Item,
        attempt: u32,
        dir: &std::path::Path,
        extras: Extras<'_>,
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
        let captured = self.upload_captured(&job, &key, extras.captured).await?;
        let (value, value_file) = match extras.value {
            Some(value) if !value.fits_receipt() => {
                let path = self.meta_path(&job, "values", &format!("{key}.json"));
                let body = value.as_str().as_bytes();
                let sha256 = hex(&Sha256::digest(body));
                self.call(
                    || format!("write the value of item `{key}`"),
                    self.store
                        .put(&path, PutPayload::from(bytes::Bytes::copy_from_slice(body))),
                )
                .await?;
                let file = OutputFile {
                    path: format!("{key}.json"),
                    key: path.to_string(),
                    size: body.len() as u64,
                    sha256,
                };
                (None, Some(file))
            }
            value => (value.cloned(), None),
        };
        let mut record = self.record_of(item, &key, attempt);
        record.files = stored;
        record.captured = captured;
        record.value = value;
        record.value_file = value_file;
        self.write_record(&job, &record).await?;
        self.sweep(&prefix, &record).await?;
        Ok(record)
    }

    fn record_of(&self, item: &Item, key: &str, attempt: u32) -> ItemRecord {
        let cut = &item.payload[..item.payload.len().min(forloop_core::job::MAX_RECEIPT_ITEM)];
        ItemRecord {
            job: item.job.as_ref().map(|j| j.job.to_string()),
            seq: item.job.as_ref().map(|j| j.seq),
            key: key.to_string(),
            item: String::from_utf8_lossy(cut).into_owned(),
            attempt,
            at: forloop_core::job::unix_millis(),
            files: Vec::new(),
            captured: Vec::new(),
            value: None,
            value_file: None,
            failed: None,
        }
    }

    async fn write_record(&self, job: &str, record: &ItemRecord) -> Result<(), OutputsError> {
        let key = &record.key;
        let body = serde_json::to_vec(record).expect("records serialize");
        let record_path = self.record_path(job, key);
        self.call(
            || format!("write the record of item `{key}`"),
            self.store.put(&record_path, PutPayload::from(body)),
        )
        .await
        .map(drop)
    }

    /// Keep a failed attempt's streams (`--capture`) and a record saying
    /// it failed and why, under the keys a success would use, unless the
    /// item already has a successful record (an attempt redone after its
    /// success was recorded): that one stays, whole. Returns the record
    /// written, if any.
    pub async fn publish_failed(
        &self,
        item: &Item,
        attempt: u32,
        captured: &[Captured],
        why: &str,
    ) -> Result<Option<ItemRecord>, OutputsError> {
        let (job, key, _) = self.item_prefix(item);
        let record_path = self.record_path(&job, &key);
        let kept = self
            .call(|| format!("read the record of item `{key}`"), async {
                match self.store.get(&record_path).await {
                    Ok(got) => got.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(error),
                }
            })
            .await?;
        if let Some(kept) = kept
            && serde_json::from_slice::<ItemRecord>(&kept).is_ok_and(|r| r.failed.is_none())
        {
            return Ok(None);
        }
        let mut record = self.record_of(item, &key, attempt);
        record.captured = self.upload_captured(&job, &key, captured).await?;
        record.failed = Some(why.to_string());
        self.write_record(&job, &record).await?;
        Ok(Some(record))
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

    /// Fetch every output of `job` into `dest/ITEMKEY/...`, streamed; the
    /// kept streams as `dest/ITEMKEY.stdout` and `.stderr`, a value kept
    /// in its own object as `dest/ITEMKEY.value.json`. Returns the number
    /// of files and bytes.
    pub async fn download(
        &self,
        job: &str,
        dest: &std::path::Path,
    ) -> Result<(usize, u64), OutputsError> {
        let (mut files, mut bytes) = (0, 0);
        let mut mismatched = Vec::new();
        for record in self.records(job).await? {
            let item_prefix = self.under(&[job, &record.key]);
            let mut wanted = Vec::new();
            for file in &record.files {
                let key = parse_key(&file.key)?;
                // Parts as the store holds them: never `..` or a separator.
                let Some(parts) = key.prefix_match(&item_prefix) else {
                    tracing::warn!(key = %file.key, "outside its item's prefix; skipped");
                    continue;
                };
                let mut target = dest.join(&record.key);
                for part in parts {
                    target.push(part.as_ref());
                }
                wanted.push((key, target, file.sha256.as_str()));
            }
            // The record's key is one safe segment (`item_key`): these
            // names stay in `dest`.
            let beside = record
                .captured
                .iter()
                .map(|c| (&c.key, format!("{}.{}", record.key, c.stream), &c.sha256))
                .chain(
                    record
                        .value_file
                        .iter()
                        .map(|v| (&v.key, format!("{}.value.json", record.key), &v.sha256)),
                );
            for (key, name, sha256) in beside {
                if name.contains('/') || name.starts_with('.') {
                    continue;
                }
                wanted.push((parse_key(key)?, dest.join(name), sha256.as_str()));
            }
            for (key, target, sha256) in wanted {
                let (size, got) = self.fetch(&key, &target).await?;
                if sha256 != got {
                    // Not what the record names: never handed on as if it were.
                    let _ = tokio::fs::remove_file(&target).await;
                    mismatched.push(key.to_string());
                    continue;
                }
                bytes += size;
                files += 1;
            }
        }
        if !mismatched.is_empty() {
            return Err(OutputsError::Mismatch {
                url: self.url().to_string(),
                objects: mismatched,
            });
        }
        Ok((files, bytes))
    }

    /// Stream the object `key` into the file `target`. Returns its size
    /// and its SHA-256.
    async fn fetch(
        &self,
        key: &Path,
        target: &std::path::Path,
    ) -> Result<(u64, String), OutputsError> {
        let local = |path: &std::path::Path, source| OutputsError::Local {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| local(parent, e))?;
        }
        let mut out = tokio::fs::File::create(target)
            .await
            .map_err(|e| local(target, e))?;
        let got = self
            .call(|| format!("read `{key}`"), self.store.get(key))
            .await?;
        let mut stream = got.into_stream();
        let mut bytes = 0;
        let mut hasher = Sha256::new();
        loop {
            let chunk = self
                .call(|| format!("read `{key}`"), async {
                    stream.next().await.transpose()
                })
                .await?;
            let Some(chunk) = chunk else { break };
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(|e| local(target, e))?;
            bytes += chunk.len() as u64;
        }
        // tokio writes in the background: done only once flushed.
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(|e| local(target, e))?;
        Ok((bytes, hex(&hasher.finalize())))
    }

    /// The body of the object `key` (a key as a record holds it), whole:
    /// for values, which are small enough to show.
    pub async fn read_object(&self, key: &str) -> Result<bytes::Bytes, OutputsError> {
        let path = parse_key(key)?;
        self.call(|| format!("read `{path}`"), async {
            self.store.get(&path).await?.bytes().await
        })
        .await
    }
}

fn parse_key(key: &str) -> Result<Path, OutputsError> {
    Path::parse(key).map_err(|e| OutputsError::Local {
        path: key.to_string(),
        source: std::io::Error::other(e),
    })
}

async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    (&mut *file).take(size as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
