//! `runner launch`: start workers wherever `--cluster` says and follow
//! them until they end, written once for every launcher; and [`follow`],
//! the watch both `launch` and `run` keep over a launch.

use forloop_core::cluster::{ClusterLauncher, LaunchOutcome, LaunchState};
use forloop_core::worker::Shutdown;
use forloop_core::{LaunchHandle, WorkerCounts};

use super::cluster::{cluster_flags, worker_request};
use super::context::Context;
use super::worker_settings::check_worker_opts;
use crate::Failure;
use crate::choice::Chosen;
use crate::cli::LaunchArgs;

/// How a followed launch ended.
#[derive(Debug)]
pub(crate) struct Followed {
    /// The last state read.
    pub(crate) state: LaunchState,
    /// Whether a stop already tore the launch down.
    pub(crate) torn_down: bool,
}

/// Follow a launch until it is over, calling `on_tick` at the launcher's
/// pace and `seen` with each state it reads; when `stop` fires (SIGTERM,
/// SIGINT) tear it down, so its workers hand their items back.
pub(crate) async fn follow(
    launcher: &dyn ClusterLauncher,
    (handle, cluster): (&LaunchHandle, &str),
    stop: &Shutdown,
    mut on_tick: impl FnMut(),
    seen: &mut (dyn for<'s> FnMut(&'s LaunchState) + Send),
) -> Result<Followed, Failure> {
    let mut tick = tokio::time::interval(launcher.poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wait = launcher.wait(handle, seen);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            state = &mut wait => {
                let state = state.map_err(|error| {
                    if !launcher.persists() {
                        return Failure::from(error);
                    }
                    Failure::new(format!(
                        "{error}. {} may still be running: `runner --name {handle} --cluster \
                         {cluster} cluster status` shows it, `... cluster teardown` stops it",
                        launcher.name_of(handle)
                    ))
                })?;
                return Ok(Followed { state, torn_down: false });
            }
            _ = tick.tick() => on_tick(),
            _ = stop.stopping() => {
                let state = launcher.state(handle).await;
                launcher.teardown(handle).await?;
                if launcher.persists() {
                    eprintln!(
                        "runner: deleted {}; its workers get SIGTERM and hand their items back",
                        launcher.name_of(handle)
                    );
                }
                let state = state.unwrap_or(LaunchState {
                    counts: WorkerCounts::default(),
                    outcome: None,
                });
                return Ok(Followed { state, torn_down: true });
            }
        }
    }
}

