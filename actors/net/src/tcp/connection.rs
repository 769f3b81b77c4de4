//! One connection to a member, once its handshake is done: a writer that batches what the queue
//! holds into one flush, a reader that hands each frame to the actor for it, and what happens
//! when either ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actors::managers::worker_pool::Adjust;
use actors::transport::{Envelope, Undeliverable, Undelivered};
use bytes::Bytes;
use cluster::NodeId;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodecError;

use super::handshake::Frames;
use super::{LaneState, Outgoing, Queue, Shared, Stats};
use crate::link::{Decision, Offer};
use crate::wire::{Lane, PeerFrame};

/// The most messages written before one flush.
const MAX_BATCH: usize = 256;

/// How long a closing connection may take to flush what it has buffered.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What a read or write error means, for a log line.
pub(super) fn describe(e: &std::io::Error) -> String {
    if e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
        "a frame claims more bytes than max_frame_bytes allows".to_owned()
    } else {
        e.to_string()
    }
}

/// Closes the connection `replaced` (if it is the one whose queue is installed): a link decided
/// another connection replaces it.
pub(super) fn retire(state: &LaneState, replaced: Option<u64>) {
    let Some(replaced) = replaced else { return };
    let mut queue = state.queue.lock().unwrap_or_else(|e| e.into_inner());
    if queue.as_ref().is_some_and(|(q, _)| q.connection == replaced) {
        if let Some((_, token)) = queue.take() {
            token.cancel();
        }
    }
}

/// Offers a connection that passed its handshake to the link of `lane` to `peer`; if the link
/// takes it, the connection it replaces is closed, and the answer is the installed connection.
pub(super) fn offer(shared: &Arc<Shared>, peer: NodeId, lane: Lane, dialer: NodeId, incarnation: u64) -> Result<Installed, String> {
    let state = shared.lane(peer, lane).ok_or_else(|| format!("node {peer} is not a member"))?;
    let offer = Offer { id: shared.next_connection.fetch_add(1, Ordering::Relaxed), dialer, incarnation };
    let decision = state.link.lock().unwrap_or_else(|e| e.into_inner()).offer(offer);
    match decision {
        Decision::Install { replaces } => {
            retire(&state, replaces);
            Ok(Installed { shared: shared.clone(), peer, lane, offer })
        }
        Decision::Refuse(why) => Err(why),
    }
}

/// A connection its link took. However it ends (after its run, or before it got to run: a
/// welcome that could not be sent, a handshake that timed out), dropping it tells the link, so
/// the lane never waits on a connection that is not there.
pub(super) struct Installed {
    shared: Arc<Shared>,
    peer: NodeId,
    lane: Lane,
    offer: Offer,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let Some(state) = self.shared.lane(self.peer, self.lane) else { return };
        let mut rng = rand::rngs::StdRng::from_entropy();
        let current = state.link.lock().unwrap_or_else(|e| e.into_inner()).closed(self.offer.id, &mut rng).is_some();
        retire(&state, Some(self.offer.id));
        if current {
            state.changed.notify_one();
        }
    }
}

/// Why a connection ended.
enum End {
    /// Closed by either side, or broken: nothing the peer did wrong.
    Closed(String),
    /// The peer sent something no honest member sends.
    Refused(String),
}

