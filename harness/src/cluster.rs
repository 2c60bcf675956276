//! A local cluster for `--brokers N`: N real broker processes on 127.0.0.1, each in its own
//! data directory, forming one metadata quorum; stopped (SIGTERM) and deleted afterwards.
//!
//! The brokers are this same executable run as `harness broker ...`: the broker's command
//! line lives in the library (`shardlog::broker::cli`), so `cargo run -p shardlog-harness`
//! needs no second binary built beside it. Each broker gets one core; brokers are pinned
//! round-robin over the machine's CPUs.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the broker prints on stdout once it serves.
const READY_PREFIX: &str = "shardlog broker ready on ";
/// Longest the cluster may take to come up (a quorum must elect and register everyone).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a SIGTERM'd broker may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to run the brokers.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub brokers: usize,
    pub strategy: String,
    pub durability: String,
    /// acks=all needs this many in-sync replicas.
    pub min_insync_replicas: usize,
    pub segment_bytes: u64,
    /// Locked memory each broker registers for DMA buffers.
    pub io_memory_bytes: u64,
    /// Parent of the brokers' data directories (deleted at stop).
    pub data_dir: PathBuf,
}

/// One running broker.
struct LocalBroker {
    node_id: usize,
    child: Option<Child>,
    address: String,
    log_path: PathBuf,
}

/// A running local cluster. Dropping it kills what is still running.
pub struct LocalCluster {
    brokers: Vec<LocalBroker>,
    data_dir: PathBuf,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}

impl LocalCluster {
    /// Starts every broker and returns once all of them serve.
    pub fn start(spec: &ClusterSpec) -> Result<LocalCluster, String> {
        let executable = std::env::current_exe()
            .map_err(|error| format!("cannot find the harness executable: {error}"))?;
        let _ = std::fs::remove_dir_all(&spec.data_dir);
        std::fs::create_dir_all(&spec.data_dir)
            .map_err(|error| format!("cannot create {}: {error}", spec.data_dir.display()))?;
        let controller_ports = (0..spec.brokers)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let quorum = controller_ports
            .iter()
            .enumerate()
            .map(|(index, port)| format!("{}@127.0.0.1:{port}", index + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
        let mut cluster = LocalCluster {
            brokers: Vec::new(),
            data_dir: spec.data_dir.clone(),
        };
        let (ready_sender, ready) = mpsc::channel();
        for (index, port) in controller_ports.iter().enumerate() {
            let node_id = index + 1;
            let dir = spec.data_dir.join(format!("broker-{node_id}"));
            std::fs::create_dir_all(&dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            let config = dir.join("broker.toml");
            std::fs::write(
                &config,
                format!(
                    "io_memory_bytes = {}\nmin_insync_replicas = {}\n",
                    spec.io_memory_bytes, spec.min_insync_replicas
                ),
            )
            .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
            let log_path = dir.join("broker.log");
            let log = File::create(&log_path)
                .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
            let mut child = Command::new(&executable)
                .arg("broker")
                .args(["--config", &config.display().to_string()])
                .args(["--node-id", &node_id.to_string()])
                .args(["--quorum", &quorum])
                .args(["--controller-listen", &format!("127.0.0.1:{port}")])
                .args(["--listen", "127.0.0.1:0"])
                .args(["--data-dir", &dir.join("data").display().to_string()])
                .args(["--cores", "1"])
                .args(["--first-cpu", &(index % cpus).to_string()])
                .args(["--strategy", &spec.strategy])
                .args(["--durability", &spec.durability])
                .args(["--segment-bytes", &spec.segment_bytes.to_string()])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|error| format!("cannot start broker {node_id}: {error}"))?;
            let stdout = child.stdout.take().expect("stdout is piped");
            let ready_sender = ready_sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(address) = line.strip_prefix(READY_PREFIX) {
                        let _ = ready_sender.send((index, address.trim().to_string()));
                    }
                }
            });
            cluster.brokers.push(LocalBroker {
                node_id,
                child: Some(child),
                address: String::new(),
                log_path,
            });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut waiting = spec.brokers;
        while waiting > 0 {
            if let Some(dead) = cluster.exited() {
                return Err(format!(
                    "broker {dead} exited while starting; logs: {}",
                    cluster.log_paths()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{waiting} of {} brokers not ready within {READY_TIMEOUT:?}; logs: {}",
                    spec.brokers,
                    cluster.log_paths()
                ));
            }
            if let Ok((index, address)) = ready.recv_timeout(Duration::from_millis(100)) {
                cluster.brokers[index].address = address;
                waiting -= 1;
            }
        }
        Ok(cluster)
    }

    /// The first broker's address (the harness's own client takes one bootstrap address).
    pub fn first_address(&self) -> &str {
        &self.brokers[0].address
    }

    /// Process ids of the running brokers.
    pub fn pids(&self) -> Vec<u32> {
        self.brokers
            .iter()
            .filter_map(|broker| broker.child.as_ref().map(Child::id))
            .collect()
    }

    fn log_paths(&self) -> String {
        self.brokers
            .iter()
            .map(|broker| broker.log_path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The node id of a broker that has exited, if any.
    fn exited(&mut self) -> Option<usize> {
        self.brokers.iter_mut().find_map(|broker| {
            let child = broker.child.as_mut()?;
            matches!(child.try_wait(), Ok(Some(_))).then_some(broker.node_id)
        })
    }

    /// Stops every broker with SIGTERM (killing any that hangs) and deletes the data.
    pub fn stop(mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for broker in &mut self.brokers {
            if let Some(child) = broker.child.take() {
                if let Err(problem) = terminate(child) {
                    problems.push(format!("broker {}: {problem}", broker.node_id));
                }
            }
        }
        remove_data(&self.data_dir);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for broker in &mut self.brokers {
            if let Some(mut child) = broker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM, then wait; SIGKILL after STOP_TIMEOUT.
fn terminate(mut child: Child) -> Result<(), String> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if started.elapsed() > STOP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not stop within {STOP_TIMEOUT:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn remove_data(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!("harness: cannot delete {}: {error}", dir.display());
        }
    }
}
