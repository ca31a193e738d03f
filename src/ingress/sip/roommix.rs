//! One mix per room for all its phones: a single SFU session subscribes to every audio track of the room
//! once, each track is jitter-buffered and decoded once, and every 20 ms the room's [`MixFrame`] goes to
//! each phone, which takes its own part out ([`MixFrame::heard_by`]).
//!
//! A room of N phones thus costs N subscriptions and N decoders instead of N × (N − 1). The mix lives as
//! long as a phone listens; the last [`MixListener`] dropped stops it and closes its SFU session. When the
//! mix cannot go on (its SFU session failed for good, the room was deleted) every listener learns why and
//! hangs up.

use super::jitter::JitterStats;
use super::mixer::{MixFrame, Mixer};
use crate::rooms::follow::{Follower, TrackKey};
use crate::rooms::pull::RoomPull;
use crate::rooms::{RoomSubscription, Rooms, SubscriptionError};
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Peer, PeerConfig, PeerEvent, PeerStreams, SubscribedTrack};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// 20 ms of a room's audio as the phones receive it.
pub type RoomFrame = Arc<MixFrame<TrackKey>>;

/// Frames a listener may fall behind before it skips ahead.
const BACKLOG: usize = 8;

/// The room mixes of the gateway: one per room with phones in it.
#[derive(Clone)]
pub struct RoomMixes {
    client: CallsClient,
    peer: PeerConfig,
    rooms: Rooms,
    live: Arc<Mutex<HashMap<String, Weak<Shared>>>>,
}

/// What a mix shares with its listeners.
struct Shared {
    outputs: Arc<Mutex<Outputs>>,
    stats: Arc<Mutex<HashMap<TrackKey, JitterStats>>>,
    cancel: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The mix's outputs, one per phone sample rate; `closed` once the mix has stopped, with why.
#[derive(Default)]
struct Outputs {
    senders: HashMap<u32, broadcast::Sender<RoomFrame>>,
    closed: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A phone's place in its room's mix.
pub struct MixListener {
    shared: Arc<Shared>,
    frames: broadcast::Receiver<RoomFrame>,
    rate: u32,
}

impl MixListener {
    /// The next 20 ms of the room (a listener that fell behind skips to the newest); `Err` with the reason
    /// once the mix has stopped.
    pub async fn recv(&mut self) -> Result<RoomFrame, String> {
        loop {
            match self.frames.recv().await {
                Ok(frame) => return Ok(frame),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    let outputs = lock(&self.shared.outputs);
                    return Err(outputs.closed.clone().unwrap_or_else(|| "room audio stopped".into()));
                }
            }
        }
    }

    /// The sample rate of the frames.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Jitter-buffer counters summed over the tracks the phone hears (all but `own`).
    pub fn stats_except(&self, own: &TrackKey) -> JitterStats {
        let mut total = JitterStats::default();
        for (_, s) in lock(&self.shared.stats).iter().filter(|(key, _)| *key != own) {
            total.played += s.played;
            total.concealed += s.concealed;
            total.late += s.late;
            total.overflowed += s.overflowed;
        }
        total
    }
}

impl RoomMixes {
    /// No mix yet; each starts with its first listener.
    pub fn new(client: CallsClient, peer: PeerConfig, rooms: Rooms) -> Self {
        Self {
            client,
            peer,
            rooms,
            live: Arc::default(),
        }
    }

    /// Listens to `room`'s mix at `rate` (Hz), starting the mix if the room has none running.
    pub fn listen(&self, room: &str, rate: u32) -> MixListener {
        let mut live = lock(&self.live);
        live.retain(|_, mix| mix.strong_count() > 0);
        let running = live.get(room).and_then(Weak::upgrade);
        let shared = match running {
            Some(shared) => {
                let outputs = lock(&shared.outputs);
                let usable = outputs.closed.is_none();
                drop(outputs);
                usable.then_some(shared)
            }
            None => None,
        };
        let shared = shared.unwrap_or_else(|| {
            let shared = self.start(room);
            live.insert(room.to_string(), Arc::downgrade(&shared));
            shared
        });
        let frames = lock(&shared.outputs)
            .senders
            .entry(rate)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe();
        MixListener { shared, frames, rate }
    }

    fn start(&self, room: &str) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            outputs: Arc::default(),
            stats: Arc::default(),
            cancel: CancellationToken::new(),
        });
        let task = MixTask {
            client: self.client.clone(),
            peer: self.peer.clone(),
            subscription: self.rooms.subscribe(room),
            outputs: shared.outputs.clone(),
            stats: shared.stats.clone(),
            cancel: shared.cancel.clone(),
        };
        let span = tracing::info_span!("sip_room_mix", room = %room);
        tokio::spawn(task.run().instrument(span));
        shared
    }
}

/// The task of one room's mix.
struct MixTask {
    client: CallsClient,
    peer: PeerConfig,
    subscription: RoomSubscription,
    outputs: Arc<Mutex<Outputs>>,
    stats: Arc<Mutex<HashMap<TrackKey, JitterStats>>>,
    cancel: CancellationToken,
}

/// The decoding side of a running mix: which mid carries which track, and a mixer per phone rate.
#[derive(Default)]
struct Decoding {
    tracks: HashMap<String, TrackKey>,
    mixers: HashMap<u32, Mixer<TrackKey>>,
}

