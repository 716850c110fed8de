//! The raw redis-rs baseline the Redis driver is held to.

use std::time::Instant;

use crate::{BenchArgs, Failure};

/// The raw redis-rs baseline: pipelined `RPUSH` of 1,000, then per client
/// `LPOP` of a batch, `ZADD` (the lease), `ZREM` (the ack).
pub(crate) async fn bench(url: &str, name: &str, args: &BenchArgs) -> Result<u8, Failure> {
    use redis::AsyncCommands;
    let failure = |e: redis::RedisError| Failure::new(format!("raw redis bench: {e}"));
    let client = redis::Client::open(url).map_err(failure)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(failure)?;
    let (list, leased) = (
        format!("{{raw:{name}}}:list"),
        format!("{{raw:{name}}}:leased"),
    );
    let _: () = con.del(&[&list, &leased]).await.map_err(failure)?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.items {
        let n = (args.items - sent).min(1000);
        let batch: Vec<String> = (sent..sent + n).map(|i| i.to_string()).collect();
        let _: () = con.rpush(&list, batch).await.map_err(failure)?;
        sent += n;
    }
    let publish_rate = args.items as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let client = client.clone();
        let (list, leased) = (list.clone(), leased.clone());
        let batch = args.concurrency as usize;
        set.spawn(async move {
            let mut con = client.get_multiplexed_async_connection().await?;
            loop {
                // Pop a batch, lease it (deadline 30 s out), "run" it, ack it.
                let ids: Option<Vec<String>> = redis::cmd("LPOP")
                    .arg(&list)
                    .arg(batch)
                    .query_async(&mut con)
                    .await?;
                let Some(ids) = ids else {
                    return Ok::<_, redis::RedisError>(());
                };
                let deadline = 30_000u64;
                let pairs: Vec<(u64, &String)> = ids.iter().map(|id| (deadline, id)).collect();
                let _: () = con.zadd_multiple(&leased, &pairs).await?;
                let _: () = con.zrem(&leased, &ids).await?;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined
            .map_err(|e| Failure::new(e.to_string()))?
            .map_err(failure)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "queue redis  mode raw redis-rs  items {}  clients {}  batch {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)",
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / secs
    );
    Ok(0)
}
