//! Egresses: SFU tracks re-encoded to RTMP(S) destinations. The store is what the API shows; each egress's
//! session writes its state here.

use super::layout::Layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A track to take from the SFU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackRef {
    /// The publishing session.
    pub session_id: String,
    /// The publication.
    pub track_name: String,
}

/// Output video settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoOut {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// H.264 bitrate.
    pub bitrate_kbps: u32,
}

impl Default for VideoOut {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2500,
        }
    }
}

/// Output audio settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AudioOut {
    /// AAC bitrate.
    pub bitrate_kbps: u32,
}

impl Default for AudioOut {
    fn default() -> Self {
        Self { bitrate_kbps: 128 }
    }
}

/// State of an egress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressState {
    /// Subscribing and starting the pipeline.
    #[default]
    Starting,
    /// Every output is sending.
    Active,
    /// Some output is down and being retried.
    Degraded,
    /// Stopped.
    Ended,
    /// Failed for good.
    Failed,
}

/// One destination, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputView {
    /// The URL with its stream key redacted.
    pub url: String,
    /// `starting`, `active` or `reconnecting`.
    pub state: String,
    /// Times the output was restarted.
    pub reconnects: u32,
    /// FLV bytes handed to the destination so far.
    pub bytes: u64,
    /// Bits per second handed to the destination over the last second.
    pub bitrate_bps: u64,
    /// FLV buffers dropped because the destination took them slower than they came (the output then
    /// resumed at the next video keyframe).
    pub dropped: u64,
}

/// A source being composited, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    /// The publishing session.
    pub session_id: String,
    /// The publication.
    pub track_name: String,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// The simulcast layer asked for (a video with layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The decoded picture's width (video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// The decoded picture's height (video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Frames the decoder could not decode (each one asks the publisher for a keyframe).
    pub undecodable_frames: u64,
}

/// One egress.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// `eg_` + 16 hex digits.
    pub id: String,
    /// Current state.
    pub state: EgressState,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Source tracks (for a room egress: the room's tracks being taken now).
    pub tracks: Vec<TrackRef>,
    /// The room followed, for a room egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The ingress followed, for an ingress egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// How several videos share the picture.
    pub layout: Layout,
    /// Destinations.
    pub outputs: Vec<OutputView>,
    /// Video settings.
    pub video: VideoOut,
    /// Audio settings.
    pub audio: AudioOut,
    /// Frames received from the SFU.
    pub frames_in: u64,
    /// The sources in the picture and the mix now.
    pub sources: Vec<SourceView>,
    /// The supervisor session running it (stopped at once by a DELETE).
    #[serde(skip)]
    pub session: Option<String>,
}

/// What an egress takes and makes.
#[derive(Debug, Clone, Default)]
pub struct EgressSpec {
    /// Named source tracks.
    pub tracks: Vec<TrackRef>,
    /// Or the room whose tracks to take.
    pub room: Option<String>,
    /// Or the ingress whose tracks to take.
    pub ingress: Option<String>,
    /// How several videos share the picture.
    pub layout: Layout,
    /// Video settings.
    pub video: VideoOut,
    /// Audio settings.
    pub audio: AudioOut,
}

/// An RTMP URL with its last path segment (the stream key) replaced.
pub fn redact_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, key)) if !key.is_empty() && base.contains("://") && base.matches('/').count() >= 3 => {
            format!("{base}/{}", crate::redact::REDACTED)
        }
        _ => url.to_string(),
    }
}

/// The egress registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EgressStore {
    inner: Arc<Mutex<BTreeMap<String, Egress>>>,
}

impl EgressStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Egress>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new egress sending to `urls` (as shown: file and HLS outputs by name).
    pub fn create(&self, spec: EgressSpec, urls: &[String]) -> Egress {
        let EgressSpec {
            tracks,
            room,
            ingress,
            layout,
            video,
            audio,
        } = spec;
        let egress = Egress {
            id: format!("eg_{:016x}", rand::random::<u64>()),
            state: EgressState::Starting,
            reason: None,
            tracks,
            room,
            ingress,
            layout,
            outputs: urls
                .iter()
                .map(|url| OutputView {
                    url: redact_url(url),
                    state: "starting".into(),
                    reconnects: 0,
                    bytes: 0,
                    bitrate_bps: 0,
                    dropped: 0,
                })
                .collect(),
            video,
            audio,
            frames_in: 0,
            sources: Vec::new(),
            session: None,
        };
        self.lock().insert(egress.id.clone(), egress.clone());
        egress
    }

    /// All egresses.
    pub fn list(&self) -> Vec<Egress> {
        self.lock().values().cloned().collect()
    }

    /// One egress.
    pub fn get(&self, id: &str) -> Option<Egress> {
        self.lock().get(id).cloned()
    }

    /// Removes an egress (its session stops).
    pub fn remove(&self, id: &str) -> Option<Egress> {
        self.lock().remove(id)
    }

    /// Applies `change` to egress `id`.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Egress)) {
        if let Some(egress) = self.lock().get_mut(id) {
            change(egress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_redacted_from_urls() {
        assert_eq!(
            redact_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh"),
            "rtmp://a.rtmp.youtube.com/live2/[redacted]"
        );
        assert_eq!(
            redact_url("rtmps://live.twitch.tv:443/app/live_123"),
            "rtmps://live.twitch.tv:443/app/[redacted]"
        );
        assert_eq!(redact_url("rtmp://host"), "rtmp://host");
        let store = EgressStore::default();
        let egress = store.create(EgressSpec::default(), &["rtmp://h/live/secretkey".into()]);
        let json = serde_json::to_string(&store.get(&egress.id).unwrap()).unwrap();
        assert!(!json.contains("secretkey"), "{json}");
    }
}
