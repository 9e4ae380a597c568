//! # nimbus-media — media for the phone and the group member
//!
//! Owns live test sources, an H.264 encoder for them, audio, and FLV
//! sources and sinks, paced on the wall clock. Pure Rust, no system library
//! (Speex, optional, links libspeex). Must not touch networking: it turns
//! media into timed FLV tag bodies and back.
//!
//! Everything moves as [`MediaTag`]s: an FLV tag body (an RTMP/RTMFP audio,
//! video or data message payload) with its millisecond timestamp — exactly what
//! a NetStream sends over an RTMFP flow and what an FLV file stores.
//!
//! | module | contents |
//! |---|---|
//! | [`h264`] | [`h264::H264Encoder`] (exact Baseline encoder: IDR + P, `I_PCM` / Intra / `P_Skip`), [`h264::Frame`], the test picture [`h264::pattern::TestPattern`], bit writer |
//! | [`audio`] | [`audio::ToneGenerator`] (440 Hz + 880 Hz beep each second), [`audio::AudioEncoder`] and FLV linear PCM |
//! | [`flv`] | [`flv::FlvSink`] (file / stdout), [`flv::FlvFileSource`] (file / stdin), tag body builders, `onMetaData` |
//! | [`source`] | [`source::TestSource`]: timed sequence header, video and audio tags on a virtual clock |
//!
//! Sources never sleep; wrap one in [`Paced`] to get its tags on the wall
//! clock at their timestamps.

pub mod audio;
pub mod flv;
pub mod g711;
pub mod h264;
pub mod rtc;
pub mod source;
#[cfg(feature = "speex")]
pub mod speex;

use std::time::{Duration, Instant};

use bytes::Bytes;

pub use self::flv::{FlvFileSource, FlvSink};
pub use self::source::{TestSource, TestSourceConfig};
#[cfg(feature = "speex")]
pub use self::speex::SpeexEncoder;

/// Errors of the media module.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A configuration value is out of range.
    #[error("invalid media configuration: {0}")]
    Config(String),
    /// FLV or codec data is malformed, or an FLV write failed.
    #[error("FLV: {0}")]
    Flv(#[from] flash_amf::Error),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The kind of a [`MediaTag`] (FLV tag type 8, 9 or 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio (FLV tag type 8, RTMP message type 8).
    Audio,
    /// Video (FLV tag type 9, RTMP message type 9).
    Video,
    /// Script data / AMF0 data message (FLV tag type 18), e.g. `onMetaData`.
    Data,
}

impl MediaKind {
    /// The RTMP message type (8, 9, 18).
    pub fn message_type(self) -> u8 {
        match self {
            MediaKind::Audio => 8,
            MediaKind::Video => 9,
            MediaKind::Data => 18,
        }
    }

    /// The kind of an RTMP message type: 8 audio, 9 video, anything else data.
    pub fn from_message_type(t: u8) -> Self {
        match t {
            8 => MediaKind::Audio,
            9 => MediaKind::Video,
            _ => MediaKind::Data,
        }
    }
}

/// One timed media message: an FLV tag body and its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTag {
    /// Audio, video or data.
    pub kind: MediaKind,
    /// Decoding timestamp in milliseconds.
    pub timestamp: u32,
    /// The FLV tag body: AUDIODATA / VIDEODATA (with their 1- or 5-byte
    /// headers) or AMF0 script data.
    pub data: Bytes,
}

impl MediaTag {
    /// A tag.
    pub fn new(kind: MediaKind, timestamp: u32, data: impl Into<Bytes>) -> Self {
        MediaTag {
            kind,
            timestamp,
            data: data.into(),
        }
    }

    /// True for a video key frame (FrameType 1), including AVC sequence headers.
    pub fn is_keyframe(&self) -> bool {
        self.kind == MediaKind::Video && self.data.first().is_some_and(|b| b >> 4 == 1)
    }

    /// True for a codec configuration tag: an AVC sequence header
    /// (AVCPacketType 0) or an AAC sequence header.
    pub fn is_sequence_header(&self) -> bool {
        match self.kind {
            MediaKind::Video => {
                self.data.first().is_some_and(|b| b & 0x0f == 7) && self.data.get(1) == Some(&0)
            }
            MediaKind::Audio => {
                self.data.first().is_some_and(|b| b >> 4 == 10) && self.data.get(1) == Some(&0)
            }
            MediaKind::Data => false,
        }
    }

    /// The FLV tag (stream id 0).
    pub fn to_flv_tag(&self) -> flash_amf::flv::FlvTag {
        use flash_amf::flv::{FlvTag, TagType};
        let t = match self.kind {
            MediaKind::Audio => TagType::Audio,
            MediaKind::Video => TagType::Video,
            MediaKind::Data => TagType::ScriptData,
        };
        FlvTag::new(t, self.timestamp, self.data.clone())
    }

