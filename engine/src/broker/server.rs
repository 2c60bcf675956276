//! Starting and stopping the broker: one pinned glommio executor per core, each accepting
//! connections on the same address (SO_REUSEPORT) and owning its share of the partitions.
//! Core 0 also drives the metadata quorum and registers the broker with it; the broker is
//! ready once every core listens and its registration is applied.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use event_listener::Event;
use futures_lite::FutureExt;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use super::config::BrokerConfig;
use super::connection;
use super::metadata::Metadata;
use super::ownership::{check_port_free, lock_data_dir, DataDirLock};
use super::producer_ids::{ProducerIdError, ProducerIds};
use super::routing::CoreTask;
use super::shard::Shard;
use crate::cluster::quorum::Quorum;
use crate::cluster::state::Command;

/// Messages that may wait in each core-to-core channel; a full channel makes the sender wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Pause between attempts to register with the quorum (while it has no leader yet).
const REGISTER_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// What every core shares. `Send + Sync`; read without locks on the request path.
pub struct Shared {
    pub config: BrokerConfig,
    pub cores: usize,
    pub metadata: Metadata,
    pub cluster_id: String,
    /// The address the first core bound (the configured port, or the one the OS chose for 0).
    pub bound_address: OnceLock<SocketAddr>,
    producer_ids: ProducerIds,
    shutting_down: AtomicBool,
    shutdown: Event,
    cores_ready: AtomicUsize,
    /// Set once this broker's RegisterBroker is applied.
    registered: AtomicBool,
    /// Why the broker must stop, if something failed that it cannot serve without.
    failure: Mutex<Option<String>>,
    /// Held for the broker's life: no other process opens these logs.
    _data_dir_lock: DataDirLock,
}

impl Shared {
    fn new(config: BrokerConfig, cores: usize) -> Result<Shared, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|error| format!("cannot create {}: {error}", config.data_dir.display()))?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        check_port_free(config.listen)?;
        let quorum = Quorum::open(config.quorum_config()?).map_err(|error| error.to_string())?;
        let metadata = Metadata::new(quorum, config.default_replication_factor);
        let cluster_id = match (&config.cluster_id, &config.quorum) {
            (Some(id), _) => id.clone(),
            // Every broker of a quorum must report the same id (clients refuse to talk to
            // brokers of two clusters at once): derive it from the voters they all share.
            (None, Some(voters)) if !voters.trim().is_empty() => cluster_id_of(voters),
            (None, _) => load_or_create(&config.data_dir.join("cluster-id"), || {
                uuid::Uuid::new_v4().simple().to_string()
            })?,
        };
        let producer_ids = ProducerIds::open(
            &crate::Storage::Buffered,
            config.data_dir.join("producer-ids"),
            config.node_id,
        )
        .map_err(|error| error.to_string())?;
        Ok(Shared {
            config,
            cores,
            metadata,
            cluster_id,
            bound_address: OnceLock::new(),
            producer_ids,
            shutting_down: AtomicBool::new(false),
            shutdown: Event::new(),
            cores_ready: AtomicUsize::new(0),
            registered: AtomicBool::new(false),
            failure: Mutex::new(None),
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The metadata quorum this broker belongs to.
    pub fn quorum(&self) -> &Arc<Quorum> {
        self.metadata.quorum()
    }

    /// A producer id never handed out before by any broker, even across restarts
    /// ([`ProducerIds`]: one durable file write per block of ids, off the executor's thread,
    /// none for the others).
    pub async fn allocate_producer_id(&self) -> Result<i64, ProducerIdError> {
        self.producer_ids.allocate(&crate::Storage::Buffered).await
    }

    /// Stops the broker because of `why` (an error it cannot serve without).
    fn fail(&self, why: String) {
        tracing::error!(%why, "stopping the broker");
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert(why);
        self.request_shutdown();
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Asks every core to stop accepting, finish, close its logs and return.
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.notify(usize::MAX);
    }

    /// Resolves once shutdown has been requested.
    pub async fn shutdown_requested(&self) {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let listener = self.shutdown.listen();
            if self.is_shutting_down() {
                return;
            }
            listener.await;
        }
    }

    /// The host and port to advertise in metadata.
    pub fn advertised(&self) -> (String, i32) {
        let address = self
            .bound_address
            .get()
            .copied()
            .unwrap_or(self.config.listen);
        let host = self
            .config
            .advertised_host
            .clone()
            .unwrap_or_else(|| address.ip().to_string());
        (host, i32::from(address.port()))
    }
}

/// A cluster id that every broker computes alike from the quorum's voter list (FNV-1a,
/// two seeds, as a UUID).
fn cluster_id_of(voters: &str) -> String {
    let mut sorted: Vec<&str> = voters.split(',').map(str::trim).collect();
    sorted.sort_unstable();
    let text = sorted.join(",");
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    uuid::Uuid::from_u64_pair(fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4))
        .simple()
        .to_string()
}

fn load_or_create(
    path: &std::path::Path,
    create: impl FnOnce() -> String,
) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let value = create();
            crate::Storage::Buffered
                .write_file_atomic(path, value.as_bytes())
                .map_err(|error| error.to_string())?;
            Ok(value)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

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
