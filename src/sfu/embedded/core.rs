//! The media core of the embedded SFU: one task owns every session's `Rtc` and the one UDP socket. HTTP
//! handlers talk to it with [`Command`]s; it routes datagrams, drives timers and forwards media between
//! sessions (frame mode: each subscriber leg has its own SSRC, sequence numbers and timestamps, and
//! str0m answers NACKs per leg from its send buffer).

use super::session::{ApiFailure, RemoteTrack, Session};
use crate::sfu::api;
use crate::sfu::peer::clock;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaData, Mid, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, RtcConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Keyframe requests toward one publisher track are sent at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2000;

/// Reply channel of a command.
pub type Reply<T> = oneshot::Sender<Result<T, ApiFailure>>;

/// What the HTTP layer asks of the core.
pub enum Command {
    /// `sessions/new`.
    NewSession(Option<api::SessionDescription>, Reply<api::NewSessionResponse>),
    /// `tracks/new`.
    Tracks(String, api::TracksRequest, Reply<api::TracksResponse>),
    /// `renegotiate`.
    Renegotiate(String, api::SessionDescription, Reply<api::RenegotiateResponse>),
    /// `tracks/update`.
    Update(String, api::UpdateTracksRequest, Reply<api::TracksResponse>),
    /// `tracks/close`.
    Close(String, api::CloseTracksRequest, Reply<api::TracksResponse>),
    /// `GET session`.
    Get(String, Reply<api::GetSessionResponse>),
}

/// Counters the core keeps (read by benchmarks and metrics).
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Frames written to subscriber legs.
    pub frames_forwarded: AtomicU64,
    /// Payload bytes written to subscriber legs.
    pub bytes_forwarded: AtomicU64,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Frames dropped (no common codec, write error).
    pub frames_dropped: AtomicU64,
    /// Live sessions.
    pub sessions: AtomicU64,
}

/// Timing settings of the core.
#[derive(Debug, Clone, Copy)]
pub struct CoreTimers {
    /// Publications without media for this long are collected.
    pub track_idle: Duration,
    /// Sessions that never connect, or stay disconnected, this long are removed.
    pub session_idle: Duration,
}

/// The core's state; see the module docs.
pub struct Core {
    pub(super) sessions: HashMap<String, Session>,
    socket: tokio::net::UdpSocket,
    /// The address the socket is reached on (the `destination` str0m matches candidates against).
    local_addr: SocketAddr,
    pub(super) candidates: Vec<SocketAddr>,
    pub(super) template: RtcConfig,
    route: HashMap<SocketAddr, String>,
    dirty: HashSet<String>,
    events: Vec<(String, Event)>,
    pub(super) timers: CoreTimers,
    pub(super) stats: Arc<CoreStats>,
}

impl Core {
    /// A core on `socket`, advertising `candidates`.
    pub fn new(
        socket: tokio::net::UdpSocket,
        candidates: Vec<SocketAddr>,
        template: RtcConfig,
        timers: CoreTimers,
        stats: Arc<CoreStats>,
    ) -> std::io::Result<Self> {
        let local_addr = candidates.first().copied().map_or_else(|| socket.local_addr(), Ok)?;
        Ok(Self {
            sessions: HashMap::new(),
            socket,
            local_addr,
            candidates,
            template,
            route: HashMap::new(),
            dirty: HashSet::new(),
            events: Vec::new(),
            timers,
            stats,
        })
    }