pub(crate) async fn launch(context: &Context<'_>, args: LaunchArgs) -> Result<u8, Failure> {
    let plug = context.launcher()?;
    let (driver, address) = context.driver("launch", None)?;
    let mut flags = cluster_flags(&args.cluster);
    if plug.scales_on_queue(&flags) {
        let config = context.queue_config(Some(&args.worker));
        flags.scale_trigger = Some(driver.scale_trigger(&address, &config).await?);
    }
    let request = worker_request(
        context,
        (&*driver, &address),
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
        args.job.as_deref(),
        false,
    );
    let spec = plug.spec(&request, &flags)?;
    if args.dry_run {
        print!("{}", plug.render(&spec, &flags)?);
        return Ok(0);
    }
    if plug.runs_here() {
        Chosen::choose(context.builtin.as_ref(), &args.worker, &args.command)?;
    }
    let queue = context
        .open(&*driver, &address, context.queue_config(Some(&args.worker)))
        .await?
        .queue;
    check_worker_opts(
        &args.worker,
        &queue.capabilities(),
        &driver.redact(&address),
    )?;
    let launcher = plug.connect(&flags).await?;
    launcher.check(&spec).await?;
    // The workers write there: checked from here before any is started.
    let outputs = crate::outputs::open(&args.worker).await?;
    let handle = launcher.launch(&spec).await?;
    let cluster = context.cluster.to_string();
    if let Some(line) = launcher.launched(&handle, &spec, &cluster) {
        eprintln!("runner: {line}");
    }
    if !launcher.ends() {
        return Ok(0);
    }
    if args.detach && launcher.persists() {
        eprintln!("runner: {}", launcher.follow_hint(&handle, &cluster));
        return Ok(0);
    }
    let stop = Shutdown::new();
    let received = crate::signals::listen(stop.clone(), args.worker.grace);
    let mut last = String::new();
    let followed = follow(
        &*launcher,
        (&handle, &cluster),
        &stop,
        || {},
        &mut |state| {
            let now = launcher.describe_workers(&state.counts);
            if now != last {
                tracing::info!("{now}");
                last = now;
            }
        },
    )
    .await?;
    // Workers here end with this process: clean up. A launch that persists
    // is left to its platform (a Job's TTL), for `runner cluster status`.
    if !launcher.persists() && !followed.torn_down {
        launcher.teardown(&handle).await?;
    }
    eprintln!("runner: {}", launcher.describe(&followed.state));
    if let Some(code) = received.exit_code() {
        return Ok(code);
    }
    // The workers ended: say so if the queue still holds items. A reading
    // that fails (this process's connection may not have outlived a server
    // restart the workers rode out) leaves the verdict to the workers.
    match queue.backlog().await {
        Ok(backlog) if backlog.is_empty() == Some(false) => {
            eprintln!(
                "runner: {} items are still in the queue (`runner status`); launch again to finish them",
                backlog.ready.value().unwrap_or(0) + backlog.in_flight.value().unwrap_or(0)
            );
            return Ok(1);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(
            "cannot read the queue after the workers ended: {}",
            forloop_core::ErrorChain(&error)
        ),
    }
    let complete = followed.state.outcome == Some(LaunchOutcome::Complete);
    if complete {
        crate::outputs::finish(outputs.as_ref(), args.job.as_deref()).await;
    }
    Ok(u8::from(!complete))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use forloop_core::{LaunchError, LaunchSpec};

    use super::*;

    /// A launch that is over after `polls` reads, and records what was done.
    #[derive(Debug, Default)]
    struct Fake {
        polls: u32,
        read: Mutex<u32>,
        torn_down: Mutex<bool>,
        persists: bool,
        fail: bool,
    }

    #[async_trait]
    impl ClusterLauncher for Fake {
        async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError> {
            Ok(LaunchHandle(spec.name.clone()))
        }
        async fn state(&self, _: &LaunchHandle) -> Result<LaunchState, LaunchError> {
            if self.fail {
                return Err(LaunchError::new("the API server is gone"));
            }
            let mut read = self.read.lock().unwrap();
            *read += 1;
            let over = *read >= self.polls;
            Ok(LaunchState {
                counts: WorkerCounts {
                    desired: 2,
                    running: if over { 0 } else { 2 },
                    succeeded: if over { 2 } else { 0 },
                    ..WorkerCounts::default()
                },
                outcome: over.then_some(LaunchOutcome::Complete),
            })
        }
        async fn scale(&self, _: &LaunchHandle, _: u32) -> Result<(), LaunchError> {
            Ok(())
        }
        async fn teardown(&self, _: &LaunchHandle) -> Result<(), LaunchError> {
            *self.torn_down.lock().unwrap() = true;
            Ok(())
        }
        fn render(&self, _: &LaunchSpec) -> Result<String, LaunchError> {
            Ok(String::new())
        }
        fn persists(&self) -> bool {
            self.persists
        }
        fn name_of(&self, handle: &LaunchHandle) -> String {
            format!("Fake {handle}")
        }
    }

    fn handle() -> LaunchHandle {
        LaunchHandle("videos".into())
    }

    #[tokio::test(start_paused = true)]
    async fn follow_returns_the_final_state_and_ticks_meanwhile() {
        let fake = Fake {
            polls: 3,
            ..Fake::default()
        };
        let (mut ticks, mut seen) = (0, Vec::new());
        let followed = follow(
            &fake,
            (&handle(), "fake"),
            &Shutdown::new(),
            || ticks += 1,
            &mut |state| seen.push(state.counts.running),
        )
        .await
        .unwrap();
        assert_eq!(followed.state.outcome, Some(LaunchOutcome::Complete));
        assert!(!followed.torn_down);
        assert_eq!(seen, [2, 2, 0], "every read is seen");
        assert!(ticks >= 2, "progress ticked {ticks} times");
        assert!(!*fake.torn_down.lock().unwrap(), "the caller tears down");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_tears_the_launch_down_at_once() {
        let fake = Fake {
            polls: u32::MAX,
            ..Fake::default()
        };
        let stop = Shutdown::new();
        stop.stop();
        let followed = follow(&fake, (&handle(), "fake"), &stop, || {}, &mut |_| {})
            .await
            .unwrap();
        assert!(followed.torn_down);
        assert!(*fake.torn_down.lock().unwrap());
        assert_eq!(followed.state.outcome, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_persisting_launch_lost_from_view_says_how_to_find_it() {
        let fake = Fake {
            fail: true,
            persists: true,
            ..Fake::default()
        };
        let started = tokio::time::Instant::now();
        let error = follow(
            &fake,
            (&handle(), "fake"),
            &Shutdown::new(),
            || {},
            &mut |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("the API server is gone. Fake videos may still be running")
                && error.contains("`runner --name videos --cluster fake cluster status`"),
            "{error}"
        );
        // Five failed reads are forgiven; the sixth, a poll later, is not.
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
