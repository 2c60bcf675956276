//! Observers: brokers that are not voters, as KRaft's brokers are. An observer runs no raft
//! node and stores no metadata log; it follows the quorum through a *session* with one voter.
//!
//! - The observer dials a voter's controller address and sends `subscribe`. From then on the
//!   voter pushes its applied state (`state` frames, the whole [`ClusterState`] as JSON with
//!   its version) whenever the version moves, and the controller it knows at least every
//!   [`PUSH_INTERVAL`] (which also keeps the session alive). The voter's side is
//!   [`subscription`](super::subscription).
//! - The observer's proposals travel as `propose` frames; the voter proposes them through its
//!   own [`Quorum::propose`] (raft forwards to the leader) and sends the outcome back. The
//!   voter pushes the new state before the outcome, so when `propose` returns on the observer
//!   its change is in `state()`, as on a voter.
//! - Heartbeats go to every voter over the ordinary transport, so the controller fences and
//!   unfences an observer exactly like a voter.
//! - When the session fails, proposals sent on it time out (they may still have been
//!   applied, as with a voter's timeout), and the observer dials the next voter. A state
//!   older than the one it holds (a voter that lags) is not published, so versions only grow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use uuid::Uuid;

use super::frame::{self, read_frame, Frame};
#[cfg(doc)]
use super::subscription::PUSH_INTERVAL;
use super::subscription::{Outcome, WRITE_TIMEOUT};
use super::transport::Transport;
use super::{ProposeError, Quorum, QuorumError};
use crate::state::{BrokerId, ClusterState};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before dialling the next voter after a session ended.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// A proposal sent to the voter, waiting for its outcome.
struct Waiter {
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// Runs an observer until the quorum stops: one session at a time, voters in turn.
pub(super) async fn run(quorum: Arc<Quorum>) -> Result<(), QuorumError> {
    let transport = Transport::start(&quorum)?;
    let heartbeats =
        glommio::spawn_local(send_heartbeats(Arc::clone(&quorum), Rc::clone(&transport)));
    let voters = quorum.config.voters.clone();
    // Observers start at different voters, spreading the sessions.
    let mut turn = quorum.config.node_id.unsigned_abs() as usize;
    while !quorum.is_stopping() {
        let (voter, address) = voters[turn % voters.len()];
        turn += 1;
        let waiting = RefCell::new(HashMap::new());
        let reason = match TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await {
            Ok(stream) => {
                tracing::info!(voter, %address, "observer: session with a voter");
                session(&quorum, stream, &waiting)
                    .or(stopped(&quorum))
                    .await
            }
            Err(error) => error.to_string(),
        };
        quorum.set_controller(-1);
        for (_, waiter) in waiting.into_inner() {
            let _ = waiter.reply.send(Err(ProposeError::Timeout));
        }
        if !quorum.is_stopping() {
            tracing::info!(voter, %address, reason, "observer: no session with a voter");
            async {
                glommio::timer::sleep(RECONNECT_PAUSE).await;
            }
            .or(async {
                stopped(&quorum).await;
            })
            .await;
            expire_queued(&quorum, Instant::now());
        }
    }
    drop(heartbeats);
    transport.stop();
    for pending in quorum.lock_inbox().proposals.drain(..) {
        let _ = pending.reply.send(Err(ProposeError::Stopped));
    }
    Ok(())
}

/// Tells every voter this broker is alive, each heartbeat interval.
async fn send_heartbeats(quorum: Arc<Quorum>, transport: Rc<Transport>) {
    let heartbeat = frame::encode(&Frame::Heartbeat {
        broker_id: quorum.config.node_id,
    })
    .expect("a heartbeat fits a frame");
    while !quorum.is_stopping() {
        transport.broadcast(&heartbeat);
        glommio::timer::sleep(quorum.config.heartbeat_interval).await;
    }
}

/// Resolves once the quorum is asked to stop.
async fn stopped(quorum: &Quorum) -> String {
    loop {
        if quorum.is_stopping() {
            return "the quorum stopped".to_string();
        }
        let listener = quorum.inbox_changed.listen();
        if quorum.is_stopping() {
            return "the quorum stopped".to_string();
        }
        listener.await;
    }
}

/// Fails proposals queued while no voter could be reached and whose time is up.
fn expire_queued(quorum: &Quorum, now: Instant) {
    let mut inbox = quorum.lock_inbox();
    let (expired, kept) = std::mem::take(&mut inbox.proposals)
        .into_iter()
        .partition(|pending| pending.deadline <= now);
    inbox.proposals = kept;
    drop(inbox);
    for pending in Vec::from(expired) {
        let _ = pending.reply.send(Err(ProposeError::NoController));
    }
}

/// One session with a voter; returns why it ended.
async fn session(
    quorum: &Arc<Quorum>,
    stream: TcpStream,
    waiting: &RefCell<HashMap<Uuid, Waiter>>,
) -> String {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // The voter writes at least every PUSH_INTERVAL; silence means it is gone.
    let _ = stream.set_read_timeout(Some(quorum.config.broker_session_timeout));
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let subscribe = frame::encode(&Frame::Subscribe {
        broker_id: quorum.config.node_id,
    })
    .expect("a subscribe frame fits");
    if let Err(error) = writer.write_all(&subscribe).await {
        return error.to_string();
    }
    let reading = async {
        loop {
            let frame = match read_frame(&mut reader).await {
                Ok(frame) => frame,
                Err(error) => return error,
            };
            if let Err(error) = take_pushed(quorum, frame, waiting) {
                return error;
            }
        }
    };
    let writing = async {
        let mut next_heartbeat = Instant::now();
        loop {
            let bytes = frames_to_send(quorum, waiting, &mut next_heartbeat);
            if !bytes.is_empty() {
                if let Err(error) = writer.write_all(&bytes).await {
                    return error.to_string();
                }
            }
            let listener = quorum.inbox_changed.listen();
            if quorum.lock_inbox().proposals.is_empty() {
                listener
                    .or(glommio::timer::sleep(quorum.config.tick_interval))
                    .await;
            }
        }
    };
    reading.or(writing).await
}

/// Handles one frame the voter pushed: a state, the controller, or a proposal's outcome.
fn take_pushed(
    quorum: &Quorum,
    frame: Frame,
    waiting: &RefCell<HashMap<Uuid, Waiter>>,
) -> Result<(), String> {
    match frame {
        Frame::State {
            version,
            controller,
            state,
        } => {
            note_controller(quorum, controller);
            if version > quorum.version() {
                let state: ClusterState = serde_json::from_slice(&state)
                    .map_err(|error| format!("undecodable state from the voter: {error}"))?;
                quorum.publish(state, version);
            }
        }
        Frame::Controller { controller } => note_controller(quorum, controller),
        Frame::Answer { request, outcome } => {
            let outcome: Outcome = serde_json::from_slice(&outcome)
                .map_err(|error| format!("undecodable outcome from the voter: {error}"))?;
            if let Some(waiter) = waiting.borrow_mut().remove(&request) {
                let _ = waiter.reply.send(outcome);
            }
        }
        _ => return Err("a frame a voter does not send".to_string()),
    }
    Ok(())
}

fn note_controller(quorum: &Quorum, controller: BrokerId) {
    let previous = quorum.set_controller(i64::from(controller.max(-1)));
    if previous != i64::from(controller) {
        tracing::info!(controller, "observer: metadata controller changed");
    }
}

/// The proposals waiting in the inbox as `propose` frames (each then waits for its outcome),
/// and a heartbeat when one is due. Fails proposals whose time is up.
fn frames_to_send(
    quorum: &Quorum,
    waiting: &RefCell<HashMap<Uuid, Waiter>>,
    next_heartbeat: &mut Instant,
) -> Vec<u8> {
    let now = Instant::now();
    let proposals = std::mem::take(&mut quorum.lock_inbox().proposals);
    let mut waiting = waiting.borrow_mut();
    let expired: Vec<Uuid> = waiting
        .iter()
        .filter(|(_, waiter)| waiter.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        if let Some(waiter) = waiting.remove(&id) {
            let _ = waiter.reply.send(Err(ProposeError::Timeout));
        }
    }
    let mut bytes = Vec::new();
    for pending in proposals {
        if pending.deadline <= now {
            let _ = pending.reply.send(Err(ProposeError::Timeout));
            continue;
        }
        let frame = Frame::Propose {
            request: pending.id,
            proposal: pending.data,
        };
        // `propose` bounded the proposal, far below a frame's limit.
        bytes.extend(frame::encode(&frame).expect("a proposal fits a frame"));
        waiting.insert(
            pending.id,
            Waiter {
                deadline: pending.deadline,
                reply: pending.reply,
            },
        );
    }
    if now >= *next_heartbeat {
        *next_heartbeat = now + quorum.config.heartbeat_interval;
        let heartbeat = Frame::Heartbeat {
            broker_id: quorum.config.node_id,
        };
        bytes.extend(frame::encode(&heartbeat).expect("a heartbeat fits a frame"));
    }
    bytes
}
