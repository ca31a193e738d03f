//! The sources of one running egress pipeline: a branch per track, created on the track's first usable frame
//! (a video waits for a keyframe), laid out again whenever a video comes or goes or the speaker changes.

use super::branch::Branch;
use super::layout::{Layout, cells, layer_for};
use super::speaker::SpeakerPicker;
use super::store::{SourceView, VideoOut};
use crate::media::MediaError;
use crate::rooms::follow::TrackKey;
use crate::sfu::peer::Codec;
use gstreamer as gst;
use std::collections::HashMap;

/// What became of a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Into its branch.
    Ok,
    /// Dropped: a video that has not had a keyframe yet (ask for one).
    NeedsKeyframe,
    /// Dropped: the picture already shows [`MAX_TILES`] videos (this one gets a cell when one frees up).
    NoRoom,
    /// Into its branch, whose decoder has dropped this many earlier frames (`decode_watch.rs`): the pictures
    /// after them miss a reference until the next keyframe (ask for one).
    Undecoded(u64),
}

/// Most videos in one picture: beyond a 4 × 4 grid the cells are too small to see, and every video costs a
/// decoder. More videos wait for a cell; all audio is mixed.
pub const MAX_TILES: usize = 16;

/// A subscribed track: whose it is and its simulcast layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// (publisher's SFU session, track name): a participant's audio and video share the session.
    pub key: TrackKey,
    /// Simulcast layers, best first (empty: not simulcast, or not known).
    pub rids: Vec<String>,
}

/// One branch and whose it is.
struct Source {
    branch: Branch,
    info: TrackInfo,
    video: bool,
    /// The layer last asked for.
    rid: Option<String>,
    /// Frames its decoder dropped (video).
    undecodable: u64,
}

/// The branches of a running pipeline and their layout. Dropping it leaves the branches in the pipeline (which
/// is stopped as a whole by its guard).
pub struct Composite {
    pipeline: gst::Pipeline,
    layout: Layout,
    video: VideoOut,
    sources: HashMap<String, Source>,
    /// Video mids in the order they arrived (their order in the grid).
    order: Vec<String>,
    picker: SpeakerPicker,
    speaker: Option<String>,
    /// Layer switches decided by the layout, for the session to ask the SFU for: (mid, rid).
    layer_changes: Vec<(String, String)>,
}

impl Composite {
    /// No source yet in `pipeline`.
    pub fn new(pipeline: gst::Pipeline, layout: Layout, video: VideoOut) -> Self {
        Self {
            pipeline,
            layout,
            video,
            sources: HashMap::new(),
            order: Vec::new(),
            picker: SpeakerPicker::default(),
            speaker: None,
            layer_changes: Vec::new(),
        }
    }

    /// Hands a frame of track `mid` (`info`), to be presented at running time `pts_ns`, to its branch, creating
    /// the branch first if this is the track's first usable frame.
    pub fn push(
        &mut self,
        mid: &str,
        info: &TrackInfo,
        frame: (Codec, bool, &[u8]),
        pts_ns: u64,
    ) -> Result<Pushed, MediaError> {
        let (codec, keyframe, data) = frame;
        if let Some(source) = self.sources.get_mut(mid) {
            return Ok(match source.branch.push(data, pts_ns) {
                0 => Pushed::Ok,
                n => {
                    source.undecodable += n;
                    Pushed::Undecoded(n)
                }
            });
        }
        let video = codec != Codec::Opus;
        if video && self.order.len() >= MAX_TILES {
            return Ok(Pushed::NoRoom);
        }
        if video && !keyframe {
            return Ok(Pushed::NeedsKeyframe);
        }
        if video {
            self.order.push(mid.to_string());
        }
        let cell = self.cells().last().copied().unwrap_or(super::layout::Cell {
            x: 0,
            y: 0,
            width: self.video.width,
            height: self.video.height,
        });
        let branch = match Branch::add(&self.pipeline, codec, cell) {
            Ok(branch) => branch,
            Err(e) => {
                self.order.retain(|m| m != mid);
                return Err(e);
            }
        };
        tracing::debug!(mid, ?codec, "egress: source added");
        branch.push(data, pts_ns);
        self.sources.insert(
            mid.to_string(),
            Source {
                branch,
                info: info.clone(),
                video,
                rid: None,
                undecodable: 0,
            },
        );
        if video {
            self.relayout();
        }
        Ok(Pushed::Ok)
    }

    /// Switches to `layout` (from the API); the next output frame has it.
    pub fn set_layout(&mut self, layout: Layout) {
        if layout != self.layout {
            self.layout = layout;
            self.relayout();
        }
    }

    /// Takes track `mid` out (it left the room or was resubscribed).
    pub fn remove(&mut self, mid: &str) {
        if let Some(source) = self.sources.remove(mid) {
            source.branch.remove(&self.pipeline);
            tracing::debug!(mid, "egress: source removed");
        }
        let before = self.order.len();
        self.order.retain(|m| m != mid);
        if self.order.len() != before {
            self.relayout();
        }
    }