impl Decoding {
    fn add(&mut self, track: SubscribedTrack) {
        let key = (track.session_id, track.track_name);
        for mixer in self.mixers.values_mut() {
            if let Err(e) = mixer.add(&key) {
                tracing::warn!(error = %e, "sip: room track not mixed");
            }
        }
        tracing::debug!(mid = %track.mid, track = %key.1, "sip: room mix decodes a track");
        if self.tracks.insert(track.mid, key).is_none() {
            metrics::gauge!("sip_room_mix_tracks").increment(1.0);
        }
    }

    /// Stops decoding `key`; returns its mid.
    fn remove(&mut self, key: &TrackKey) -> Option<String> {
        let mid = self
            .tracks
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(mid, _)| mid.clone())?;
        self.tracks.remove(&mid);
        metrics::gauge!("sip_room_mix_tracks").decrement(1.0);
        for mixer in self.mixers.values_mut() {
            mixer.remove(key);
        }
        Some(mid)
    }

    fn clear(&mut self) {
        let keys: Vec<TrackKey> = self.tracks.values().cloned().collect();
        for key in keys {
            self.remove(&key);
        }
    }

    /// Mixers for exactly the rates someone listens at; each new one decodes every track.
    fn align_rates(&mut self, outputs: &mut Outputs) {
        outputs.senders.retain(|_, sender| sender.receiver_count() > 0);
        self.mixers.retain(|rate, _| outputs.senders.contains_key(rate));
        for rate in outputs.senders.keys() {
            if !self.mixers.contains_key(rate) {
                let mut mixer = Mixer::new(*rate);
                for key in self.tracks.values() {
                    let _ = mixer.add(key);
                }
                self.mixers.insert(*rate, mixer);
            }
        }
    }
}

impl MixTask {
    async fn run(mut self) {
        metrics::gauge!("sip_room_mixes").increment(1.0);
        let connected = tokio::select! {
            connected = Peer::connect(self.client.clone(), self.peer.clone()) => connected,
            () = self.cancel.cancelled() => return metrics::gauge!("sip_room_mixes").decrement(1.0),
        };
        let why = match connected {
            Ok((peer, streams)) => self.mix(Arc::new(peer), streams).await,
            Err(e) => format!("SFU unavailable for the room's audio: {e}"),
        };
        if !self.cancel.is_cancelled() {
            tracing::warn!(reason = %why, "sip: room mix stopped");
        }
        let mut outputs = lock(&self.outputs);
        outputs.closed = Some(why);
        outputs.senders.clear();
        drop(outputs);
        metrics::gauge!("sip_room_mixes").decrement(1.0);
    }

    /// Runs the mix until it is no longer wanted or cannot go on; returns why it stopped.
    async fn mix(&mut self, peer: Arc<Peer>, streams: PeerStreams) -> String {
        let PeerStreams {
            mut media_in,
            mut events,
        } = streams;
        let mut pull = RoomPull::new(peer, Follower::audio());
        let mut decoding = Decoding::default();
        pull.snapshot(&self.subscription.resync().clone());
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        let why = loop {
            tokio::select! {
                () = self.cancel.cancelled() => break "no phone listens any more".to_string(),
                _ = tick.tick() => {
                    let mut outputs = lock(&self.outputs);
                    decoding.align_rates(&mut outputs);
                    for (rate, mixer) in &mut decoding.mixers {
                        if let Some(sender) = outputs.senders.get(rate) {
                            let _ = sender.send(Arc::new(mixer.mix()));
                        }
                    }
                }
                frame = media_in.recv() => {
                    let Some(frame) = frame else { break "SFU peer stopped".into() };
                    if let Some(key) = decoding.tracks.get(&frame.mid) {
                        for mixer in decoding.mixers.values_mut() {
                            mixer.push(key, frame.rtp_time, frame.data.clone(), frame.received);
                        }
                    }
                }
                event = events.recv() => match event {
                    Some(PeerEvent::Failed { reason }) => break format!("SFU session failed: {reason}"),
                    Some(PeerEvent::Reconnected { subscribed, .. }) => {
                        decoding.clear();
                        pull.restore(&subscribed);
                        for track in subscribed {
                            decoding.add(track);
                        }
                    }
                    Some(_) => {}
                    None => break "SFU peer stopped".into(),
                },
                subscribed = pull.next() => {
                    for track in subscribed {
                        decoding.add(track);
                    }
                }
                event = self.subscription.recv() => {
                    let changes = match event {
                        Ok(event) => pull.event(&event),
                        Err(SubscriptionError::Lagged { .. }) => pull.snapshot(&self.subscription.resync().clone()),
                        Err(SubscriptionError::Closed) => break "room closed".into(),
                    };
                    pull.close(changes.iter().filter_map(|key| decoding.remove(key)).collect());
                }
                _ = stats_tick.tick() => {
                    let mut stats = lock(&self.stats);
                    stats.clear();
                    if let Some(mixer) = decoding.mixers.values().next() {
                        stats.extend(mixer.stats().map(|(k, s)| (k.clone(), s)));
                    }
                }
            }
        };
        decoding.clear();
        why
    }
}
