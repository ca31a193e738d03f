//! The task that owns a peer's `Rtc`, socket and timers, and runs one SDP exchange at a time.

use super::{
    Codec, Command, InFrame, LocalTrackSpec, OutFrame, PeerConfig, PeerError, PeerEvent, PeerStats, PublishedTrack,
    RemoteTrackSpec, SubscribedTrack, clock,
};
use crate::sfu::api::{self, CloseTrackObject, SessionDescription, SimulcastPreferences, TrackObject};
use crate::sfu::client::{CallsClient, ClientError};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec as StrCodec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub(super) struct Channels {
    pub session: watch::Sender<String>,
    pub commands: mpsc::Receiver<Command>,
    pub media_out: mpsc::Receiver<OutFrame>,
    pub media_in: mpsc::Sender<InFrame>,
    pub events: mpsc::Sender<PeerEvent>,
}

/// Results of HTTP calls made on the task's behalf.
enum Http {
    NewSession(Result<api::NewSessionResponse, ClientError>),
    Published(Result<api::TracksResponse, ClientError>),
    Subscribed(Result<api::TracksResponse, ClientError>),
    Renegotiated(Result<(), ClientError>),
    Closed(Result<api::TracksResponse, ClientError>),
}

/// The SDP exchange in flight.
enum InFlight {
    Publish {
        pending: SdpPendingOffer,
        tracks: Vec<(String, Mid, Codec)>,
        reply: oneshot::Sender<Result<Vec<PublishedTrack>, PeerError>>,
    },
    Subscribe {
        specs: Vec<RemoteTrackSpec>,
        tracks: Vec<SubscribedTrack>,
        reply: oneshot::Sender<Result<Vec<SubscribedTrack>, PeerError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
}

pub(super) struct PeerTask {
    client: CallsClient,
    session: String,
    rtc: Rtc,
    socket: tokio::net::UdpSocket,
    local_addr: SocketAddr,
    channels: Channels,
    http_tx: mpsc::Sender<Http>,
    http_rx: mpsc::Receiver<Http>,
    in_flight: Option<InFlight>,
    queue: VecDeque<Command>,
    published: HashMap<String, (Mid, Codec)>,
    connected: bool,
    disconnected_since: Option<Instant>,
    next_timeout: Instant,
    stats: PeerStats,
    /// Packet counters per (mid, rid), summed into `stats`.
    packets_rx: HashMap<(Mid, Option<Rid>), u64>,
    packets_tx: HashMap<(Mid, Option<Rid>), u64>,
    /// The transport is being replaced (new session, republish, re-subscribe).
    recovering: bool,
    /// What was published and subscribed, to restore after a transport failure.
    publications: Vec<LocalTrackSpec>,
    subscriptions: Vec<RemoteTrackSpec>,
    config: PeerConfig,
}

/// A full-ICE (controlling) `Rtc` with our codecs and one host candidate.
fn build_rtc(local_addr: SocketAddr, config: &PeerConfig, now: Instant) -> std::io::Result<Rtc> {
    let mut builder = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .enable_vp9(true)
        .enable_av1(true)
        .set_stats_interval(Some(Duration::from_secs(1)))
        // Sender reports carry the capture times receivers sync by: every second for audio too (default 5 s).
        .set_rtcp_report_interval_audio(Duration::from_secs(1));
    builder.set_max_stun_rto(config.stun_max_rto);
    builder.set_max_stun_retransmits(config.stun_max_retransmits);
    let mut rtc = builder.build(now);
    let candidate = Candidate::host(local_addr, "udp")
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

fn codec_of(codec: StrCodec) -> Option<Codec> {
    match codec {
        StrCodec::Opus => Some(Codec::Opus),
        StrCodec::Vp8 => Some(Codec::Vp8),
        StrCodec::H264 => Some(Codec::H264),
        StrCodec::Vp9 => Some(Codec::Vp9),
        StrCodec::Av1 => Some(Codec::Av1),
        _ => None,
    }
}

fn str_codec(codec: Codec) -> StrCodec {
    match codec {
        Codec::Opus => StrCodec::Opus,
        Codec::Vp8 => StrCodec::Vp8,
        Codec::H264 => StrCodec::H264,
        Codec::Vp9 => StrCodec::Vp9,
        Codec::Av1 => StrCodec::Av1,
    }
}

impl InFlight {
    /// Ends the operation with an error (its transport is gone).
    fn abort(self, reason: &str) {
        let error = || PeerError::Rtc(reason.to_string());
        match self {
            InFlight::Publish { reply, .. } => drop(reply.send(Err(error()))),
            InFlight::Subscribe { reply, .. } => drop(reply.send(Err(error()))),
            InFlight::Close { reply } => drop(reply.send(Err(error()))),
        }
    }
}

impl PeerTask {
    fn remember_subscriptions(&mut self, specs: &[RemoteTrackSpec], tracks: &[SubscribedTrack]) {
        for spec in specs {
            let subscribed = tracks
                .iter()
                .any(|t| t.session_id == spec.session_id && t.track_name == spec.track_name);
            if subscribed {
                self.subscriptions.push(spec.clone());
            }
        }
    }

    pub(super) fn new(
        client: CallsClient,
        session: String,
        socket: tokio::net::UdpSocket,
        channels: Channels,
        config: PeerConfig,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let now = Instant::now();
        let rtc = build_rtc(local_addr, &config, now)?;
        let (http_tx, http_rx) = mpsc::channel(8);
        Ok(Self {
            client,
            session,
            rtc,
            socket,
            local_addr,
            channels,
            http_tx,
            http_rx,
            in_flight: None,
            queue: VecDeque::new(),
            published: HashMap::new(),
            connected: false,
            disconnected_since: None,
            next_timeout: now,
            stats: PeerStats::default(),
            packets_rx: HashMap::new(),
            packets_tx: HashMap::new(),
            recovering: false,
            publications: Vec::new(),
            subscriptions: Vec::new(),
            config,
        })
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let mut buf = vec![0u8; 2000];
        loop {
            self.drain();
            if self.in_flight.is_none() {
                if let Some(command) = self.queue.pop_front() {
                    self.command(command);
                    continue;
                }
            }
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(self.next_timeout));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = received {
                        self.receive(&buf[..n], source);
                    }
                }
                result = self.http_rx.recv() => {
                    if let Some(result) = result {
                        self.http_result(result);
                    }
                }
                command = self.channels.commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                frame = self.channels.media_out.recv() => {
                    if let Some(frame) = frame {
                        self.write(frame);
                    }
                }
                () = sleep => {
                    let now = Instant::now();
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        self.fail(format!("webrtc error: {e}"));
                    }
                    self.check_disconnect(now);
                }
            }
        }
        self.rtc.disconnect();
        tracing::debug!("peer stopped");
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return;
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
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "peer: input rejected");
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at.min(Instant::now() + Duration::from_secs(1));
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    let _ = self.socket.try_send_to(&transmit.contents, transmit.destination);
                }
                Ok(Output::Event(event)) => self.event(event),
                Err(e) => {
                    self.fail(format!("webrtc error: {e}"));
                    self.next_timeout = Instant::now() + Duration::from_secs(1);
                    return;
                }
            }
        }
    }

    fn emit(&mut self, event: PeerEvent) {
        if self.channels.events.try_send(event).is_err() {
            tracing::debug!("peer: event dropped (nobody listening or queue full)");
        }
    }

    /// The transport is gone: replace it with a new session, then republish and re-subscribe.
    fn fail(&mut self, reason: String) {
        if self.recovering {
            return;
        }
        self.recovering = true;
        self.connected = false;
        self.stats.connected = false;
        self.disconnected_since = None;
        tracing::warn!(%reason, "peer lost the SFU; recovering with a new session");
        self.emit(PeerEvent::Reconnecting { reason });
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.abort("the transport to the SFU was lost");
        }
        let client = self.client.clone();
        self.spawn_http(async move { Http::NewSession(client.new_session(None).await) });
    }

    fn check_disconnect(&mut self, now: Instant) {
        let grace = self.config.reconnect_after;
        if self.disconnected_since.is_some_and(|t| now.duration_since(t) > grace) || !self.rtc.is_alive() {
            self.fail("the transport to the SFU was lost".into());
        }
    }

    /// A new session is ready: swap the `Rtc`, then queue the republish and re-subscribe.
    fn recovered(&mut self, result: Result<api::NewSessionResponse, ClientError>) {
        let session = match result {
            Ok(session) => session,
            Err(e) => {
                self.recovering = false;
                self.emit(PeerEvent::Failed {
                    reason: format!("cannot create a new SFU session: {e}"),
                });
                return;
            }
        };
        let rtc = match build_rtc(self.local_addr, &self.config, Instant::now()) {
            Ok(rtc) => rtc,
            Err(e) => {
                self.recovering = false;
                self.emit(PeerEvent::Failed { reason: e.to_string() });
                return;
            }
        };
        let old = std::mem::replace(&mut self.rtc, rtc);
        drop(old);
        self.session = session.session_id.clone();
        self.channels.session.send_replace(session.session_id.clone());
        self.published.clear();
        let publications = std::mem::take(&mut self.publications);
        let subscriptions = std::mem::take(&mut self.subscriptions);
        let (published_tx, published_rx) = oneshot::channel();
        // Each subscription on its own: after an SFU restart the publishers have new sessions too, so some
        // (often all) old subscriptions cannot come back. Those are left to the owner, which follows its
        // publishers (a room's events, a named track that returns) and subscribes again.
        let mut restores = Vec::with_capacity(subscriptions.len());
        for spec in subscriptions.into_iter().rev() {
            let (tx, rx) = oneshot::channel();
            let track = spec.track_name.clone();
            self.queue.push_front(Command::Subscribe(vec![spec], tx));
            restores.push((track, rx));
        }
        self.queue.push_front(Command::Publish(publications, published_tx));
        let events = self.channels.events.clone();
        let session_id = session.session_id;
        tokio::spawn(async move {
            let published = match published_rx.await {
                Ok(Ok(published)) => published,
                Ok(Err(e)) => {
                    let reason = format!("cannot restore the published tracks: {e}");
                    let _ = events.send(PeerEvent::Failed { reason }).await;
                    return;
                }
                Err(_) => {
                    let reason = "the peer stopped while recovering".to_string();
                    let _ = events.send(PeerEvent::Failed { reason }).await;
                    return;
                }
            };
            let mut subscribed = Vec::new();
            for (track, rx) in restores.into_iter().rev() {
                match rx.await {
                    Ok(Ok(tracks)) => subscribed.extend(tracks),
                    Ok(Err(e)) => tracing::info!(%track, error = %e, "peer: a subscription did not come back"),
                    Err(_) => return,
                }
            }
            let event = PeerEvent::Reconnected {
                session_id,
                published,
                subscribed,
            };
            let _ = events.send(event).await;
        });
        self.recovering = false;
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.stats.connected = true;
                self.emit(PeerEvent::Connected);
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Disconnected => {
                    self.disconnected_since = Some(Instant::now());
                    self.stats.connected = false;
                    self.emit(PeerEvent::Disconnected);
                }
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.disconnected_since = None;
                    self.stats.connected = self.connected;
                }
                _ => {}
            },
            Event::MediaData(data) => {
                let codec = codec_of(data.params.spec().codec);
                let frame = InFrame {
                    mid: data.mid.to_string(),
                    codec,
                    rtp_time: data.time.numer(),
                    keyframe: data.is_keyframe(),
                    contiguous: data.contiguous,
                    received: data.network_time,
                    capture: data.last_sender_info.and_then(|sr| {
                        clock::capture_time(sr.ntp_time, sr.rtp_time.numer(), data.time.numer(), data.time.denom())
                    }),
                    data: data.data,
                };
                if self.channels.media_in.try_send(frame).is_ok() {
                    self.stats.frames_in += 1;
                } else {
                    self.stats.frames_dropped += 1;
                    metrics::counter!("sfu_peer_frames_dropped_total", "direction" => "in").increment(1);
                }
            }
            Event::KeyframeRequest(request) => {
                let track = self
                    .published
                    .iter()
                    .find(|(_, (mid, _))| *mid == request.mid)
                    .map(|(name, _)| name.clone());
                if let Some(track) = track {
                    let rid = request.rid.map(|r| r.to_string());
                    self.emit(PeerEvent::KeyframeRequested { track, rid });
                }
            }
            Event::PeerStats(stats) => {
                self.stats.bytes_rx = stats.peer_bytes_rx;
                self.stats.bytes_tx = stats.peer_bytes_tx;
                self.stats.loss = stats.ingress_loss_fraction;
                self.stats.rtt_ms = stats.rtt.map(|d| d.as_secs_f64() * 1000.0);
            }
            Event::MediaIngressStats(stats) => {
                self.packets_rx.insert((stats.mid, stats.rid), stats.packets);
                self.stats.packets_rx = self.packets_rx.values().sum();
            }
            Event::MediaEgressStats(stats) => {
                self.packets_tx.insert((stats.mid, stats.rid), stats.packets);
                self.stats.packets_tx = self.packets_tx.values().sum();
            }
            _ => {}
        }
    }

    fn write(&mut self, frame: OutFrame) {
        let Some((mid, codec)) = self.published.get(&frame.track).copied() else {
            self.stats.frames_dropped += 1;
            return;
        };
        if !self.connected {
            self.stats.frames_dropped += 1;
            return;
        }
        let Some(writer) = self.rtc.writer(mid) else { return };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == str_codec(codec))
            .map(|p| p.pt())
        else {
            self.stats.frames_dropped += 1;
            return;
        };
        let frequency = if codec == Codec::Opus {
            Frequency::FORTY_EIGHT_KHZ
        } else {
            Frequency::NINETY_KHZ
        };
        let time = MediaTime::new(frame.rtp_time, frequency);
        let writer = match &frame.rid {
            Some(rid) => writer.rid(Rid::from(rid.as_str())),
            None => writer,
        };
        let wallclock = frame.capture.unwrap_or_else(Instant::now);
        if let Err(e) = writer.write(pt, wallclock, time, frame.data) {
            tracing::debug!(error = %e, "peer: write failed");
            self.stats.frames_dropped += 1;
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Stats(reply) => drop(reply.send(self.stats.clone())),
            Command::Keyframe(mid) => {
                let mid = Mid::from(mid.as_str());
                if let Some(mut writer) = self.rtc.writer(mid) {
                    if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                        let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                    }
                }
            }
            Command::Layer(mid, rid, reply) => {
                // No SDP involved: sent at once (the client still serialises it with other mutations).
                let track = TrackObject {
                    location: Some(api::Location::Remote),
                    mid: Some(mid),
                    simulcast: Some(SimulcastPreferences {
                        preferred_rid: Some(rid),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let request = api::UpdateTracksRequest {
                    tracks: vec![track],
                    session_description: None,
                };
                let (client, session) = (self.client.clone(), self.session.clone());
                tokio::spawn(async move {
                    let result = client.tracks_update(&session, &request).await.map_err(PeerError::from);
                    let result = result.and_then(|reply| match reply.tracks.first().and_then(|t| t.error()) {
                        Some((code, description)) => Err(PeerError::Api(ClientError::Item {
                            code: code.to_string(),
                            description: description.to_string(),
                        })),
                        None => Ok(()),
                    });
                    let _ = reply.send(result);
                });
            }
            command if self.in_flight.is_some() => self.queue.push_back(command),
            Command::Publish(tracks, reply) => self.publish(tracks, reply),
            Command::Subscribe(tracks, reply) => self.subscribe(tracks, reply),
            Command::Close(mids, reply) => self.close(mids, reply),
        }
    }

    fn spawn_http<F>(&self, call: F)
    where
        F: Future<Output = Http> + Send + 'static,
    {
        let tx = self.http_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(call.await).await;
        });
    }

    fn publish(&mut self, specs: Vec<LocalTrackSpec>, reply: oneshot::Sender<Result<Vec<PublishedTrack>, PeerError>>) {
        let mut api = self.rtc.sdp_api();
        let mut tracks = Vec::new();
        for spec in specs {
            self.publications.push(spec.clone());
            let kind = if spec.codec == Codec::Opus {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            let simulcast = (!spec.rids.is_empty()).then(|| {
                let mut simulcast = Simulcast::new();
                for rid in &spec.rids {
                    simulcast.add_send_layer(SimulcastLayer::new(rid));
                }
                simulcast
            });
            let mid = api.add_media(
                kind,
                Direction::SendOnly,
                Some(self.session.clone()),
                Some(spec.name.clone()),
                simulcast,
            );
            tracks.push((spec.name, mid, spec.codec));
        }
        let Some((offer, pending)) = api.apply() else {
            let _ = reply.send(Ok(Vec::new()));
            return;
        };
        let request = api::TracksRequest {
            session_description: Some(SessionDescription::offer(offer.to_sdp_string())),
            tracks: Some(
                tracks
                    .iter()
                    .map(|(name, mid, _)| TrackObject::local(mid.to_string(), name.clone()))
                    .collect(),
            ),
            auto_discover: None,
        };
        let (client, session) = (self.client.clone(), self.session.clone());
        self.spawn_http(async move { Http::Published(client.tracks_new(&session, &request).await) });
        self.in_flight = Some(InFlight::Publish { pending, tracks, reply });
    }

    fn subscribe(
        &mut self,
        specs: Vec<RemoteTrackSpec>,
        reply: oneshot::Sender<Result<Vec<SubscribedTrack>, PeerError>>,
    ) {
        if specs.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let request = api::TracksRequest {
            session_description: None,
            tracks: Some(
                specs
                    .iter()
                    .map(|spec| {
                        let mut track = TrackObject::remote(spec.session_id.clone(), spec.track_name.clone());
                        track.simulcast = spec.preferred_rid.clone().map(|rid| SimulcastPreferences {
                            preferred_rid: Some(rid),
                            ..Default::default()
                        });
                        track
                    })
                    .collect(),
            ),
            auto_discover: None,
        };
        let (client, session) = (self.client.clone(), self.session.clone());
        self.spawn_http(async move { Http::Subscribed(client.tracks_new(&session, &request).await) });
        self.in_flight = Some(InFlight::Subscribe {
            specs,
            tracks: Vec::new(),
            reply,
        });
    }

    fn close(&mut self, mids: Vec<String>, reply: oneshot::Sender<Result<(), PeerError>>) {
        let request = api::CloseTracksRequest {
            tracks: mids.iter().map(|mid| CloseTrackObject { mid: mid.clone() }).collect(),
            force: true,
            session_description: None,
        };
        let closed: Vec<String> = self
            .published
            .iter()
            .filter(|(_, (mid, _))| mids.contains(&mid.to_string()))
            .map(|(name, _)| name.clone())
            .collect();
        self.publications.retain(|spec| !closed.contains(&spec.name));
        self.published.retain(|name, _| !closed.contains(name));
        let (client, session) = (self.client.clone(), self.session.clone());
        self.spawn_http(async move { Http::Closed(client.tracks_close(&session, &request).await) });
        self.in_flight = Some(InFlight::Close { reply });
    }

    fn http_result(&mut self, result: Http) {
        let in_flight = self.in_flight.take();
        match (result, in_flight) {
            (Http::Published(result), Some(InFlight::Publish { pending, tracks, reply })) => {
                let outcome = result.map_err(PeerError::from).and_then(|response| {
                    let answer = response
                        .session_description
                        .ok_or_else(|| PeerError::Rtc("the SFU sent no answer".into()))?;
                    let answer = SdpAnswer::from_sdp_string(&answer.sdp).map_err(|e| PeerError::Rtc(e.to_string()))?;
                    self.rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .map_err(|e| PeerError::Rtc(e.to_string()))?;
                    let mut published = Vec::new();
                    for (name, mid, codec) in tracks {
                        let failed = response
                            .tracks
                            .iter()
                            .any(|t| t.track_name.as_deref() == Some(name.as_str()) && t.error_code.is_some());
                        if failed {
                            continue;
                        }
                        self.published.insert(name.clone(), (mid, codec));
                        published.push(PublishedTrack {
                            name,
                            mid: mid.to_string(),
                        });
                    }
                    Ok(published)
                });
                let _ = reply.send(outcome);
            }
            (Http::NewSession(result), other) => {
                self.in_flight = other;
                self.recovered(result);
            }
            (Http::Subscribed(result), Some(InFlight::Subscribe { specs, reply, .. })) => {
                let response = match result {
                    Ok(response) => response,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                };
                let tracks: Vec<SubscribedTrack> = response
                    .tracks
                    .iter()
                    .filter(|t| t.error_code.is_none())
                    .map(|t| SubscribedTrack {
                        session_id: t.session_id.clone().unwrap_or_default(),
                        track_name: t.track_name.clone().unwrap_or_default(),
                        mid: t.mid.clone().unwrap_or_default(),
                    })
                    .collect();
                let offer = response
                    .session_description
                    .filter(|d| d.sdp_type == api::SdpType::Offer && response.requires_immediate_renegotiation);
                let Some(offer) = offer else {
                    self.remember_subscriptions(&specs, &tracks);
                    let _ = reply.send(Ok(tracks));
                    return;
                };
                let answer = SdpOffer::from_sdp_string(&offer.sdp)
                    .map_err(|e| PeerError::Rtc(e.to_string()))
                    .and_then(|offer| {
                        self.rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .map_err(|e| PeerError::Rtc(e.to_string()))
                    });
                match answer {
                    Ok(answer) => {
                        let description = SessionDescription::answer(answer.to_sdp_string());
                        let (client, session) = (self.client.clone(), self.session.clone());
                        self.spawn_http(
                            async move { Http::Renegotiated(client.renegotiate(&session, description).await) },
                        );
                        self.in_flight = Some(InFlight::Subscribe { specs, tracks, reply });
                    }
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
            (Http::Renegotiated(result), Some(InFlight::Subscribe { specs, tracks, reply })) => {
                if result.is_ok() {
                    self.remember_subscriptions(&specs, &tracks);
                }
                let _ = reply.send(result.map(|()| tracks).map_err(PeerError::from));
            }
            (Http::Closed(result), Some(InFlight::Close { reply })) => {
                let _ = reply.send(result.map(|_| ()).map_err(PeerError::from));
            }
            (_, other) => {
                tracing::warn!("peer: unexpected HTTP result for the operation in flight");
                self.in_flight = other;
            }
        }
    }
}
