//! Carries [`frame`]s between voters over TCP, on the driver's executor (core 0).
//!
//! - One listener on this voter's controller address; each accepted connection is read
//!   frame by frame into the quorum's inbox. Raft messages not addressed to this node or not
//!   from a voter are dropped. A connection that starts with `subscribe` is an observer's
//!   session and is served by [`subscription::serve`].
//! - An observer has no listener; its senders only carry its heartbeats to every voter.
//! - One sender per other voter: it dials the voter's address, writes whatever its queue
//!   holds, and on any failure drops the connection, clears the queue (stale raft messages
//!   are useless: raft resends what matters) and dials again after a pause.
//!
//! Nothing blocks the executor: connects, reads and writes are glommio's async socket
//! operations, with timeouts. Bounds: `PEER_QUEUE_FRAMES_MAX` frames per peer,
//! `INBOUND_CONNECTIONS_MAX` accepted connections, `frame::FRAME_BYTES_MAX` per frame.
//!
//! [`frame`]: super::frame

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};

use super::frame::{read_frame, Frame};
use super::subscription;
use super::{raft_id, Quorum, QuorumError};
use crate::state::BrokerId;

/// Frames waiting for one peer; further frames are refused (raft counts the peer as
/// unreachable and retries later).
pub const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Connections accepted at once (each voter dials once; a reconnect may overlap).
pub const INBOUND_CONNECTIONS_MAX: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between failed dials of one peer.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Resolves once the transport stops. Single-threaded (core 0).
#[derive(Default)]
struct StopSignal {
    stopped: Cell<bool>,
    event: Event,
}

impl StopSignal {
    async fn wait(&self) {
        loop {
            if self.stopped.get() {
                return;
            }
            let listener = self.event.listen();
            if self.stopped.get() {
                return;
            }
            listener.await;
        }
    }
}

/// One other voter, as the sender sees it.
struct Peer {
    broker_id: BrokerId,
    address: SocketAddr,
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued: Event,
    connected: Cell<bool>,
}

impl Peer {
    async fn wait_for_frames(&self) {
        loop {
            if !self.queue.borrow().is_empty() {
                return;
            }
            let listener = self.queued.listen();
            if !self.queue.borrow().is_empty() {
                return;
            }
            listener.await;
        }
    }
}

/// The running transport of one voter. Lives on the driver's executor.
pub(super) struct Transport {
    peers: HashMap<u64, Rc<Peer>>,
    stop: Rc<StopSignal>,
    tasks: RefCell<Vec<glommio::Task<()>>>,
}

impl Transport {
    /// Binds the listener and starts the accept loop and one sender per other voter.
    pub(super) fn start(quorum: &Arc<Quorum>) -> Result<Rc<Transport>, QuorumError> {
        let config = &quorum.config;
        let stop = Rc::new(StopSignal::default());
        let mut tasks = Vec::with_capacity(config.voters.len() + 1);
        if !config.is_observer() {
            tasks.push(Self::listen(quorum, &stop)?);
        }
        let peers: HashMap<u64, Rc<Peer>> = config
            .voters
            .iter()
            .filter(|(id, _)| *id != config.node_id)
            .map(|(id, address)| {
                let peer = Peer {
                    broker_id: *id,
                    address: *address,
                    queue: RefCell::new(VecDeque::new()),
                    queued: Event::new(),
                    connected: Cell::new(false),
                };
                (raft_id(*id), Rc::new(peer))
            })
            .collect();
        for peer in peers.values() {
            tasks.push(glommio::spawn_local(send_loop(
                Rc::clone(peer),
                Rc::clone(&stop),
            )));
        }
        Ok(Rc::new(Transport {
            peers,
            stop,
            tasks: RefCell::new(tasks),
        }))
    }

    /// Binds this voter's controller address and starts accepting connections.
    fn listen(
        quorum: &Arc<Quorum>,
        stop: &Rc<StopSignal>,
    ) -> Result<glommio::Task<()>, QuorumError> {
        let config = &quorum.config;
        let own_address = config
            .voters
            .iter()
            .find(|(id, _)| *id == config.node_id)
            .map(|(_, address)| *address);
        let listen = config
            .listen
            .or(own_address)
            .ok_or_else(|| QuorumError::Config("no controller address to listen on".into()))?;
        let listener = TcpListener::bind(listen).map_err(|error| QuorumError::Listen {
            address: listen,
            source: std::io::Error::other(error.to_string()),
        })?;
        tracing::info!(address = %listen, "metadata quorum listening");
        let voters: Rc<HashSet<u64>> =
            Rc::new(config.voters.iter().map(|(id, _)| raft_id(*id)).collect());
        Ok(glommio::spawn_local(accept_loop(
            listener,
            Arc::clone(quorum),
            voters,
            Rc::clone(stop),
        )))
    }

