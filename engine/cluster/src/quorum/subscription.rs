//! The voter's side of an observer's session (see [`observer`](super::observer) for the
//! observer's): after the observer's `subscribe` frame arrives on the voter's transport, the
//! voter pushes its applied state whenever its version moves (the controller it knows
//! otherwise, at least every [`PUSH_INTERVAL`]), proposes what the observer sends through
//! its own [`Quorum::propose`], at most [`SESSION_PROPOSALS_MAX`] at once, and answers each
//! after pushing the state that holds its change.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use uuid::Uuid;

use super::frame::{self, read_frame, Frame};
use super::proposal::{Proposal, PROPOSAL_BYTES_MAX};
use super::{ProposeError, Quorum};
use crate::state::BrokerId;

/// The longest a voter stays silent on a session: it sends at least the controller this often.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Proposals of one observer a voter works on at once; further ones are answered `Busy`.
pub const SESSION_PROPOSALS_MAX: usize = 256;
/// A session's writes that take longer end it (either side).
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a proposal sent on a session ended, as its `answer` frame carries it.
pub(super) type Outcome = Result<(), ProposeError>;

/// Outcomes of one observer's proposals, ready to be sent back.
#[derive(Default)]
struct Answers {
    ready: RefCell<Vec<(Uuid, Outcome)>>,
    in_flight: Cell<usize>,
    event: Event,
}

impl Answers {
    /// Proposes the observer's command through this voter; its outcome is queued for the
    /// session. An undecodable proposal ends the session.
    fn start(
        self: &Rc<Self>,
        quorum: &Arc<Quorum>,
        request: Uuid,
        data: &[u8],
    ) -> Result<(), String> {
        if data.len() > PROPOSAL_BYTES_MAX {
            self.finish(request, Err(ProposeError::TooLarge));
            return Ok(());
        }
        let proposal = Proposal::decode(data)
            .map_err(|error| format!("undecodable proposal from an observer: {error}"))?;
        if self.in_flight.get() >= SESSION_PROPOSALS_MAX {
            self.finish(request, Err(ProposeError::Busy));
            return Ok(());
        }
        self.in_flight.set(self.in_flight.get() + 1);
        let (answers, quorum) = (Rc::clone(self), Arc::clone(quorum));
        glommio::spawn_local(async move {
            let outcome = quorum.propose(proposal.command).await;
            answers.in_flight.set(answers.in_flight.get() - 1);
            answers.finish(request, outcome);
        })
        .detach();
        Ok(())
    }

    fn finish(&self, request: Uuid, outcome: Outcome) {
        self.ready.borrow_mut().push((request, outcome));
        self.event.notify(usize::MAX);
    }
}

/// The voter's side of a session, after the observer's `subscribe`; returns why it ended.
pub(super) async fn serve(stream: TcpStream, quorum: Arc<Quorum>, observer: BrokerId) -> String {
    tracing::info!(observer, "an observer subscribed to the metadata");
    quorum.deliver_heartbeat(observer);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let answers = Rc::new(Answers::default());
    let reading = async {
        loop {
            match read_frame(&mut reader).await {
                Ok(Frame::Heartbeat { broker_id }) => quorum.deliver_heartbeat(broker_id),
                Ok(Frame::Propose { request, proposal }) => {
                    if let Err(error) = answers.start(&quorum, request, &proposal) {
                        return error;
                    }
                }
                Ok(_) => return "a frame an observer does not send".to_string(),
                Err(error) => return error,
            }
        }
    };
    let writing = async {
        let mut sent_version = None;
        loop {
            // Outcomes taken before the state is read: the state sent includes their changes.
            let outcomes = std::mem::take(&mut *answers.ready.borrow_mut());
            let bytes = match push_frames(&quorum, &mut sent_version, outcomes) {
                Ok(bytes) => bytes,
                Err(error) => return error,
            };
            if let Err(error) = writer.write_all(&bytes).await {
                return error.to_string();
            }
            let seen = sent_version.unwrap_or(0);
            let listener = answers.event.listen();
            if answers.ready.borrow().is_empty() {
                async {
                    quorum.changed_since(seen).await;
                }
                .or(listener)
                .or(glommio::timer::sleep(PUSH_INTERVAL))
                .await;
            }
        }
    };
    reading.or(writing).await
}

/// The state if its version moved since the last push (else the controller), then the
/// outcomes.
fn push_frames(
    quorum: &Quorum,
    sent_version: &mut Option<u64>,
    outcomes: Vec<(Uuid, Outcome)>,
) -> Result<Vec<u8>, String> {
    // The version is read before the state, so the state is at least that new.
    let version = quorum.version();
    let controller = quorum.controller_id().unwrap_or(-1);
    let mut frames = Vec::with_capacity(outcomes.len() + 1);
    if *sent_version != Some(version) {
        let state = serde_json::to_vec(&*quorum.state())
            .map_err(|error| format!("cannot serialise the state: {error}"))?;
        frames.push(Frame::State {
            version,
            controller,
            state,
        });
        *sent_version = Some(version);
    } else {
        frames.push(Frame::Controller { controller });
    }
    for (request, outcome) in outcomes {
        let outcome = serde_json::to_vec(&outcome).expect("an outcome serialises");
        frames.push(Frame::Answer { request, outcome });
    }
    let mut bytes = Vec::new();
    for frame in &frames {
        // Only a state can exceed a frame (64 MiB); the observer cannot follow it then.
        bytes.extend(frame::encode(frame).ok_or("the cluster state is larger than a frame")?);
    }
    Ok(bytes)
}
