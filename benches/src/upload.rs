//! `--upload FILE --outputs URL`: one file through forloop's output path
//! (`OutputStore::publish`, what `--outputs` does after `f` succeeds: the
//! file streamed in parts with its SHA-256, the item's record, the sweep of
//! its prefix), against `--raw`: `object_store`'s own streaming multipart
//! upload of the same file (`WriteMultipart`), with the same part size and
//! parts in flight, and nothing else. Prints the throughput and the
//! process's peak resident memory.

use std::path::Path;
use std::time::Instant;

use forloop_core::Item;
use forloop_outputs::{OutputStore, StoreSettings};
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::{BenchArgs, Failure};

/// Run the upload bench: forloop's path, or with `--raw` the bare client.
pub(crate) async fn bench(file: &Path, args: &BenchArgs) -> Result<u8, Failure> {
    let url = args
        .outputs
        .as_deref()
        .ok_or_else(|| Failure::new("--upload needs --outputs URL (where to put it)"))?;
    let size = std::fs::metadata(file)
        .map_err(|e| Failure::new(format!("--upload {}: {e}", file.display())))?
        .len();
    let settings = StoreSettings::default();
    let started = Instant::now();
    let mode = if args.raw {
        raw(file, url, settings).await?;
        "raw object_store WriteMultipart"
    } else {
        forloop(file, url, settings).await?;
        "forloop OutputStore::publish"
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "upload  {mode}  {} MiB in {secs:.3} s  {:.1} MiB/s  peak RSS {} MiB",
        size >> 20,
        size as f64 / (1u64 << 20) as f64 / secs,
        peak_rss_kib() >> 10
    );
    Ok(0)
}

/// The file hard-linked (or copied) into an attempt-like directory, then
/// published as one item's outputs.
async fn forloop(file: &Path, url: &str, settings: StoreSettings) -> Result<(), Failure> {
    let store = OutputStore::open(url, settings).map_err(|e| Failure::new(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("forloop-bench-upload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Failure::new(e.to_string()))?;
    let inside = dir.join("output.bin");
    if std::fs::hard_link(file, &inside).is_err() {
        std::fs::copy(file, &inside).map_err(|e| Failure::new(e.to_string()))?;
    }
    let published = store.publish(&Item::new("bench-upload"), 1, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    published.map_err(|e| Failure::new(forloop_core::ErrorChain(&e).to_string()))?;
    Ok(())
}

/// The same file through the bare client: the object_store builder for
/// the URL from the environment (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...),
/// `WriteMultipart` with forloop's part size and parts in flight.
async fn raw(file: &Path, url: &str, settings: StoreSettings) -> Result<(), Failure> {
    let failed = |e: object_store::Error| Failure::new(e.to_string());
    let parsed = url::Url::parse(url).map_err(|e| Failure::new(format!("{url}: {e}")))?;
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url)
        .build()
        .map_err(failed)?;
    let key = object_store::path::Path::from(format!(
        "{}/raw-upload/output.bin",
        parsed.path().trim_matches('/')
    ));
    let mut source = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let upload = store.put_multipart(&key).await.map_err(failed)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, settings.part_size);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        if n == 0 {
            break;
        }
        writer
            .wait_for_capacity(settings.parts_in_flight)
            .await
            .map_err(failed)?;
        writer.write(&buffer[..n]);
    }
    writer.finish().await.map_err(failed)?;
    Ok(())
}

/// This process's peak resident memory (`VmHWM`), in KiB; 0 if unknown.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
