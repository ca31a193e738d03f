//! Ingresses: the RTMP endpoints a streamer can publish to, each with a stream key, an optional room and a
//! video mode. Created through the API or declared in the configuration. The store is the registry the API
//! reads; the live state of an ingress is written by its session.

use crate::redact::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How video is taken in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoMode {
    /// Passthrough when the stream is safe for WebRTC players (H.264 without B-frames), else transcode.
    #[default]
    Auto,
    /// Never re-encode (B-frames or unusual profiles are forwarded as they are).
    Passthrough,
    /// Always decode and re-encode.
    Transcode,
}

/// The codec a transcoding ingress encodes to (passthrough keeps the publisher's H.264).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264 constrained-baseline (`pipelines/video-encode-h264.gst`).
    #[default]
    H264,
    /// VP8 (`pipelines/video-encode-vp8.gst`); implies transcoding.
    Vp8,
}

impl VideoCodec {
    /// The encoding fragment of `pipelines/`.
    pub fn fragment(self) -> &'static str {
        match self {
            VideoCodec::H264 => "video-encode-h264",
            VideoCodec::Vp8 => "video-encode-vp8",
        }
    }
}

/// How a new ingress takes video in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoSettings {
    /// Passthrough, transcode or auto.
    pub mode: VideoMode,
    /// Codec of the transcode path.
    pub codec: VideoCodec,
    /// Simulcast layers of the transcode path (1-3).
    pub layers: u8,
}

/// Lifecycle state of an ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressState {
    /// Waiting for a publisher.
    #[default]
    Idle,
    /// A publisher is live.
    Live,
    /// The publisher dropped; its SFU session is kept for the reconnect grace.
    Reconnecting,
    /// The stream ended.
    Ended,
    /// The stream failed.
    Failed,
}

/// A published track, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTrack {
    /// Track name in the SFU.
    pub track_name: String,
    /// `audio` or `video`.
    pub kind: String,
}

/// SFU side of a live ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSfu {
    /// The SFU session carrying the tracks.
    pub session_id: String,
    /// Its tracks.
    pub tracks: Vec<IngressTrack>,
}

/// Counters of a live ingress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressStats {
    /// `passthrough` or `transcode` once video was seen.
    pub video_path: Option<String>,
    /// The publisher's video codec (`h264`, `h265`, `av1`, `vp9`) once its sequence header was seen.
    pub input_video_codec: Option<String>,
    /// The publisher's audio codec (`aac`, `opus`); Opus goes to the SFU as it came, AAC is transcoded.
    pub input_audio_codec: Option<String>,
    /// Video frames received from the publisher.
    pub video_frames_in: u64,
    /// Video frames handed to the SFU peer.
    pub video_frames_out: u64,
    /// Audio frames received.
    pub audio_frames_in: u64,
    /// Opus frames handed to the SFU peer.
    pub audio_frames_out: u64,
    /// Tags that could not be parsed or frames dropped.
    pub dropped: u64,
    /// Publisher connections so far (reconnects included).
    pub connections: u64,
    /// Ingest bitrate over the last second, bits per second.
    pub bitrate_bps: u64,
    /// Gateway-added video latency p50, p95, p99 in milliseconds (FLV tag arrival to frame handed to the
    /// WebRTC peer), over the last minute.
    pub added_latency_ms: Option<[f64; 3]>,
    /// Time between the last two keyframes from the publisher, in milliseconds (FLV timestamps).
    pub keyframe_interval_ms: Option<u64>,
}

/// One ingress.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// Its id (`ing_` + 16 hex digits).
    pub id: String,
    /// Its name; tracks are `{name}-video` and `{name}-audio`.
    pub name: String,
    /// The stream key (shown by the API, never logged).
    #[serde(serialize_with = "expose_key")]
    pub stream_key: Secret,
    /// The room its tracks join.
    pub room: Option<String>,
    /// Video mode.
    pub video_mode: VideoMode,
    /// Codec of the transcode path.
    pub video_codec: VideoCodec,
    /// Simulcast layers of the transcode path (1-3; more than 1 implies transcoding).
    pub layers: u8,
    /// Current state.
    pub state: IngressState,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SFU session and tracks while live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sfu: Option<IngressSfu>,
    /// The publisher's `onMetaData`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Counters.
    pub stats: IngressStats,
    /// Declared in the configuration (cannot be deleted through the API).
    pub from_config: bool,
}

fn expose_key<S: serde::Serializer>(key: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(key.expose())
}

/// The ingress registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct IngressStore {
    inner: Arc<Mutex<BTreeMap<String, Ingress>>>,
}