    /// Queues a whole frame for voter `to` (a raft id). False if it cannot be queued.
    pub(super) fn send(&self, to: u64, frame: Vec<u8>) -> bool {
        let Some(peer) = self.peers.get(&to) else {
            return false;
        };
        let mut queue = peer.queue.borrow_mut();
        if queue.len() >= PEER_QUEUE_FRAMES_MAX {
            return false;
        }
        queue.push_back(frame);
        peer.queued.notify(1);
        true
    }

    /// Queues a frame for every other voter.
    pub(super) fn broadcast(&self, frame: &[u8]) {
        for to in self.peers.keys() {
            self.send(*to, frame.to_vec());
        }
    }

    /// Closes every connection and stops the listener.
    pub(super) fn stop(&self) {
        self.stop.stopped.set(true);
        self.stop.event.notify(usize::MAX);
        self.tasks.borrow_mut().clear();
    }
}

async fn send_loop(peer: Rc<Peer>, stop: Rc<StopSignal>) {
    loop {
        peer.wait_for_frames().await;
        let stream = match TcpStream::connect_timeout(peer.address, CONNECT_TIMEOUT).await {
            Ok(stream) => stream,
            Err(error) => {
                if peer.connected.replace(false) {
                    tracing::warn!(voter = peer.broker_id, address = %peer.address, %error, "lost the connection to a voter");
                } else {
                    tracing::debug!(voter = peer.broker_id, address = %peer.address, %error, "cannot reach a voter");
                }
                // What was queued for the dead connection, and during the pause, is stale:
                // raft sends afresh what still matters.
                peer.queue.borrow_mut().clear();
                glommio::timer::sleep(RECONNECT_BACKOFF).await;
                peer.queue.borrow_mut().clear();
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if !peer.connected.replace(true) {
            tracing::info!(voter = peer.broker_id, address = %peer.address, "connected to a voter");
        }
        let error = write_frames(&peer, stream).await;
        tracing::debug!(voter = peer.broker_id, %error, "a voter connection failed; dialling again");
        peer.queue.borrow_mut().clear();
        if stop.stopped.get() {
            return;
        }
    }
}

/// Writes queued frames until the connection fails; returns why.
async fn write_frames(peer: &Peer, mut stream: TcpStream) -> std::io::Error {
    loop {
        peer.wait_for_frames().await;
        let batch: Vec<u8> = peer.queue.borrow_mut().drain(..).flatten().collect();
        if let Err(error) = stream.write_all(&batch).await {
            return error;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    quorum: Arc<Quorum>,
    voters: Rc<HashSet<u64>>,
    stop: Rc<StopSignal>,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                stop.wait().await;
                None
            })
            .await;
        let Some(accepted) = accepted else { return };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "metadata quorum: accept failed");
                glommio::timer::sleep(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        if open.get() >= INBOUND_CONNECTIONS_MAX {
            tracing::warn!("metadata quorum: too many connections; closing a new one");
            continue;
        }
        open.set(open.get() + 1);
        let _ = stream.set_read_timeout(Some(
            quorum
                .config
                .broker_session_timeout
                .max(Duration::from_secs(1)),
        ));
        let (quorum, voters, stop, open) = (
            Arc::clone(&quorum),
            Rc::clone(&voters),
            Rc::clone(&stop),
            Rc::clone(&open),
        );
        glommio::spawn_local(async move {
            let reason = read_frames(stream, &quorum, &voters)
                .or(async {
                    stop.wait().await;
                    "the quorum stopped".to_string()
                })
                .await;
            tracing::debug!(reason, "metadata quorum: closed an inbound connection");
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Reads frames into the quorum's inbox until the connection ends; returns why.
async fn read_frames(mut stream: TcpStream, quorum: &Arc<Quorum>, voters: &HashSet<u64>) -> String {
    let own_raft_id = raft_id(quorum.config.node_id);
    loop {
        match read_frame(&mut stream).await {
            Ok(Frame::Raft(message)) => {
                if message.to == own_raft_id && voters.contains(&message.from) {
                    quorum.deliver_message(message);
                } else {
                    tracing::warn!(
                        from = message.from,
                        to = message.to,
                        "raft message for another node or from a non-voter; dropped"
                    );
                }
            }
            Ok(Frame::Heartbeat { broker_id }) => quorum.deliver_heartbeat(broker_id),
            Ok(Frame::Subscribe { broker_id }) => {
                return subscription::serve(stream, Arc::clone(quorum), broker_id).await;
            }
            Ok(_) => return "an observer-session frame on a voter connection".to_string(),
            Err(error) => return error,
        }
    }
}
