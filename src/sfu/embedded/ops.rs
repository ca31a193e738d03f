//! The Calls API operations, executed by the core on its sessions (sans-IO: no sockets here, only `Rtc`
//! state changes and bookkeeping).

use super::core::Core;
use super::sdp::{self, MediaSection};
use super::session::{ApiFailure, LocalTrack, Negotiation, RemoteTrack, Session, new_session_id};
use crate::sfu::api::{self, ErrorCode, Location, MAX_TRACKS_PER_REQUEST, SessionDescription, TrackKind, TrackObject};
use std::time::Instant;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::{Candidate, Rtc};

/// A publication resolved for a pull.
struct Source {
    publisher: String,
    track_name: String,
    kind: MediaKind,
}

fn item_error(mut track: TrackObject, code: ErrorCode, description: impl Into<String>) -> TrackObject {
    track.error_code = Some(code.to_string());
    track.error_description = Some(description.into());
    track
}

fn kind_of(kind: MediaKind) -> TrackKind {
    if kind.is_audio() {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

fn media_kind(section: &MediaSection) -> Option<MediaKind> {
    match section.kind.as_str() {
        "audio" => Some(MediaKind::Audio),
        "video" => Some(MediaKind::Video),
        _ => None,
    }
}

fn parse_offer(description: &SessionDescription) -> Result<SdpOffer, ApiFailure> {
    if description.sdp_type != api::SdpType::Offer {
        return Err(ApiFailure::bad_sdp("expected an offer"));
    }
    SdpOffer::from_sdp_string(&description.sdp).map_err(ApiFailure::bad_sdp)
}

impl Core {
    fn session_mut(&mut self, id: &str) -> Result<&mut Session, ApiFailure> {
        self.sessions.get_mut(id).ok_or_else(ApiFailure::gone)
    }

    fn stable_session(&mut self, id: &str) -> Result<&mut Session, ApiFailure> {
        let session = self.session_mut(id)?;
        if session.has_pending_offer() {
            return Err(ApiFailure::new(
                406,
                ErrorCode::InvalidParams,
                "a previous offer of this session has not been answered through renegotiate yet",
            ));
        }
        Ok(session)
    }

    fn build_rtc(&self, now: Instant) -> Rtc {
        let mut rtc = self.template.clone().build(now);
        for addr in &self.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(candidate) => drop(rtc.add_local_candidate(candidate)),
                Err(e) => tracing::warn!(%addr, error = %e, "embedded sfu: unusable candidate address"),
            }
        }
        rtc
    }

    pub(super) fn new_session(
        &mut self,
        offer: Option<SessionDescription>,
        now: Instant,
    ) -> Result<api::NewSessionResponse, ApiFailure> {
        let id = new_session_id();
        let mut session = Session::new(id.clone(), self.build_rtc(now), now);
        let answer = match offer {
            Some(description) => {
                let offer = parse_offer(&description)?;
                let answer = session.rtc.sdp_api().accept_offer(offer).map_err(ApiFailure::bad_sdp)?;
                Some(SessionDescription::answer(answer.to_sdp_string()))
            }
            None => None,
        };
        self.sessions.insert(id.clone(), session);
        self.touch(&id);
        Ok(api::NewSessionResponse {
            session_id: id,
            session_description: answer,
            ..Default::default()
        })
    }

    pub(super) fn tracks_new(
        &mut self,
        id: &str,
        request: api::TracksRequest,
        now: Instant,
    ) -> Result<api::TracksResponse, ApiFailure> {
        self.stable_session(id)?;
        let tracks = request.tracks.unwrap_or_default();
        if tracks.len() > MAX_TRACKS_PER_REQUEST {
            return Err(ApiFailure::params(format!(
                "at most {MAX_TRACKS_PER_REQUEST} tracks per request"
            )));
        }
        let remote = tracks.iter().filter(|t| t.location == Some(Location::Remote)).count();
        if remote != 0 && remote != tracks.len() {
            return Err(ApiFailure::params("a request is either all local or all remote tracks"));
        }
        let auto_discover = request.auto_discover.unwrap_or(false);
        match (request.session_description, remote > 0) {
            (Some(offer), false) => self.publish_with_offer(id, offer, tracks, auto_discover),
            (Some(offer), true) => self.pull_with_offer(id, offer, tracks),
            (None, true) => self.pull_with_sfu_offer(id, tracks),
            (None, false) if !tracks.is_empty() => self.publish_with_sfu_offer(id, tracks, now),
            (None, false) => Err(ApiFailure::params("nothing to do: no sessionDescription and no tracks")),
        }
    }

    fn publish_with_offer(
        &mut self,
        id: &str,
        description: SessionDescription,
        tracks: Vec<TrackObject>,
        auto_discover: bool,
    ) -> Result<api::TracksResponse, ApiFailure> {
        let offer = parse_offer(&description)?;
        let sections = sdp::media_sections(&description.sdp);
        let session = self.session_mut(id)?;
        let answer = session.rtc.sdp_api().accept_offer(offer).map_err(ApiFailure::bad_sdp)?;
        let now = Instant::now();
        let mut results = Vec::with_capacity(tracks.len());
        for track in tracks {
            let (Some(mid), Some(name)) = (track.mid.clone(), track.track_name.clone()) else {
                results.push(item_error(
                    track,
                    ErrorCode::InvalidParams,
                    "mid and trackName are required",
                ));
                continue;
            };
            let Some(section) = sections.iter().find(|s| s.mid == mid && s.sends()) else {
                results.push(item_error(
                    track,
                    ErrorCode::InvalidParams,
                    "mid is not a sending m-line of the offer",
                ));
                continue;
            };
            if session.local_by_name(&name).is_some() {
                results.push(item_error(
                    track,
                    ErrorCode::RepeatedLocalTrackError,
                    "trackName is already published",
                ));
                continue;
            }
            let Some(kind) = media_kind(section) else {
                results.push(item_error(
                    track,
                    ErrorCode::InvalidParams,
                    "not an audio or video m-line",
                ));
                continue;
            };
            session.local.push(new_local(
                &name,
                Mid::from(mid.as_str()),
                kind,
                section.send_rids.clone(),
                now,
            ));
            results.push(TrackObject {
                location: Some(Location::Local),
                mid: Some(mid),
                track_name: Some(name),
                kind: Some(kind_of(kind)),
                ..Default::default()
            });
        }
        if auto_discover {
            for section in sections.iter().filter(|s| s.sends()) {
                let Some(kind) = media_kind(section) else { continue };
                let mid = Mid::from(section.mid.as_str());
                if session.local.iter().any(|t| t.active && t.mid == mid) {
                    continue;
                }
                let name = format!("{:016x}", rand::random::<u64>());
                session
                    .local
                    .push(new_local(&name, mid, kind, section.send_rids.clone(), now));
                results.push(TrackObject {
                    location: Some(Location::Local),
                    mid: Some(section.mid.clone()),
                    track_name: Some(name),
                    kind: Some(kind_of(kind)),
                    ..Default::default()
                });
            }
        }
        self.touch(id);
        Ok(api::TracksResponse {
            requires_immediate_renegotiation: false,
            session_description: Some(SessionDescription::answer(answer.to_sdp_string())),
            tracks: results,
            ..Default::default()
        })
    }

    /// Finds the publication a remote track names; the item error when it cannot be pulled (yet).
    fn resolve(&self, track: &TrackObject) -> Result<Source, Box<TrackObject>> {
        let not_found = || {
            let mut failed = item_error(
                track.clone(),
                ErrorCode::NotFoundTrackError,
                "Track not found on remote peer. Make sure the publisher peer is connected and sending packets \
                 for this track",
            );
            failed.mid = Some(String::new());
            Box::new(failed)
        };
        let (Some(publisher), Some(name)) = (track.session_id.as_deref(), track.track_name.as_deref()) else {
            let mut failed = item_error(
                track.clone(),
                ErrorCode::InvalidParams,
                "sessionId and trackName are required",
            );
            failed.mid = Some(String::new());
            return Err(Box::new(failed));
        };
        let session = self.sessions.get(publisher).ok_or_else(not_found)?;
        let local = session.local_by_name(name).ok_or_else(not_found)?;
        if local.last_media.is_none() {
            return Err(not_found());
        }
        Ok(Source {
            publisher: publisher.to_string(),
            track_name: name.to_string(),
            kind: local.kind,
        })
    }

    fn pull_with_sfu_offer(&mut self, id: &str, tracks: Vec<TrackObject>) -> Result<api::TracksResponse, ApiFailure> {
        let resolved: Vec<Result<Source, Box<TrackObject>>> = tracks.iter().map(|t| self.resolve(t)).collect();
        let session = self.session_mut(id)?;
        let mut results = Vec::with_capacity(tracks.len());
        let mut pending: Vec<(Mid, RemoteTrack)> = Vec::new();
        let mut immediate: Vec<(Mid, RemoteTrack)> = Vec::new();
        let mut api = session.rtc.sdp_api();
        for (track, source) in tracks.into_iter().zip(resolved) {
            let source = match source {
                Ok(source) => source,
                Err(failed) => {
                    results.push(*failed);
                    continue;
                }
            };
            let remote = RemoteTrack::new(
                source.publisher.clone(),
                source.track_name.clone(),
                track.simulcast.as_ref().and_then(|s| s.preferred_rid.clone()),
            );
            let mid = match track.mid.as_deref().and_then(|m| m.strip_prefix('#')) {
                Some(own_name) => {
                    let own = session.local.iter().find(|t| t.active && t.name == own_name);
                    let Some(own) = own else {
                        results.push(item_error(
                            track,
                            ErrorCode::InvalidParams,
                            "no local track of that name",
                        ));
                        continue;
                    };
                    immediate.push((own.mid, remote));
                    own.mid
                }
                None => {
                    let mid = api.add_media(
                        source.kind,
                        Direction::SendOnly,
                        Some(source.publisher.clone()),
                        Some(source.track_name.clone()),
                        None,
                    );
                    pending.push((mid, remote));
                    mid
                }
            };
            results.push(TrackObject {
                location: Some(Location::Remote),
                mid: Some(mid.to_string()),
                session_id: Some(source.publisher),
                track_name: Some(source.track_name),
                kind: Some(kind_of(source.kind)),
                simulcast: track.simulcast,
                ..Default::default()
            });
        }
        let offer = if pending.is_empty() { None } else { api.apply() };
        let description = offer.map(|(offer, pending_offer)| {
            session.negotiation = Negotiation::LocalOffer {
                pending: pending_offer,
                subscriptions: pending,
                publications: Vec::new(),
            };
            SessionDescription::offer(offer.to_sdp_string())
        });
        for (mid, remote) in immediate {
            self.start_subscription(id, mid, remote);
        }
        self.touch(id);
        Ok(api::TracksResponse {
            requires_immediate_renegotiation: description.is_some(),
            session_description: description,
            tracks: results,
            ..Default::default()
        })
    }

    fn pull_with_offer(
        &mut self,
        id: &str,
        description: SessionDescription,
        tracks: Vec<TrackObject>,
    ) -> Result<api::TracksResponse, ApiFailure> {
        let offer = parse_offer(&description)?;
        let sections = sdp::media_sections(&description.sdp);
        let resolved: Vec<Result<Source, Box<TrackObject>>> = tracks.iter().map(|t| self.resolve(t)).collect();
        let session = self.session_mut(id)?;
        let answer = session.rtc.sdp_api().accept_offer(offer).map_err(ApiFailure::bad_sdp)?;
        let mut used: Vec<Mid> = session
            .local
            .iter()
            .map(|t| t.mid)
            .chain(session.remote.keys().copied())
            .collect();
        let mut results = Vec::with_capacity(tracks.len());
        let mut started = Vec::new();
        for (track, source) in tracks.into_iter().zip(resolved) {
            let source = match source {
                Ok(source) => source,
                Err(failed) => {
                    results.push(*failed);
                    continue;
                }
            };
            let wanted = track.mid.clone();
            let section = sections.iter().find(|s| {
                let mid = Mid::from(s.mid.as_str());
                s.receives()
                    && !used.contains(&mid)
                    && media_kind(s) == Some(source.kind)
                    && wanted.as_ref().is_none_or(|w| *w == s.mid)
            });
            let Some(section) = section else {
                results.push(item_error(
                    track,
                    ErrorCode::InvalidParams,
                    "no free receiving m-line of that kind",
                ));
                continue;
            };
            let mid = Mid::from(section.mid.as_str());
            used.push(mid);
            let remote = RemoteTrack::new(
                source.publisher.clone(),
                source.track_name.clone(),
                track.simulcast.as_ref().and_then(|s| s.preferred_rid.clone()),
            );
            started.push((mid, remote));
            results.push(TrackObject {
                location: Some(Location::Remote),
                mid: Some(section.mid.clone()),
                session_id: Some(source.publisher),
                track_name: Some(source.track_name),
                kind: Some(kind_of(source.kind)),
                ..Default::default()
            });
        }
        for (mid, remote) in started {
            self.start_subscription(id, mid, remote);
        }
        self.touch(id);
        Ok(api::TracksResponse {
            requires_immediate_renegotiation: false,
            session_description: Some(SessionDescription::answer(answer.to_sdp_string())),
            tracks: results,
            ..Default::default()
        })
    }

    fn publish_with_sfu_offer(
        &mut self,
        id: &str,
        tracks: Vec<TrackObject>,
        now: Instant,
    ) -> Result<api::TracksResponse, ApiFailure> {
        let session = self.session_mut(id)?;
        let mut results = Vec::with_capacity(tracks.len());
        let mut publications = Vec::new();
        let mut api = session.rtc.sdp_api();
        for track in tracks {
            let (Some(name), Some(kind)) = (track.track_name.clone(), track.kind) else {
                results.push(item_error(
                    track,
                    ErrorCode::InvalidParams,
                    "trackName and kind are required",
                ));
                continue;
            };
            if session.local.iter().any(|t| t.active && t.name == name) {
                results.push(item_error(
                    track,
                    ErrorCode::RepeatedLocalTrackError,
                    "trackName is already published",
                ));
                continue;
            }
            let kind = match kind {
                TrackKind::Audio => MediaKind::Audio,
                TrackKind::Video => MediaKind::Video,
            };
            let direction = if track.bidirectional_media_stream == Some(true) {
                Direction::SendRecv
            } else {
                Direction::RecvOnly
            };
            let mid = api.add_media(kind, direction, None, None, None);
            publications.push(new_local(&name, mid, kind, Vec::new(), now));
            results.push(TrackObject {
                location: Some(Location::Local),
                mid: Some(mid.to_string()),
                track_name: Some(name),
                kind: Some(kind_of(kind)),
                bidirectional_media_stream: track.bidirectional_media_stream,
                ..Default::default()
            });
        }
        let description = if publications.is_empty() { None } else { api.apply() }.map(|(offer, pending)| {
            session.negotiation = Negotiation::LocalOffer {
                pending,
                subscriptions: Vec::new(),
                publications,
            };
            SessionDescription::offer(offer.to_sdp_string())
        });
        self.touch(id);
        Ok(api::TracksResponse {
            requires_immediate_renegotiation: description.is_some(),
            session_description: description,
            tracks: results,
            ..Default::default()
        })
    }

    fn start_subscription(&mut self, subscriber: &str, mid: Mid, remote: RemoteTrack) {
        let (publisher, track, rid) = (
            remote.publisher.clone(),
            remote.track_name.clone(),
            remote.preferred_rid.clone(),
        );
        if let Some(session) = self.sessions.get_mut(subscriber) {
            session.remote.insert(mid, remote);
        }
        if let Some(local) = self
            .sessions
            .get_mut(&publisher)
            .and_then(|s| s.local.iter_mut().find(|t| t.active && t.name == track))
        {
            local.subscribers.push((subscriber.to_string(), mid));
        }
        let rid = rid.as_deref().map(Rid::from);
        self.request_keyframe(&publisher, &track, rid, KeyframeRequestKind::Fir, false);
    }

    pub(super) fn renegotiate(
        &mut self,
        id: &str,
        description: SessionDescription,
    ) -> Result<api::RenegotiateResponse, ApiFailure> {
        let session = self.session_mut(id)?;
        if description.sdp_type != api::SdpType::Answer {
            return Err(ApiFailure::bad_sdp("expected an answer"));
        }
        let answer = SdpAnswer::from_sdp_string(&description.sdp).map_err(ApiFailure::bad_sdp)?;
        let Negotiation::LocalOffer {
            pending,
            subscriptions,
            publications,
        } = std::mem::replace(&mut session.negotiation, Negotiation::Stable)
        else {
            return Err(ApiFailure::bad_sdp("there is no offer of this session to answer"));
        };
        session
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(ApiFailure::bad_sdp)?;
        session.local.extend(publications);
        for (mid, remote) in subscriptions {
            self.start_subscription(id, mid, remote);
        }
        self.touch(id);
        Ok(api::RenegotiateResponse::default())
    }

    pub(super) fn update(
        &mut self,
        id: &str,
        request: api::UpdateTracksRequest,
    ) -> Result<api::TracksResponse, ApiFailure> {
        self.stable_session(id)?;
        let mut results = Vec::with_capacity(request.tracks.len());
        let mut keyframes = Vec::new();
        for track in request.tracks {
            let mid = track.mid.as_deref().map(Mid::from);
            let session = self.session_mut(id)?;
            let Some(remote) = mid.and_then(|m| session.remote.get(&m)).filter(|r| r.active).cloned() else {
                results.push(item_error(
                    track,
                    ErrorCode::UpdateTrackError,
                    "no active remote track on that mid",
                ));
                continue;
            };
            let rids = self
                .sessions
                .get(&remote.publisher)
                .and_then(|s| s.local_by_name(&remote.track_name))
                .map(|t| t.rids.clone())
                .unwrap_or_default();
            let preferred = track.simulcast.as_ref().and_then(|s| s.preferred_rid.clone());
            let Some(preferred) = preferred.filter(|rid| rids.contains(rid)) else {
                results.push(item_error(
                    track,
                    ErrorCode::UpdateTrackError,
                    "the track has no such simulcast layer",
                ));
                continue;
            };
            if let Some(remote) = mid.and_then(|m| self.session_mut(id).ok()?.remote.get_mut(&m)) {
                remote.preferred_rid = Some(preferred.clone());
            }
            keyframes.push((remote.publisher, remote.track_name, preferred));
            results.push(track);
        }
        for (publisher, track, rid) in keyframes {
            self.request_keyframe(
                &publisher,
                &track,
                Some(Rid::from(rid.as_str())),
                KeyframeRequestKind::Fir,
                false,
            );
        }
        Ok(api::TracksResponse {
            tracks: results,
            ..Default::default()
        })
    }

    pub(super) fn close(
        &mut self,
        id: &str,
        request: api::CloseTracksRequest,
    ) -> Result<api::TracksResponse, ApiFailure> {
        self.stable_session(id)?;
        if request.tracks.is_empty() {
            return Err(ApiFailure::params("tracks must name at least one mid"));
        }
        let answer = match (request.force, request.session_description) {
            (true, _) => None,
            (false, Some(description)) => {
                let offer = parse_offer(&description)?;
                let session = self.session_mut(id)?;
                let answer = session.rtc.sdp_api().accept_offer(offer).map_err(ApiFailure::bad_sdp)?;
                Some(SessionDescription::answer(answer.to_sdp_string()))
            }
            (false, None) => return Err(ApiFailure::params("a negotiated close (force: false) needs an offer")),
        };
        let mut results = Vec::with_capacity(request.tracks.len());
        for close in request.tracks {
            let mid = Mid::from(close.mid.as_str());
            let session = self.session_mut(id)?;
            let item = TrackObject {
                mid: Some(close.mid.clone()),
                ..Default::default()
            };
            // A bidirectional mid carries both a publication and a subscription: closing it ends both.
            let publication = session.local_by_mid_mut(mid).map(|local| {
                local.active = false;
                local.name.clone()
            });
            let subscribed = session.remote.get(&mid).is_some_and(|r| r.active);
            if let Some(name) = &publication {
                self.end_publication(id, name);
            }
            if subscribed {
                self.end_subscription(id, mid);
            }
            if publication.is_some() || subscribed {
                results.push(item);
            } else {
                results.push(item_error(
                    item,
                    ErrorCode::CloseTrackError,
                    "Track doesn't exist or was already closed",
                ));
            }
        }
        self.touch(id);
        Ok(api::TracksResponse {
            requires_immediate_renegotiation: false,
            session_description: answer,
            tracks: results,
            ..Default::default()
        })
    }

    pub(super) fn get(&mut self, id: &str) -> Result<api::GetSessionResponse, ApiFailure> {
        let session = self.session_mut(id)?;
        let status = |active: bool| Some(if active { "active" } else { "inactive" }.to_string());
        let mut tracks: Vec<TrackObject> = session
            .local
            .iter()
            .map(|t| TrackObject {
                location: Some(Location::Local),
                mid: Some(t.mid.to_string()),
                track_name: Some(t.name.clone()),
                kind: Some(kind_of(t.kind)),
                status: status(t.active),
                ..Default::default()
            })
            .collect();
        let mut remote: Vec<(&Mid, &RemoteTrack)> = session.remote.iter().collect();
        remote.sort_by_key(|(mid, _)| mid.to_string());
        tracks.extend(remote.into_iter().map(|(mid, r)| TrackObject {
            location: Some(Location::Remote),
            mid: Some(mid.to_string()),
            session_id: Some(r.publisher.clone()),
            track_name: Some(r.track_name.clone()),
            status: status(r.active),
            ..Default::default()
        }));
        Ok(api::GetSessionResponse {
            tracks,
            ..Default::default()
        })
    }
}

fn new_local(name: &str, mid: Mid, kind: MediaKind, rids: Vec<String>, now: Instant) -> LocalTrack {
    LocalTrack {
        name: name.to_string(),
        mid,
        kind,
        rids,
        active: true,
        created: now,
        last_media: None,
        subscribers: Vec::new(),
        last_keyframe_request: None,
    }
}