/// Runs an installed connection until it closes; then frees the lane for the next.
pub(super) async fn run(installed: Installed, frames: Frames) {
    let (shared, peer, lane, offer) = (installed.shared.clone(), installed.peer, installed.lane, installed.offer);
    let Some(state) = shared.lane(peer, lane) else { return };
    let (tx, mut rx) = mpsc::channel(shared.settings.queue_messages);
    let bytes = Arc::new(AtomicUsize::new(0));
    let token = state.peer.gone.child_token();
    {
        let link = state.link.lock().unwrap_or_else(|e| e.into_inner());
        if link.current().map(|c| c.id) != Some(offer.id) {
            return; // replaced before it could start
        }
        let queue = Queue { connection: offer.id, tx, bytes: bytes.clone() };
        let mut installed = state.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = installed.replace((queue, token.clone())) {
            old.cancel();
        }
    }
    Stats::bump(&shared.stats.connections);
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    tracing::info!(node = shared.me, peer, ?lane, dialer = offer.dialer, incarnation = offer.incarnation, "connected");

    let (mut sink, stream) = frames.split();
    let end = tokio::select! {
        _ = token.cancelled() => End::Closed("replaced or shut down".into()),
        end = write(&shared, &mut sink, &mut rx, &bytes) => end,
        end = read(&shared, peer, stream) => end,
    };
    // Closing flushes what is buffered; a peer that stopped reading must not hold this task (and
    // with it the lane) forever.
    let _ = tokio::time::timeout(CLOSE_WITHIN, sink.close()).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);

    drop(installed);
    rx.close();
    let mut snapshot = false;
    while let Ok(lost) = rx.try_recv() {
        snapshot |= lost.snapshot;
    }
    if lane == Lane::Data && !shared.shutdown.is_cancelled() {
        if let Some(inbox) = shared.inbox() {
            inbox.report(Undelivered { to: peer, snapshot });
        }
    }
    match end {
        End::Closed(reason) => tracing::info!(node = shared.me, peer, ?lane, "connection closed: {reason}"),
        End::Refused(reason) => {
            Stats::bump(&shared.stats.refused_frames);
            tracing::warn!(node = shared.me, peer, ?lane, "connection closed: {reason}");
        }
    }
}

async fn write(shared: &Shared, sink: &mut SplitSink<Frames, Bytes>, rx: &mut mpsc::Receiver<Outgoing>, bytes: &AtomicUsize) -> End {
    let frame = |message: Outgoing| {
        bytes.fetch_sub(message.frame.len(), Ordering::AcqRel);
        message.frame
    };
    let written = |n: usize| {
        shared.stats.messages_written.fetch_add(n as u64, Ordering::Relaxed);
        Stats::bump(&shared.stats.flushes);
    };
    match write_batches(sink, rx, frame, written).await {
        Ok(()) => End::Closed("queue closed".into()),
        Err(e) => End::Closed(describe(&e)),
    }
}

/// Writes what `queue` holds, as `frame` encodes it, in batches of at most [`MAX_BATCH`] with
/// one flush each (`written` is told each batch's size), until the queue closes or a write fails.
pub(crate) async fn write_batches<T>(
    sink: &mut SplitSink<Frames, Bytes>,
    queue: &mut mpsc::Receiver<T>,
    mut frame: impl FnMut(T) -> Bytes,
    mut written: impl FnMut(usize),
) -> std::io::Result<()> {
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(item) = next.take() {
            sink.feed(frame(item)).await?;
            batch += 1;
            if batch < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        sink.flush().await?;
        written(batch);
    }
    Ok(())
}

async fn read(shared: &Shared, peer: NodeId, mut stream: SplitStream<Frames>) -> End {
    let me = shared.me;
    while let Some(frame) = stream.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) => return End::Refused(describe(&e)),
            Err(e) => return End::Closed(describe(&e)),
        };
        let message = match PeerFrame::decode(&frame) {
            Ok(message) => message,
            Err(e) => return End::Refused(e.to_string()),
        };
        if let Some(claimed) = message.claimed_sender().filter(|&from| from != peer) {
            return End::Refused(format!("a message from authenticated node {peer} claims to be from node {claimed}"));
        }
        let envelope = match message {
            PeerFrame::Raft(m) if m.to != me => return End::Refused(format!("a Raft message for node {} arrived at node {me}", m.to)),
            PeerFrame::Raft(m) => Envelope::Raft(m),
            PeerFrame::Heartbeat(h) => Envelope::Heartbeat(h),
            PeerFrame::Adjust { distribution, share } => {
                let Some(state) = shared.peer(peer) else { return End::Closed("the peer was removed".into()) };
                let ctx = state.authority.clone();
                Envelope::Adjust(Adjust { ctx, distribution, share })
            }
        };
        match shared.inbox().map(|inbox| inbox.deliver(me, envelope)) {
            Some(Ok(())) => {}
            Some(Err(Undeliverable::Full(_))) | None => Stats::bump(&shared.stats.dropped_frames),
            Some(Err(e)) => {
                Stats::bump(&shared.stats.dropped_frames);
                tracing::debug!(node = me, peer, "dropped: {e}");
            }
        }
    }
    End::Closed("closed by the peer".into())
}
