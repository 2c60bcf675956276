//! Starting and stopping the broker: one pinned glommio executor per core, each accepting
//! connections on the same address (SO_REUSEPORT) and owning its share of the partitions.
//! Core 0 also drives the metadata quorum and registers the broker with it; the broker is
//! ready once every core listens and its registration is applied.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use super::config::BrokerConfig;
use super::connection;
use super::routing::CoreTask;
use super::shard::Shard;
use super::shared::Shared;
use crate::cluster::state::Command;

/// Messages that may wait in each core-to-core channel; a full channel makes the sender wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Pause between attempts to register with the quorum (while it has no leader yet).
const REGISTER_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A running broker, for tests and embedding: its address and a way to stop it.
pub struct Running {
    pub shared: Arc<Shared>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Running {
    pub fn address(&self) -> SocketAddr {
        self.shared
            .bound_address
            .get()
            .copied()
            .unwrap_or(self.shared.config.listen)
    }

    /// Stops every core cleanly and waits for them (a failure that stopped the broker
    /// earlier is logged; [`wait`](Running::wait) returns it).
    pub fn stop(self) {
        self.shared.request_shutdown();
        if let Err(why) = self.wait() {
            tracing::warn!(%why, "the broker had stopped by itself");
        }
    }

    /// Waits until every core has returned (after a shutdown request). An error says why the
    /// broker stopped by itself.
    pub fn wait(self) -> Result<(), String> {
        for executor in self.executors {
            let _ = executor.join();
        }
        match self.shared.failure() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// Starts the broker and returns once every core listens and the broker is registered with
/// the metadata quorum (which needs a majority of the voters running).
pub fn start(mut config: BrokerConfig) -> Result<Running, String> {
    if let Some(problem) = config.problem() {
        return Err(problem);
    }
    // `--max-request-bytes` alone must not leave the (larger) default batch limit behind.
    if config.max_batch_bytes > config.max_request_bytes {
        tracing::info!(
            max_batch_bytes = config.max_request_bytes,
            "max_batch_bytes lowered to max_request_bytes"
        );
        config.max_batch_bytes = config.max_request_bytes;
    }
    let online = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let cores = if config.cores == 0 {
        online
    } else {
        config.cores
    };
    let shared = Arc::new(Shared::new(config, cores)?);
    let mesh = MeshBuilder::<CoreTask, _>::full(cores, MESH_CHANNEL_CAPACITY);
    let mut executors = Vec::with_capacity(cores);
    for core in 0..cores {
        let shared = Arc::clone(&shared);
        let mesh = mesh.clone();
        let executor = LocalExecutorBuilder::new(if shared.config.pin_cores {
            Placement::Fixed((shared.config.first_cpu + core) % online)
        } else {
            Placement::Unbound
        })
        .name(&format!("shard-{core}"))
        .io_memory(shared.config.io_memory_bytes)
        .spawn(move || async move { run_core(core, shared, mesh).await })
        .map_err(|error| {
            format!(
                "cannot start core {core}: {error} (io_uring must be enabled and \
                     RLIMIT_MEMLOCK above io_memory_bytes; see README: memlock)"
            )
        })?;
        executors.push(executor);
    }
    // Wait until every core listens and the broker is registered (or something failed and
    // asked for shutdown).
    loop {
        if shared.cores_ready.load(Ordering::Acquire) == cores
            && shared.registered.load(Ordering::Acquire)
        {
            break;
        }
        if shared.is_shutting_down() {
            for executor in executors {
                let _ = executor.join();
            }
            return Err(shared
                .failure()
                .unwrap_or_else(|| "a core failed to start; see the log".to_string()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Running { shared, executors })
}

/// Runs the broker until SIGTERM or SIGINT (then shuts down cleanly), or until it fails.
pub fn run(config: BrokerConfig) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|error| format!("cannot install signal handlers: {error}"))?;
    let signals_handle = signals.handle();
    let running = start(config)?;
    tracing::info!(address = %running.address(), cores = running.shared.cores, "broker ready");
    println!("shardlog broker ready on {}", running.address());
    let shared = Arc::clone(&running.shared);
    let watcher = std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
            shared.request_shutdown();
        }
    });
    let stopped = running.wait();
    signals_handle.close();
    let _ = watcher.join();
    tracing::info!("stopped");
    stopped
}

/// Drives the metadata quorum on this core until it stops; a failure stops the broker, whose
/// metadata could no longer advance.
fn spawn_quorum_driver(shared: &Arc<Shared>) -> Result<glommio::Task<()>, String> {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(1000),
        glommio::Latency::Matters(Duration::from_millis(10)),
        "metadata-quorum",
    );
    let shared = Arc::clone(shared);
    glommio::spawn_local_into(
        async move {
            if let Err(error) = Arc::clone(shared.quorum()).run().await {
                shared.fail(format!("metadata quorum: {error}"));
            }
        },
        queue,
    )
    .map_err(|error| format!("cannot start the metadata quorum: {error}"))
}

