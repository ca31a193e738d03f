//! The GStreamer chains the gateway runs, as launch-syntax fragments (`pipelines/*.gst`).
//!
//! The files in `pipelines/` are compiled in as defaults. `pipelines.dir` names a directory whose
//! `<name>.gst` files replace the default of the same name, so an operator can swap `x264enc` for a hardware
//! encoder without rebuilding. Every fragment is parsed at start-up and by `check-config`, and must contain
//! the element names the gateway looks up.

use crate::config::ConfigError;
use gstreamer as gst;
use gstreamer::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Builtin {
    name: &'static str,
    text: &'static str,
    required: &'static [&'static str],
}

macro_rules! builtin {
    ($name:literal, $required:expr) => {
        Builtin {
            name: $name,
            text: include_str!(concat!("../../pipelines/", $name, ".gst")),
            required: $required,
        }
    };
}

const BUILTINS: &[Builtin] = &[
    builtin!("video-encode-h264", &["encoder"]),
    builtin!("video-encode-vp8", &["encoder"]),
    builtin!("audio-encode-opus", &["encoder"]),
    builtin!("audio-encode-aac", &["encoder"]),
    builtin!("video-decode-h264", &["decoder"]),
    builtin!("video-decode-vp8", &["decoder"]),
    builtin!("audio-decode-opus", &["decoder"]),
];

/// Where a fragment came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentSource {
    /// Compiled in.
    Builtin,
    /// An override file.
    File(PathBuf),
}

/// One validated fragment.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Launch description with comments removed.
    pub description: String,
    /// Where it came from.
    pub source: FragmentSource,
}

/// The validated set of fragments in effect.
#[derive(Debug, Clone)]
pub struct Fragments {
    by_name: BTreeMap<&'static str, Fragment>,
}

/// A fragment that could not be turned into a bin.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    /// The name is not one of ours.
    #[error("unknown pipeline fragment `{0}`")]
    Unknown(String),
    /// GStreamer refused the description.
    #[error("pipeline fragment `{name}`: {message}")]
    Parse {
        /// Fragment name.
        name: String,
        /// GStreamer's message.
        message: String,
    },
}

/// A fragment's description with every `name=x` made unique by a suffix, so several copies of one fragment
/// (one per simulcast layer, or an audio and a video encoder) can share a pipeline.
pub fn suffixed(description: &str, suffix: &str) -> String {
    description
        .split(' ')
        .map(|token| match token.strip_prefix("name=") {
            Some(name) => format!("name={name}_{suffix}"),
            None => token.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse(name: &str, description: &str) -> Result<gst::Bin, FragmentError> {
    gst::parse::bin_from_description(description, true).map_err(|e| FragmentError::Parse {
        name: name.to_string(),
        message: e.to_string(),
    })
}

impl Fragments {
    /// Loads the built-in fragments, applies the overrides in `dir`, and parses every one.
    pub fn load(dir: Option<&Path>) -> Result<Self, ConfigError> {
        crate::media::init().map_err(|e| ConfigError::invalid("pipelines", e.to_string()))?;
        let mut by_name: BTreeMap<&'static str, Fragment> = BUILTINS
            .iter()
            .map(|b| {
                let fragment = Fragment {
                    description: strip_comments(b.text),
                    source: FragmentSource::Builtin,
                };
                (b.name, fragment)
            })
            .collect();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| ConfigError::invalid("pipelines.dir", format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("gst") {
                    continue;
                }
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let Some(builtin) = BUILTINS.iter().find(|b| b.name == stem) else {
                    let known: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
                    return Err(ConfigError::invalid(
                        "pipelines.dir",
                        format!("unknown pipeline file {} (known: {})", path.display(), known.join(", ")),
                    ));
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::invalid("pipelines.dir", format!("cannot read {}: {e}", path.display()))
                })?;
                by_name.insert(
                    builtin.name,
                    Fragment {
                        description: strip_comments(&text),
                        source: FragmentSource::File(path),
                    },
                );
            }
        }
        for builtin in BUILTINS {
            let fragment = &by_name[builtin.name];
            let key = format!("pipelines.{}", builtin.name);
            let bin = parse(builtin.name, &fragment.description)
                .map_err(|e| ConfigError::invalid(&key, format!("{e} ({:?})", fragment.source)))?;
            for required in builtin.required {
                if bin.by_name(required).is_none() {
                    return Err(ConfigError::invalid(
                        &key,
                        format!("needs an element named `{required}` ({:?})", fragment.source),
                    ));
                }
            }
        }
        Ok(Self { by_name })
    }

    /// The fragment called `name`.
    pub fn get(&self, name: &str) -> Option<&Fragment> {
        self.by_name.get(name)
    }

    /// A new bin for fragment `name`, its unlinked pads ghosted.
    pub fn bin(&self, name: &str) -> Result<gst::Bin, FragmentError> {
        let fragment = self.get(name).ok_or_else(|| FragmentError::Unknown(name.to_string()))?;
        parse(name, &fragment.description)
    }

    /// Names and sources of every fragment, for `check-config`.
    pub fn summary(&self) -> Vec<(&'static str, &Fragment)> {
        self.by_name.iter().map(|(name, f)| (*name, f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_build_bins() {
        let fragments = Fragments::load(None).unwrap();
        assert_eq!(fragments.summary().len(), BUILTINS.len());
        let bin = fragments.bin("video-encode-h264").unwrap();
        assert!(bin.by_name("encoder").is_some());
        assert!(bin.static_pad("sink").is_some() && bin.static_pad("src").is_some());
        assert!(matches!(fragments.bin("nope"), Err(FragmentError::Unknown(_))));
    }

    #[test]
    fn overrides_replace_defaults_and_bad_ones_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("video-encode-h264.gst");
        std::fs::write(&path, "# comment\nvideoconvert ! openh264enc name=encoder\n").unwrap();
        let fragments = Fragments::load(Some(dir.path())).unwrap();
        let fragment = fragments.get("video-encode-h264").unwrap();
        assert_eq!(fragment.source, FragmentSource::File(path.clone()));
        assert_eq!(fragment.description, "videoconvert ! openh264enc name=encoder");

        std::fs::write(&path, "videoconvert ! openh264enc").unwrap();
        let err = Fragments::load(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("pipelines.video-encode-h264") && err.contains("encoder"),
            "{err}"
        );

        std::fs::write(&path, "videoconvert ! ! nosuchelement name=encoder").unwrap();
        let err = Fragments::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("pipelines.video-encode-h264"), "{err}");

        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.path().join("video-encode-h265.gst"), "x265enc name=encoder").unwrap();
        let err = Fragments::load(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("pipelines.dir") && err.contains("unknown pipeline file"),
            "{err}"
        );
    }
}
