//! A local cluster for `--brokers N`: N real broker processes on 127.0.0.1, each in its own
//! data directory, forming one metadata quorum; stopped (SIGTERM) and deleted afterwards.
//!
//! The brokers are this same executable run as `harness broker ...`: the broker's command
//! line lives in the library (`shardlog::broker::cli`), so `cargo run -p shardlog-harness`
//! needs no second binary built beside it. Each broker gets one core; brokers are pinned
//! round-robin over the machine's CPUs when there are at least as many CPUs as brokers, and
//! left to the kernel's scheduler otherwise (pinned, two would share a CPU while another
//! idles).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::faults::FaultInjector;
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
    /// A broker silent this long is fenced and its partitions get new leaders (Kafka's
    /// `broker.session.timeout.ms`); `None`: the brokers' default (Kafka's, 9 s).
    pub session_timeout: Option<Duration>,
}

/// A broker's configuration file.
fn broker_config(spec: &ClusterSpec) -> String {
    let mut config = format!(
        "io_memory_bytes = {}\nmin_insync_replicas = {}\n",
        spec.io_memory_bytes, spec.min_insync_replicas
    );
    if let Some(timeout) = spec.session_timeout {
        // Kafka's ratio: a heartbeat every 2 s for a 9 s session.
        let timeout_ms = timeout.as_millis().max(1) as u64;
        config += &format!(
            "broker_session_timeout_ms = {timeout_ms}\nheartbeat_interval_ms = {}\n",
            (timeout_ms * 2 / 9).max(10)
        );
    }
    config
}

/// One broker of the cluster.
struct LocalBroker {
    node_id: usize,
    /// `None` once stopped or killed.
    child: Option<Child>,
    /// Where it serves Kafka clients (known once it printed its ready line); a restart
    /// listens there again.
    address: String,
    controller_port: u16,
    log_path: PathBuf,
}

/// A running local cluster. Dropping it kills what is still running.
pub struct LocalCluster {
    brokers: Vec<LocalBroker>,
    data_dir: PathBuf,
    spec: ClusterSpec,
    executable: PathBuf,
    quorum: String,
    /// Index of the broker `kill` stopped last, for `restart`.
    killed: Option<usize>,
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
        let mut cluster = LocalCluster {
            brokers: Vec::new(),
            data_dir: spec.data_dir.clone(),
            spec: spec.clone(),
            executable,
            quorum,
            killed: None,
        };
        let (ready_sender, ready) = mpsc::channel();
        for (index, &controller_port) in controller_ports.iter().enumerate() {
            let node_id = index + 1;
            let dir = cluster.broker_dir(node_id);
            std::fs::create_dir_all(&dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            let config = dir.join("broker.toml");
            std::fs::write(&config, broker_config(spec))
                .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
            cluster.brokers.push(LocalBroker {
                node_id,
                child: None,
                address: String::new(),
                controller_port,
                log_path: dir.join("broker.log"),
            });
            cluster.spawn(index, "127.0.0.1:0", ready_sender.clone())?;
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

    fn broker_dir(&self, node_id: usize) -> PathBuf {
        self.data_dir.join(format!("broker-{node_id}"))
    }

    /// Starts broker `index` listening for clients on `listen`; its ready line's address
    /// goes to `ready`. Its log is appended to (a restart keeps the first run's log).
    fn spawn(
        &mut self,
        index: usize,
        listen: &str,
        ready: mpsc::Sender<(usize, String)>,
    ) -> Result<(), String> {
        let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
        let broker = &self.brokers[index];
        let node_id = broker.node_id;
        let dir = self.broker_dir(node_id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&broker.log_path)
            .map_err(|error| format!("cannot open {}: {error}", broker.log_path.display()))?;
        let mut child = Command::new(&self.executable)
            .arg("broker")
            .args(["--config", &dir.join("broker.toml").display().to_string()])
            .args(["--node-id", &node_id.to_string()])
            .args(["--quorum", &self.quorum])
            .args([
                "--controller-listen",
                &format!("127.0.0.1:{}", broker.controller_port),
            ])
            .args(["--listen", listen])
            .args(["--data-dir", &dir.join("data").display().to_string()])
            .args(["--cores", "1"])
            .args(["--first-cpu", &(index % cpus).to_string()])
            // More brokers than CPUs: pinned, two would share one CPU while another idles;
            // let the kernel balance them.
            .args(["--pin-cores", &(self.spec.brokers <= cpus).to_string()])
            .args(["--strategy", &self.spec.strategy])
            .args(["--durability", &self.spec.durability])
            .args(["--segment-bytes", &self.spec.segment_bytes.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|error| format!("cannot start broker {node_id}: {error}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix(READY_PREFIX) {
                    let _ = ready.send((index, address.trim().to_string()));
                }
            }
        });
        self.brokers[index].child = Some(child);
        Ok(())
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

    /// Stops every broker with SIGTERM (killing any that hangs) and deletes the data, or
    /// keeps it (logs included) when `keep_data`, for a run that failed.
    pub fn stop(mut self, keep_data: bool) -> Result<(), String> {
        let mut problems = Vec::new();
        for broker in &mut self.brokers {
            if let Some(child) = broker.child.take() {
                if let Err(problem) = terminate(child) {
                    problems.push(format!(
                        "broker {}: {problem}; the end of its log:\n{}",
                        broker.node_id,
                        log_tail(&broker.log_path)
                    ));
                }
            }
        }
        if keep_data {
            eprintln!(
                "harness: the cluster's data and logs are kept in {}",
                self.data_dir.display()
            );
        } else {
            remove_data(&self.data_dir);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl FaultInjector for LocalCluster {
    fn kill(&mut self, address: &str) -> Result<usize, String> {
        let index = self
            .brokers
            .iter()
            .position(|broker| broker.address == address)
            .ok_or_else(|| format!("no broker of this cluster serves at {address}"))?;
        let broker = &mut self.brokers[index];
        let mut child = broker
            .child
            .take()
            .ok_or_else(|| format!("broker {} is not running", broker.node_id))?;
        // Child::kill sends SIGKILL.
        child
            .kill()
            .and_then(|()| child.wait().map(|_| ()))
            .map_err(|error| format!("cannot kill broker {}: {error}", broker.node_id))?;
        self.killed = Some(index);
        Ok(broker.node_id)
    }

    fn restart(&mut self) -> Result<(), String> {
        let index = self
            .killed
            .take()
            .ok_or_else(|| "no broker was killed".to_string())?;
        let listen = self.brokers[index].address.clone();
        // Nobody waits for its ready line: clients find it through metadata once it serves.
        let (ready, _) = mpsc::channel();
        self.spawn(index, &listen, ready)
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

/// The last lines of a broker's log (the data directory, logs included, is deleted at stop).
fn log_tail(path: &Path) -> String {
    const LINES: usize = 15;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

fn remove_data(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!("harness: cannot delete {}: {error}", dir.display());
        }
    }
}
