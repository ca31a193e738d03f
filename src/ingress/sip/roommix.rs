//! One mix per room for all its phones: a single SFU session subscribes to every audio track of the room
//! once, each track is jitter-buffered and decoded once, and every 20 ms the room's [`MixFrame`] goes to
//! each phone, which takes its own part out ([`MixFrame::heard_by`]).
//!
//! The gateway's own callers are not pulled back from the SFU: each call registers its track as local
//! ([`RoomMixes::local_track`]) before it joins the room, and feeds the frames it publishes straight into the
//! mix ([`MixListener::feed`]) — no SFU round trip, no receive and decrypt per caller, and for the mixers at
//! the caller's own rate no Opus decode either: they take the PCM the frame was encoded from
//! (`sip_room_mix_local_pcm_frames_total`).
//!
//! A room of N phones thus costs N decoders instead of N × (N − 1). The mix lives as
//! long as a phone listens; the last [`MixListener`] dropped stops it and closes its SFU session. When the
//! mix cannot go on (its SFU session failed for good, the room was deleted) every listener learns why and
//! hangs up.

use super::jitter::JitterStats;
use super::mixer::{MixFrame, Mixer};
use crate::rooms::follow::{Follower, Skip, TrackKey};
use crate::rooms::pull::RoomPull;
use crate::rooms::{RoomSubscription, Rooms, SubscriptionError};
use crate::sfu::client::CallsClient;
use crate::sfu::peer::{Peer, PeerConfig, PeerEvent, PeerStreams, SubscribedTrack};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
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
    /// The tracks of the gateway's own callers (with how many registrations hold each).
    local: LocalTracks,
}

type LocalTracks = Arc<Mutex<HashMap<TrackKey, usize>>>;

/// What a caller hands its room's mix directly.
enum Local {
    /// A frame the caller publishes: its RTP time, the Opus packet, the PCM it encodes (with its rate) when
    /// the gateway encoded it, and when it was made.
    Frame(Arc<TrackKey>, u64, Arc<[u8]>, Option<(u32, Arc<[i16]>)>, Instant),
    /// The caller no longer feeds this track.
    Gone(TrackKey),
}

/// Frames from the callers that may wait for the mix task.
const LOCAL_BACKLOG: usize = 1024;

/// What a mix shares with its listeners.
struct Shared {
    outputs: Arc<Mutex<Outputs>>,
    stats: Arc<Mutex<HashMap<TrackKey, JitterStats>>>,
    cancel: CancellationToken,
    local: mpsc::Sender<Local>,
}

/// A caller's track, registered as local: room mixes hear it from the caller, not from the SFU. Registered
/// before the caller joins its room; unregistered when dropped.
pub struct LocalTrack {
    key: TrackKey,
    registry: LocalTracks,
}

impl LocalTrack {
    /// The track.
    pub fn key(&self) -> &TrackKey {
        &self.key
    }

    /// The caller's track moved to another SFU session: registers the new key (before the room learns it).
    pub fn rekey(&mut self, key: TrackKey) {
        register(&self.registry, &key);
        unregister(&self.registry, &self.key);
        self.key = key;
    }
}

impl Drop for LocalTrack {
    fn drop(&mut self) {
        unregister(&self.registry, &self.key);
    }
}

fn register(registry: &LocalTracks, key: &TrackKey) {
    *lock(registry).entry(key.clone()).or_default() += 1;
}

fn unregister(registry: &LocalTracks, key: &TrackKey) {
    let mut registry = lock(registry);
    if let Some(count) = registry.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            registry.remove(key);
        }
    }
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
    /// The local track this listener feeds the mix with (shared by its frames: no key copy per packet).
    fed: Option<Arc<TrackKey>>,
}

impl Drop for MixListener {
    fn drop(&mut self) {
        if let Some(key) = self.fed.take() {
            gone(&self.shared.local, (*key).clone());
        }
    }
}

/// Tells the mix a local track is gone; never lost to a full queue (a forgotten input would be concealed,
/// and decoded, forever). A frame the caller feeds later adds it again.
fn gone(local: &mpsc::Sender<Local>, key: TrackKey) {
    if let Err(mpsc::error::TrySendError::Full(message)) = local.try_send(Local::Gone(key)) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let local = local.clone();
            runtime.spawn(async move {
                let _ = local.send(message).await;
            });
        }
    }
}