/// Why an ingress operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// No such ingress.
    #[error("ingress not found")]
    NotFound,
    /// Declared in the configuration.
    #[error("ingress `{0}` is declared in the configuration and cannot be deleted")]
    FromConfig(String),
    /// Another ingress has this stream key.
    #[error("stream key already in use")]
    DuplicateKey,
}

/// A fresh random stream key (32 URL-safe characters).
pub fn new_stream_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..32)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

impl IngressStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Ingress>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an ingress; `stream_key` is generated when `None`.
    pub fn create(
        &self,
        name: &str,
        room: Option<String>,
        video: VideoSettings,
        stream_key: Option<Secret>,
        from_config: bool,
    ) -> Result<Ingress, IngressError> {
        let VideoSettings {
            mode: video_mode,
            codec: video_codec,
            layers,
        } = video;
        let key = stream_key.unwrap_or_else(|| Secret::new(new_stream_key()));
        let mut map = self.lock();
        if map.values().any(|i| i.stream_key.ct_eq(key.expose())) {
            return Err(IngressError::DuplicateKey);
        }
        let ingress = Ingress {
            id: format!("ing_{:016x}", rand::random::<u64>()),
            name: name.to_string(),
            stream_key: key,
            room,
            video_mode,
            video_codec,
            layers: layers.clamp(1, 3),
            state: IngressState::Idle,
            reason: None,
            sfu: None,
            metadata: None,
            stats: IngressStats::default(),
            from_config,
        };
        map.insert(ingress.id.clone(), ingress.clone());
        Ok(ingress)
    }

    /// All ingresses.
    pub fn list(&self) -> Vec<Ingress> {
        self.lock().values().cloned().collect()
    }

    /// One ingress.
    pub fn get(&self, id: &str) -> Option<Ingress> {
        self.lock().get(id).cloned()
    }

    /// The ingress whose key is `key` (compared in constant time against every key).
    pub fn find_by_key(&self, key: &str) -> Option<Ingress> {
        let map = self.lock();
        let mut found = None;
        for ingress in map.values() {
            if ingress.stream_key.ct_eq(key) {
                found = Some(ingress.clone());
            }
        }
        found
    }

    /// Removes an ingress created through the API.
    pub fn delete(&self, id: &str) -> Result<Ingress, IngressError> {
        let mut map = self.lock();
        let ingress = map.get(id).ok_or(IngressError::NotFound)?;
        if ingress.from_config {
            return Err(IngressError::FromConfig(ingress.name.clone()));
        }
        map.remove(id).ok_or(IngressError::NotFound)
    }

    /// Applies `change` to ingress `id` (ignored when it was deleted meanwhile).
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Ingress)) {
        if let Some(ingress) = self.lock().get_mut(id) {
            change(ingress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_find_delete() {
        let store = IngressStore::default();
        let a = store
            .create(
                "show",
                Some("r1".into()),
                VideoSettings {
                    layers: 1,
                    ..Default::default()
                },
                None,
                false,
            )
            .unwrap();
        assert_eq!(a.stream_key.expose().len(), 32);
        assert_eq!(store.find_by_key(a.stream_key.expose()).unwrap().id, a.id);
        assert!(store.find_by_key("nope").is_none());
        let fixed = store
            .create(
                "fleet",
                None,
                VideoSettings {
                    mode: VideoMode::Passthrough,
                    codec: VideoCodec::H264,
                    layers: 1,
                },
                Some(Secret::new("k".repeat(20))),
                true,
            )
            .unwrap();
        assert_eq!(
            store
                .create(
                    "dup",
                    None,
                    VideoSettings {
                        mode: VideoMode::Transcode,
                        codec: VideoCodec::Vp8,
                        layers: 1,
                    },
                    Some(Secret::new("k".repeat(20))),
                    false
                )
                .unwrap_err(),
            IngressError::DuplicateKey
        );
        assert_eq!(
            store.delete(&fixed.id).unwrap_err(),
            IngressError::FromConfig("fleet".into())
        );
        store.update(&a.id, |i| i.state = IngressState::Live);
        assert_eq!(store.get(&a.id).unwrap().state, IngressState::Live);
        assert_eq!(store.delete(&a.id).unwrap().id, a.id);
        assert_eq!(store.delete(&a.id).unwrap_err(), IngressError::NotFound);
        let json = serde_json::to_value(store.get(&fixed.id).unwrap()).unwrap();
        assert_eq!(json["streamKey"], "k".repeat(20));
        assert_eq!(json["state"], "idle");
    }
}
