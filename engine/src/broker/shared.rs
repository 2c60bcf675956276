//! What every core of a broker shares: its configuration, the cluster metadata, the
//! producer-id block, the shutdown signal and the readiness flags. Built once by `server`
//! before the executors start; every `Shard` holds an `Arc` of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use event_listener::Event;

use super::config::BrokerConfig;
use super::metadata::Metadata;
use super::ownership::{check_port_free, lock_data_dir, DataDirLock};
use super::producer_ids::{ProducerIdError, ProducerIds};
use crate::cluster::quorum::Quorum;

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
    pub(super) cores_ready: AtomicUsize,
    /// Set once this broker's RegisterBroker is applied.
    pub(super) registered: AtomicBool,
    /// Why the broker must stop, if something failed that it cannot serve without.
    failure: Mutex<Option<String>>,
    /// Held for the broker's life: no other process opens these logs.
    _data_dir_lock: DataDirLock,
}

impl Shared {
    pub(super) fn new(config: BrokerConfig, cores: usize) -> Result<Shared, String> {
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
    pub(super) fn fail(&self, why: String) {
        tracing::error!(%why, "stopping the broker");
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert(why);
        self.request_shutdown();
    }

    pub(super) fn failure(&self) -> Option<String> {
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