    /// The tag for an FLV tag of type 8, 9 or 18; `None` for other types.
    pub fn from_flv_tag(tag: flash_amf::flv::FlvTag) -> Option<Self> {
        use flash_amf::flv::TagType;
        let kind = match tag.tag_type {
            TagType::Audio => MediaKind::Audio,
            TagType::Video => MediaKind::Video,
            TagType::ScriptData => MediaKind::Data,
            TagType::Other(_) => return None,
        };
        Some(MediaTag {
            kind,
            timestamp: tag.timestamp,
            data: tag.data,
        })
    }
}

/// Something that yields media tags in timestamp order.
pub trait MediaSource {
    /// The next tag, `Ok(None)` at the end. Sources do not sleep: see [`Paced`].
    fn next_tag(&mut self) -> Result<Option<MediaTag>, MediaError>;

    /// A receiver lost its picture: make the next video frame a key frame
    /// if the source can (a live encoder can; a file cannot, and ignores
    /// it, which is the default).
    fn request_keyframe(&mut self) {}
}

impl<S: MediaSource + ?Sized> MediaSource for Box<S> {
    fn next_tag(&mut self) -> Result<Option<MediaTag>, MediaError> {
        (**self).next_tag()
    }

    fn request_keyframe(&mut self) {
        (**self).request_keyframe();
    }
}

/// Largest single wait of [`Paced`]: a timestamp jump beyond it is treated as
/// a discontinuity (the clock is re-based) instead of stalling the stream.
pub const MAX_PACING_GAP: Duration = Duration::from_secs(5);

/// Maps media timestamps onto the wall clock: the first tag is due at once,
/// later ones `timestamp − first` after it.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    base: Option<(Instant, u32)>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// A pacer that starts its clock at the first tag.
    pub fn new() -> Self {
        Pacer { base: None }
    }

    /// When a tag with `timestamp` is due, given the current time `now`.
    /// Timestamps going backwards are due at once; gaps beyond
    /// [`MAX_PACING_GAP`] re-base the clock.
    pub fn due(&mut self, timestamp: u32, now: Instant) -> Instant {
        let (start, first) = *self.base.get_or_insert((now, timestamp));
        let offset = Duration::from_millis(u64::from(timestamp.wrapping_sub(first)));
        let due = start + offset;
        if timestamp.wrapping_sub(first) > u32::MAX / 2 {
            return now;
        }
        if due > now + MAX_PACING_GAP {
            self.base = Some((now, timestamp));
            return now;
        }
        due
    }
}

/// A source whose tags come out on the wall clock: `next_tag` sleeps until
/// each tag is due.
#[derive(Debug)]
pub struct Paced<S> {
    inner: S,
    pacer: Pacer,
}

impl<S: MediaSource> Paced<S> {
    /// Paces `inner`.
    pub fn new(inner: S) -> Self {
        Paced {
            inner,
            pacer: Pacer::new(),
        }
    }

    /// The inner source.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: MediaSource> MediaSource for Paced<S> {
    fn next_tag(&mut self) -> Result<Option<MediaTag>, MediaError> {
        let Some(tag) = self.inner.next_tag()? else {
            return Ok(None);
        };
        let now = Instant::now();
        let due = self.pacer.due(tag.timestamp, now);
        if due > now {
            std::thread::sleep(due - now);
        }
        Ok(Some(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_follows_timestamps_and_rebases_on_jumps() {
        let mut p = Pacer::new();
        let t0 = Instant::now();
        assert_eq!(p.due(1000, t0), t0);
        assert_eq!(p.due(1500, t0), t0 + Duration::from_millis(500));
        assert_eq!(p.due(900, t0), t0); // backwards: at once
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(p.due(1_000_000, t1), t1); // jump: re-based
        assert_eq!(p.due(1_000_040, t1), t1 + Duration::from_millis(40));
    }

    #[test]
    fn tag_flags() {
        let seq = MediaTag::new(MediaKind::Video, 0, vec![0x17, 0, 0, 0, 0, 1]);
        assert!(seq.is_keyframe() && seq.is_sequence_header());
        let p = MediaTag::new(MediaKind::Video, 0, vec![0x27, 1, 0, 0, 0]);
        assert!(!p.is_keyframe() && !p.is_sequence_header());
        let a = MediaTag::new(MediaKind::Audio, 0, vec![0x36, 0]);
        assert!(!a.is_keyframe() && !a.is_sequence_header());
        assert!(!MediaTag::new(MediaKind::Video, 0, Bytes::new()).is_keyframe());
        let back = MediaTag::from_flv_tag(seq.to_flv_tag()).unwrap();
        assert_eq!(back, seq);
    }
}
