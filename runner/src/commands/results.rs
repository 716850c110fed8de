//! `runner results`: one record per item of a job, read from the ledger
//! the workers wrote wherever they ran: the cluster-wide joblog. Changes
//! nothing.

use std::collections::BTreeMap;

use forloop_core::job::{ItemValue, JobStatus, Receipt, Settled};
use forloop_outputs::{ItemRecord, OutputStore, StoreSettings};

use super::context::{Context, Stdout};
use crate::Failure;
use crate::cli::{ResultState, ResultsArgs};

pub(crate) async fn results(context: &Context<'_>, args: ResultsArgs) -> Result<u8, Failure> {
    // Checked before the queue is opened (a bad pattern, an unreadable
    // --items file); `None`: every item.
    let cause = Some(super::dead::cause_filter(&args.cause)?).filter(|f| !f.is_all());
    let (driver, address) = context.driver("results", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let Some(ledger) = backend.ledger else {
        return Err(Failure::new(format!(
            "{} keeps no jobs, so there are no results to show \
             (for Pub/Sub and SQS, `runner queue create` makes the ledger)",
            driver.redact(&address)
        )));
    };
    let jobs = ledger.jobs().await?;
    let job = pick(&jobs, args.job.as_deref())?;
    let name = &job.manifest.job;
    // The book says which items are settled; the receipts add the details.
    // An item the book counts whose receipt was not read shows its state
    // and no details, never `pending`.
    let seqs = ledger.seqs(name).await?;
    let receipts: BTreeMap<u64, Receipt> = ledger
        .receipts(name)
        .await?
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    let outputs = outputs_of(args.outputs.as_deref(), name, args.download.as_deref()).await?;
    let mut out = Stdout::default();
    if !args.json {
        let outputs_column = if outputs.is_some() { "\toutputs" } else { "" };
        out.line(format_args!(
            "seq\tstate\tattempts\texit_code\tseconds\tworker\titem\tstderr_tail\tvalue{outputs_column}"
        ))?;
    }
    let mut without_details = 0u64;
    for seq in 0..job.manifest.total {
        if out.closed() {
            break;
        }
        let receipt = receipts.get(&seq);
        let booked = seqs.as_ref().and_then(|seqs| {
            if seqs.done.contains(seq) {
                Some(ResultState::Done)
            } else if seqs.dead.contains(seq) {
                Some(ResultState::Dead)
            } else {
                None
            }
        });
        let state = match receipt.map(|r| r.state) {
            Some(Settled::Done) => ResultState::Done,
            Some(Settled::Dead) => ResultState::Dead,
            None => {
                without_details += u64::from(booked.is_some());
                booked.unwrap_or(ResultState::Pending)
            }
        };
        if args.state.is_some_and(|wanted| wanted != state) {
            continue;
        }
        if let Some(cause) = &cause
            && !receipt.is_some_and(|r| cause.matches_receipt(r))
        {
            continue;
        }
        let state_name = match state {
            ResultState::Done => "done",
            ResultState::Dead => "dead",
            ResultState::Pending => "pending",
        };
        let item_outputs = outputs.as_ref().map(|(store, records)| {
            let files = records
                .get(&seq)
                .map(|r| r.files.as_slice())
                .unwrap_or_default();
            (store, files)
        });
        let record = outputs
            .as_ref()
            .and_then(|(store, records)| Some((store, records.get(&seq)?)));
        let (value, value_url) = value_of(receipt, record);
        if args.json {
            let mut line = serde_json::json!({
                "job": name,
                "seq": seq,
                "state": state_name,
                "item": receipt.map(|r| r.item_text()),
                "attempts": receipt.map(|r| r.attempt),
                "exit_code": receipt.and_then(|r| r.exit_code),
                "seconds": receipt.map(|r| r.seconds),
                "worker": receipt.map(|r| &r.worker),
                "reason": receipt.and_then(|r| r.reason.as_ref()),
                "stderr_tail": receipt.and_then(|r| r.stderr_tail.as_ref()),
                "value": value.as_ref().map(|v| v.to_value()),
            });
            if let Some(url) = &value_url {
                line["value_url"] = url.as_str().into();
            }
            // `--speculate`: a copy, not the original, settled the item.
            if receipt.is_some_and(|r| r.copy) {
                line["copy"] = true.into();
            }
            if let Some((store, record)) = record
                && !record.captured.is_empty()
            {
                line["captured"] = record
                    .captured
                    .iter()
                    .map(|c| {
                        let mut kept = serde_json::to_value(c).expect("records serialize");
                        kept["url"] = store.object_url(&c.key).into();
                        kept
                    })
                    .collect();
            }
            if let Some((store, files)) = item_outputs {
                line["outputs"] = files
                    .iter()
                    .map(|file| {
                        serde_json::json!({
                            "path": file.path,
                            "key": file.key,
                            "url": store.object_url(&file.key),
                            "size": file.size,
                            "sha256": file.sha256,
                        })
                    })
                    .collect();
            }
            out.line(line)?;
        } else {
            let cell = |text: Option<String>| escape(&text.unwrap_or_default());
            out.line(format_args!(
                "{seq}\t{state_name}\t{}\t{}\t{}\t{}\t{}\t{}\t{}{}",
                cell(receipt.map(|r| r.attempt.to_string())),
                cell(receipt.and_then(|r| r.exit_code).map(|c| c.to_string())),
                cell(receipt.map(|r| format!("{:.3}", r.seconds))),
                cell(receipt.map(|r| r.worker.to_string())),
                cell(receipt.map(|r| r.item_text().into_owned())),
                cell(receipt.and_then(|r| last_line(r.stderr_tail.as_deref()))),
                cell(value.map(|v| v.to_string()).or(value_url)),
                match item_outputs {
                    Some((store, files)) => format!(
                        "\t{}",
                        cell(Some(
                            files
                                .iter()
                                .map(|file| store.object_url(&file.key))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ))
                    ),
                    None => String::new(),
                },
            ))?;
        }
    }
    if without_details > 0 {
        // Redis keeps done items as counts unless the job asked
        // (`--keep-receipts`); the sheet ledgers keep every receipt.
        let why = if job.manifest.keep_receipts {
            ""
        } else {
            "the job keeps done items as counts, not receipts, where the queue allows it \
             (Redis; run or submit with `--keep-receipts` to keep every item's details), or "
        };
        eprintln!(
            "runner: {without_details} settled item(s) of job `{name}` show no details: the ledger counts \
             them done or dead, but their receipts were not found ({why}written since this read began, \
             or held by another reader: `runner results` again reads them)"
        );
    }
    if !args.json {
        eprintln!(
            "job `{name}`: {} items, {} done, {} dead, {} pending",
            job.manifest.total,
            job.done,
            job.dead,
            job.remaining()
        );
    }
    Ok(0)
}

/// The records of the job's outputs by seq, with the store (`--outputs`);
/// with `--download DIR`, the outputs fetched into DIR first. Reads only:
/// no probe object is written.
async fn outputs_of(
    url: Option<&str>,
    job: &str,
    download: Option<&std::path::Path>,
) -> Result<Option<(OutputStore, BTreeMap<u64, ItemRecord>)>, Failure> {
    let Some(url) = url else {
        return Ok(None);
    };
    let fail = |error: forloop_outputs::OutputsError| {
        Failure::new(forloop_core::ErrorChain(&error).to_string())
    };
    let store = OutputStore::open(url, StoreSettings::default()).map_err(fail)?;
    if let Some(dir) = download {
        let (files, bytes) = store.download(job, dir).await.map_err(fail)?;
        eprintln!(
            "runner: fetched {files} output files ({bytes} bytes) of job `{job}` into {}",
            dir.display()
        );
    }
    let records = store
        .records(job)
        .await
        .map_err(fail)?
        .into_iter()
        .filter_map(|record| Some((record.seq?, record)))
        .collect();
    Ok(Some((store, records)))
}

/// An item's value: from its receipt, else (a ledger that keeps done
/// items as counts) from its record in the store; or, for one too large
/// for either, its object's URL.
fn value_of(
    receipt: Option<&Receipt>,
    record: Option<(&OutputStore, &ItemRecord)>,
) -> (Option<ItemValue>, Option<String>) {
    if let Some(receipt) = receipt
        && (receipt.value.is_some() || receipt.value_url.is_some())
    {
        return (receipt.value.clone(), receipt.value_url.clone());
    }
    match record {
        Some((_, record)) if record.failed.is_none() && record.value.is_some() => {
            (record.value.clone(), None)
        }
        Some((store, record)) if record.failed.is_none() => (
            None,
            record.value_file.as_ref().map(|f| store.object_url(&f.key)),
        ),
        _ => (None, None),
    }
}

/// The job `--job` names, or the queue's only one; with several, the
/// newest, saying so.
pub(crate) fn pick<'a>(
    jobs: &'a [JobStatus],
    named: Option<&str>,
) -> Result<&'a JobStatus, Failure> {
    let names = || {
        jobs.iter()
            .map(|j| j.manifest.job.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match named {
        Some(name) => jobs.iter().find(|j| j.manifest.job == name).ok_or_else(|| {
            Failure::new(format!(
                "no job `{name}` on this queue; its jobs: {}",
                if jobs.is_empty() {
                    "none".to_string()
                } else {
                    names()
                }
            ))
        }),
        None => {
            let newest = jobs
                .iter()
                .max_by_key(|j| (j.manifest.created, j.manifest.job.clone()))
                .ok_or_else(|| {
                    Failure::new(
                        "this queue has no jobs yet: `runner submit` or `runner run` makes one",
                    )
                })?;
            if jobs.len() > 1 {
                eprintln!(
                    "runner: showing the newest job, `{}`; pick another with --job (jobs: {})",
                    newest.manifest.job,
                    names()
                );
            }
            Ok(newest)
        }
    }
}

fn last_line(text: Option<&str>) -> Option<String> {
    text?
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

fn escape(text: &str) -> String {
    crate::joblog::escape(text.as_bytes())
}