impl MixListener {
    /// Mixes a frame the caller publishes as `key` (a [`LocalTrack`]) straight into the room's audio: its
    /// PCM (`pcm`: rate and samples) for the mixers at that rate, the Opus packet `data` decoded for others.
    pub fn feed(&mut self, key: &TrackKey, rtp_time: u64, data: Arc<[u8]>, pcm: Option<(u32, Arc<[i16]>)>) {
        let fed = match &self.fed {
            Some(fed) if **fed == *key => fed.clone(),
            _ => {
                let fed = Arc::new(key.clone());
                if let Some(old) = self.fed.replace(fed.clone()) {
                    gone(&self.shared.local, (*old).clone());
                }
                fed
            }
        };
        let frame = Local::Frame(fed, rtp_time, data, pcm, Instant::now());
        if self.shared.local.try_send(frame).is_err() {
            metrics::counter!("sip_room_mix_local_dropped_total").increment(1);
        }
    }

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
            local: Arc::default(),
        }
    }

    /// Registers a caller's track as local (see [`LocalTrack`]).
    pub fn local_track(&self, key: TrackKey) -> LocalTrack {
        register(&self.local, &key);
        LocalTrack {
            key,
            registry: self.local.clone(),
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
        MixListener {
            shared,
            frames,
            rate,
            fed: None,
        }
    }

    fn start(&self, room: &str) -> Arc<Shared> {
        let (local_tx, local_rx) = mpsc::channel(LOCAL_BACKLOG);
        let shared = Arc::new(Shared {
            outputs: Arc::default(),
            stats: Arc::default(),
            cancel: CancellationToken::new(),
            local: local_tx,
        });
        let registry = self.local.clone();
        let task = MixTask {
            client: self.client.clone(),
            peer: self.peer.clone(),
            subscription: self.rooms.subscribe(room),
            outputs: shared.outputs.clone(),
            stats: shared.stats.clone(),
            cancel: shared.cancel.clone(),
            local: local_rx,
            skip: Skip::new(move |key| lock(&registry).contains_key(key)),
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
    local: mpsc::Receiver<Local>,
    skip: Skip,
}

/// The decoding side of a running mix: which mid carries which track, the local callers' tracks, and a mixer
/// per phone rate.
#[derive(Default)]
struct Decoding {
    tracks: HashMap<String, TrackKey>,
    local: std::collections::HashSet<TrackKey>,
    mixers: HashMap<u32, Mixer<TrackKey>>,
}

impl Decoding {
    fn local(&mut self, message: Local) {
        match message {
            Local::Frame(key, rtp_time, data, pcm, made) => {
                if !self.local.contains(&*key) {
                    self.local.insert((*key).clone());
                    metrics::gauge!("sip_room_mix_tracks").increment(1.0);
                    metrics::gauge!("sip_room_mix_local_tracks").increment(1.0);
                    for mixer in self.mixers.values_mut() {
                        if let Err(e) = mixer.add(&key) {
                            tracing::warn!(error = %e, "sip: local caller not mixed");
                        }
                    }
                }
                for (rate, mixer) in &mut self.mixers {
                    match &pcm {
                        Some((pcm_rate, samples)) if pcm_rate == rate => {
                            metrics::counter!("sip_room_mix_local_pcm_frames_total").increment(1);
                            mixer.push_pcm(&key, rtp_time, samples.clone(), made);
                        }
                        _ => mixer.push(&key, rtp_time, data.clone(), made),
                    }
                }
            }
            Local::Gone(key) => {
                if self.local.remove(&key) {
                    metrics::gauge!("sip_room_mix_tracks").decrement(1.0);
                    metrics::gauge!("sip_room_mix_local_tracks").decrement(1.0);
                    for mixer in self.mixers.values_mut() {
                        mixer.remove(&key);
                    }
                }
            }
        }
    }

    /// Forgets the local callers (the mix is stopping).
    fn clear_local(&mut self) {
        let keys: Vec<TrackKey> = self.local.iter().cloned().collect();
        for key in keys {
            self.local(Local::Gone(key));
        }
    }

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

    /// Stops decoding the SFU's tracks (the local callers stay).
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
                for key in self.tracks.values().chain(&self.local) {
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
        let mut pull = RoomPull::new(peer, Follower::audio().skipping(self.skip.clone()));
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
                Some(message) = self.local.recv() => decoding.local(message),
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
        decoding.clear_local();
        why
    }
}