    /// Takes every source out.
    pub fn clear(&mut self) {
        let mids: Vec<String> = self.sources.keys().cloned().collect();
        for mid in mids {
            self.remove(&mid);
        }
    }

    /// Samples the audio levels (every [`super::speaker::TICK`]); with the speaker layout, enlarges a new speaker.
    pub fn sample_levels(&mut self) {
        if self.layout != Layout::Speaker {
            return;
        }
        let levels: Vec<(String, f64)> = self
            .sources
            .values()
            .filter_map(|s| s.branch.level().map(|l| (s.info.key.0.clone(), l.get())))
            .collect();
        let speaker = self.picker.update(&levels).map(str::to_string);
        if speaker != self.speaker {
            tracing::debug!(speaker = ?speaker, "egress: speaker changed");
            self.speaker = speaker;
            self.relayout();
        }
    }

    /// The cells of the current videos, in `order`.
    fn cells(&self) -> Vec<super::layout::Cell> {
        let speaker = self
            .speaker
            .as_ref()
            .and_then(|who| {
                self.order
                    .iter()
                    .position(|mid| self.sources.get(mid).is_some_and(|s| &s.info.key.0 == who))
            })
            .unwrap_or(0);
        cells(
            self.layout,
            self.order.len(),
            speaker,
            self.video.width,
            self.video.height,
        )
    }

    /// Places every video in its cell, and picks the simulcast layer that suits the cell's size.
    fn relayout(&mut self) {
        let height = self.video.height;
        for (mid, cell) in self.order.iter().zip(self.cells()) {
            let Some(source) = self.sources.get_mut(mid) else {
                continue;
            };
            source.branch.place(cell);
            let rids = &source.info.rids;
            if rids.is_empty() {
                continue;
            }
            let wanted = &rids[layer_for(cell.height, height, rids.len())];
            if source.rid.as_ref() != Some(wanted) {
                source.rid = Some(wanted.clone());
                self.layer_changes.push((mid.clone(), wanted.clone()));
            }
        }
    }

    /// The layer switches decided since the last call: (mid, rid).
    pub fn take_layer_changes(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.layer_changes)
    }

    /// The sources as the API shows them.
    pub fn views(&self) -> Vec<SourceView> {
        let mut views: Vec<SourceView> = self
            .sources
            .values()
            .map(|s| {
                let size = s.video.then(|| s.branch.decoded_size()).flatten();
                SourceView {
                    session_id: s.info.key.0.clone(),
                    track_name: s.info.key.1.clone(),
                    kind: if s.video { "video" } else { "audio" },
                    rid: s.rid.clone(),
                    width: size.map(|(w, _)| w),
                    height: size.map(|(_, h)| h),
                    undecodable_frames: s.undecodable,
                }
            })
            .collect();
        views.sort_by(|a, b| (&a.session_id, &a.track_name).cmp(&(&b.session_id, &b.track_name)));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Fragments;

    fn info(n: usize) -> TrackInfo {
        TrackInfo {
            key: (format!("session{n}"), "cam".into()),
            rids: Vec::new(),
        }
    }

    #[test]
    fn videos_beyond_the_last_cell_wait_for_one() {
        let fragments = Fragments::load(None).expect("built-in fragments");
        let video = VideoOut::default();
        let description = super::super::pipeline::describe(&fragments, video, std::time::Duration::from_millis(150))
            .expect("pipeline");
        let guard = crate::media::PipelineGuard::parse("egress-test", &description).expect("parse");
        let mut composite = Composite::new(guard.pipeline().clone(), Layout::Grid, video);
        // (The pipeline is not started: branches are added, nothing flows.)
        let key = (Codec::Vp8, true, &[0u8; 8][..]);
        for n in 0..MAX_TILES {
            assert_eq!(composite.push(&format!("m{n}"), &info(n), key, 0).unwrap(), Pushed::Ok);
        }
        assert_eq!(composite.push("extra", &info(99), key, 0).unwrap(), Pushed::NoRoom);
        // Audio is always taken.
        let audio = (Codec::Opus, true, &[0u8; 8][..]);
        assert_eq!(composite.push("mic", &info(98), audio, 0).unwrap(), Pushed::Ok);
        // A video leaves: the waiting one gets its cell at its next keyframe.
        composite.remove("m3");
        let delta = (Codec::Vp8, false, &[0u8; 8][..]);
        assert_eq!(
            composite.push("extra", &info(99), delta, 0).unwrap(),
            Pushed::NeedsKeyframe
        );
        assert_eq!(composite.push("extra", &info(99), key, 0).unwrap(), Pushed::Ok);
        assert_eq!(
            composite.views().iter().filter(|v| v.kind == "video").count(),
            MAX_TILES
        );
    }
}