    /// Runs until `cancel` fires or every command sender is gone.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let housekeeping_every = (self.timers.track_idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut housekeeping = tokio::time::interval(housekeeping_every);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.settle();
            let next = self
                .sessions
                .values()
                .map(|s| s.next_timeout)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.receive(&buf[..n], source),
                    Err(e) => tracing::debug!(error = %e, "embedded sfu: udp receive error"),
                },
                () = sleep => self.timeouts(Instant::now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
        }
        tracing::info!(sessions = self.sessions.len(), "embedded sfu core stopped");
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        // A reply the HTTP side no longer waits for (client gone) is not an error.
        match command {
            Command::NewSession(offer, reply) => drop(reply.send(self.new_session(offer, now))),
            Command::Tracks(id, request, reply) => drop(reply.send(self.tracks_new(&id, request, now))),
            Command::Renegotiate(id, answer, reply) => drop(reply.send(self.renegotiate(&id, answer))),
            Command::Update(id, request, reply) => drop(reply.send(self.update(&id, request))),
            Command::Close(id, request, reply) => drop(reply.send(self.close(&id, request))),
            Command::Get(id, reply) => drop(reply.send(self.get(&id))),
        }
    }

    /// Marks a session as needing its output drained.
    pub(super) fn touch(&mut self, id: &str) {
        self.dirty.insert(id.to_string());
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return; // Not STUN, DTLS, RTP or RTCP: garbage is dropped.
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        );
        let cached = self
            .route
            .get(&source)
            .filter(|id| self.sessions.get(*id).is_some_and(|s| s.rtc.accepts(&input)))
            .cloned();
        let id = cached.or_else(|| {
            let id = self.sessions.values().find(|s| s.rtc.accepts(&input))?.id.clone();
            self.route.insert(source, id.clone());
            Some(id)
        });
        let Some(id) = id else { return };
        if let Some(session) = self.sessions.get_mut(&id) {
            if let Err(e) = session.rtc.handle_input(input) {
                tracing::debug!(session = %id, error = %e, "embedded sfu: input rejected");
            }
            self.dirty.insert(id);
        }
    }

    fn timeouts(&mut self, now: Instant) {
        let due: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.next_timeout <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            if let Some(session) = self.sessions.get_mut(&id) {
                if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(session = %id, error = %e, "embedded sfu: timeout error");
                }
            }
            self.dirty.insert(id);
        }
    }

    /// Drains every touched session and handles the events, until nothing is left to do.
    fn settle(&mut self) {
        loop {
            if self.dirty.is_empty() && self.events.is_empty() {
                return;
            }
            let dirty: Vec<String> = self.dirty.drain().collect();
            for id in dirty {
                self.drain(&id);
            }
            let events = std::mem::take(&mut self.events);
            for (id, event) in events {
                self.on_event(&id, event);
            }
        }
    }

    fn drain(&mut self, id: &str) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        loop {
            match session.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    session.next_timeout = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.socket.try_send_to(&transmit.contents, transmit.destination) {
                        tracing::trace!(error = %e, "embedded sfu: udp send dropped");
                    }
                }
                Ok(Output::Event(event)) => self.events.push((id.to_string(), event)),
                Err(e) => {
                    tracing::info!(session = %id, error = %e, "embedded sfu: session failed");
                    session.rtc.disconnect();
                    session.next_timeout = Instant::now();
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, id: &str, event: Event) {
        match event {
            Event::MediaData(data) => self.forward(id, data),
            Event::KeyframeRequest(request) => {
                let upstream = self.sessions.get(id).and_then(|s| s.remote.get(&request.mid)).cloned();
                if let Some(remote) = upstream {
                    let rid = remote.current_rid.as_deref().map(Rid::from);
                    self.request_keyframe(&remote.publisher, &remote.track_name, rid, request.kind, true);
                }
            }
            Event::Connected => {
                let Some(session) = self.sessions.get_mut(id) else {
                    return;
                };
                session.connected = true;
                tracing::debug!(session = %id, "embedded sfu: session connected");
                // Its subscriptions can start now: ask their publishers for keyframes.
                let upstream: Vec<RemoteTrack> = session.remote.values().filter(|r| r.active).cloned().collect();
                for remote in upstream {
                    let rid = remote.preferred_rid.as_deref().map(Rid::from);
                    self.request_keyframe(
                        &remote.publisher,
                        &remote.track_name,
                        rid,
                        KeyframeRequestKind::Fir,
                        false,
                    );
                }
            }
            Event::IceConnectionStateChange(state) => {
                if let Some(session) = self.sessions.get_mut(id) {
                    session.disconnected_since = match state {
                        IceConnectionState::Disconnected => Some(Instant::now()),
                        _ => None,
                    };
                }
            }
            _ => {}
        }
    }

    /// Asks the publisher of `track` for a keyframe (throttled unless `force`).
    pub(super) fn request_keyframe(
        &mut self,
        publisher: &str,
        track: &str,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        throttle: bool,
    ) {
        let now = Instant::now();
        let Some(session) = self.sessions.get_mut(publisher) else {
            return;
        };
        let Some(local) = session.local.iter_mut().find(|t| t.active && t.name == track) else {
            return;
        };
        if throttle
            && local
                .last_keyframe_request
                .is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        local.last_keyframe_request = Some(now);
        let mid = local.mid;
        let rid = rid.or_else(|| local.rids.first().map(|r| Rid::from(r.as_str())));
        if let Some(mut writer) = session.rtc.writer(mid) {
            if writer.is_request_keyframe_possible(kind) {
                if let Err(e) = writer.request_keyframe(rid, kind) {
                    tracing::debug!(error = %e, "embedded sfu: keyframe request failed");
                }
            }
        }
        self.dirty.insert(publisher.to_string());
    }

    fn forward(&mut self, publisher_id: &str, data: MediaData) {
        let Some(publisher) = self.sessions.get_mut(publisher_id) else {
            return;
        };
        let Some(local) = publisher.local_by_mid_mut(data.mid) else {
            return;
        };
        local.last_media = Some(data.network_time);
        let track_name = local.name.clone();
        let subscribers = local.subscribers.clone();
        let simulcast = !local.rids.is_empty();
        let video = local.kind.is_video();
        if !data.contiguous {
            self.request_keyframe(publisher_id, &track_name, data.rid, KeyframeRequestKind::Fir, true);
        }
        let rid = data.rid.map(|r| r.to_string());
        let keyframe = data.is_keyframe();
        // Sent on with the publisher's capture time (from its sender reports) rather than our arrival time, so
        // our own sender reports to the subscribers keep the publisher's audio/video alignment (lip-sync).
        let wallclock = data
            .last_sender_info
            .and_then(|sr| clock::capture_time(sr.ntp_time, sr.rtp_time.numer(), data.time.numer(), data.time.denom()))
            .map(clock::instant_of)
            .unwrap_or(data.network_time);
        for (subscriber_id, out_mid) in subscribers {
            let Some(subscriber) = self.sessions.get_mut(&subscriber_id) else {
                continue;
            };
            let Some(remote) = subscriber.remote.get_mut(&out_mid) else {
                continue;
            };
            if !remote.active {
                continue;
            }
            if simulcast {
                let wanted = remote.preferred_rid.clone().or_else(|| remote.current_rid.clone());
                if rid == wanted && keyframe && remote.current_rid != wanted {
                    remote.current_rid = wanted; // switch layers on a keyframe of the wanted one
                }
                if remote.current_rid.is_none() && keyframe {
                    remote.current_rid = rid.clone();
                }
                if rid != remote.current_rid {
                    continue;
                }
            }
            if video && !remote.started {
                if !keyframe {
                    continue; // a new subscriber starts at a keyframe
                }
                remote.started = true;
            }
            if write_frame(subscriber, out_mid, &data, wallclock) {
                self.stats.frames_forwarded.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_forwarded
                    .fetch_add(data.data.len() as u64, Ordering::Relaxed);
            } else {
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.dirty.insert(subscriber_id);
        }
    }

    /// Collects idle tracks and dead sessions.
    fn housekeeping(&mut self, now: Instant) {
        let idle = self.timers.track_idle;
        let mut ended_tracks: Vec<(String, String)> = Vec::new();
        for session in self.sessions.values_mut() {
            for track in session.local.iter_mut().filter(|t| t.active) {
                let last = track.last_media.unwrap_or(track.created);
                if now.duration_since(last) > idle {
                    track.active = false;
                    ended_tracks.push((session.id.clone(), track.name.clone()));
                }
            }
        }
        for (session, track) in ended_tracks {
            tracing::debug!(%session, %track, "embedded sfu: track collected after no media");
            self.end_publication(&session, &track);
        }
        let session_idle = self.timers.session_idle;
        let dead: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                !s.rtc.is_alive()
                    || (!s.connected && now.duration_since(s.created) > session_idle)
                    || s.disconnected_since
                        .is_some_and(|t| now.duration_since(t) > session_idle)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in dead {
            self.remove_session(&id);
        }
        self.stats.sessions.store(self.sessions.len() as u64, Ordering::Relaxed);
    }

    /// Stops forwarding a publication to all its subscribers.
    pub(super) fn end_publication(&mut self, publisher: &str, track: &str) {
        let subscribers = self
            .sessions
            .get_mut(publisher)
            .and_then(|s| {
                s.local
                    .iter_mut()
                    .find(|t| t.name == track && !t.subscribers.is_empty())
            })
            .map(|t| std::mem::take(&mut t.subscribers))
            .unwrap_or_default();
        for (subscriber, mid) in subscribers {
            if let Some(remote) = self.sessions.get_mut(&subscriber).and_then(|s| s.remote.get_mut(&mid)) {
                remote.active = false;
            }
        }
    }

    /// Stops one subscription.
    pub(super) fn end_subscription(&mut self, subscriber: &str, mid: Mid) {
        let Some(remote) = self.sessions.get_mut(subscriber).and_then(|s| s.remote.get_mut(&mid)) else {
            return;
        };
        remote.active = false;
        let (publisher, track) = (remote.publisher.clone(), remote.track_name.clone());
        if let Some(local) = self
            .sessions
            .get_mut(&publisher)
            .and_then(|s| s.local.iter_mut().find(|t| t.name == track && t.active))
        {
            local.subscribers.retain(|(s, m)| !(s == subscriber && *m == mid));
        }
    }

    fn remove_session(&mut self, id: &str) {
        let Some(session) = self.sessions.get(id) else { return };
        let tracks: Vec<String> = session.local.iter().map(|t| t.name.clone()).collect();
        let mids: Vec<Mid> = session.remote.keys().copied().collect();
        for track in tracks {
            self.end_publication(id, &track);
        }
        for mid in mids {
            self.end_subscription(id, mid);
        }
        if let Some(mut session) = self.sessions.remove(id) {
            session.rtc.disconnect();
        }
        self.route.retain(|_, session| session != id);
        tracing::debug!(session = %id, "embedded sfu: session removed");
    }
}

/// Writes one frame, captured at `wallclock`, to a subscriber leg; false when the leg cannot take it.
fn write_frame(subscriber: &mut Session, mid: Mid, data: &MediaData, wallclock: Instant) -> bool {
    let Some(writer) = subscriber.rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = writer.match_params(data.params) else {
        return false;
    };
    let writer = subscriber.rtc.writer(mid);
    match writer.map(|w| w.write(pt, wallclock, data.time, data.data.clone())) {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::trace!(error = %e, "embedded sfu: write failed");
            false
        }
        None => false,
    }
}