/// Registers this broker (its advertised Kafka address) with the quorum, retrying until it
/// is applied, then marks the broker registered.
async fn register(shared: Arc<Shared>) {
    let (host, port) = shared.advertised();
    let command = Command::RegisterBroker {
        id: shared.config.node_id,
        host,
        port,
    };
    while !shared.is_shutting_down() {
        match shared.quorum().propose(command.clone()).await {
            Ok(()) => {
                tracing::info!(
                    node_id = shared.config.node_id,
                    "registered with the metadata quorum"
                );
                shared.registered.store(true, Ordering::Release);
                return;
            }
            Err(error) => {
                tracing::info!(%error, "cannot register with the metadata quorum yet; retrying");
                glommio::timer::sleep(REGISTER_RETRY_INTERVAL).await;
            }
        }
    }
}

async fn run_core(
    core: usize,
    shared: Arc<Shared>,
    mesh: MeshBuilder<CoreTask, glommio::channels::channel_mesh::Full>,
) {
    let Ok((senders, mut receivers)) = mesh.join().await else {
        tracing::error!(core, "cannot join the core mesh");
        shared.request_shutdown();
        return;
    };
    let quorum_driver = if core == 0 {
        match spawn_quorum_driver(&shared) {
            Ok(task) => Some(task),
            Err(why) => {
                shared.fail(why);
                return;
            }
        }
    } else {
        None
    };
    let shard = Rc::new(Shard::new(core, Arc::clone(&shared), senders));
    for (_, stream) in receivers.streams() {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            while let Some(task) = stream.recv().await {
                glommio::spawn_local(task(Rc::clone(&shard))).detach();
            }
        })
        .detach();
    }
    shard.open_existing().await;
    let replication = glommio::spawn_local(Rc::clone(&shard).follow_metadata());

    // Core 0 binds first so a configured port of 0 becomes one port that every core shares.
    let listener = if core == 0 {
        let bound = TcpListener::bind(shared.config.listen);
        if let Ok(listener) = &bound {
            if let Ok(address) = listener.local_addr() {
                let _ = shared.bound_address.set(address);
            }
        }
        bound
    } else {
        while shared.bound_address.get().is_none() && !shared.is_shutting_down() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        TcpListener::bind(
            shared
                .bound_address
                .get()
                .copied()
                .unwrap_or(shared.config.listen),
        )
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(core, %error, address = %shared.config.listen, "cannot listen");
            shared.request_shutdown();
            return;
        }
    };
    shared.cores_ready.fetch_add(1, Ordering::AcqRel);
    if core == 0 {
        glommio::spawn_local(register(Arc::clone(&shared))).detach();
    }

    let retention = {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            let interval =
                Duration::from_millis(shard.shared.config.retention_check_interval_ms.max(10));
            loop {
                glommio::timer::sleep(interval).await;
                if shard.shared.is_shutting_down() {
                    break;
                }
                shard.enforce_retention().await;
            }
        })
    };

    let connections = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shared.shutdown_requested().await;
                None
            })
            .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => {
                if connections.get() >= shared.config.max_connections_per_core {
                    tracing::warn!(core, "connection limit reached; closing a new connection");
                    drop(stream);
                    continue;
                }
                connections.set(connections.get() + 1);
                let shard = Rc::clone(&shard);
                let connections = Rc::clone(&connections);
                glommio::spawn_local(async move {
                    connection::serve(shard, stream).await;
                    connections.set(connections.get() - 1);
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!(core, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    // Connections stop reading at shutdown and finish what they started; give them a moment,
    // then close the logs cleanly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while connections.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(retention);
    replication.await;
    if let Some(driver) = quorum_driver {
        // After the connections: a request still running may wait on a proposal.
        shared.quorum().stop();
        driver.await;
    }
    shard.close_all().await;
    tracing::info!(core, "core stopped");
}
