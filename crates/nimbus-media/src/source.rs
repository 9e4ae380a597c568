//! The live test source: an `onMetaData` tag, the AVC sequence header, then
//! H.264 test-pattern pictures and tone packets interleaved in timestamp order.
//!
//! Timestamps come from a virtual clock (frame `n` at `n·1000/fps` ms, audio
//! packet `k` at its first sample's time), so the output is deterministic and
//! as fast as the encoder; wrap the source in [`Paced`](super::Paced) to get it
//! in real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::audio::{AudioCodec, AudioEncoder, ToneConfig, ToneGenerator};
use super::flv::{avc_nalu_body, avc_sequence_header_body, metadata_tag, StreamInfo};
use super::h264::pattern::{Overlay, TestPattern};
use super::h264::{EncoderConfig, Frame, FrameStats, H264Encoder};
use super::{MediaError, MediaKind, MediaSource, MediaTag};

/// What the video clock shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockDisplay {
    /// Stream time since the first frame (deterministic).
    #[default]
    StreamTime,
    /// UTC time of day: the time the source started plus stream time. Useful
    /// to read glass-to-glass latency off two screens.
    UtcTimeOfDay,
}

/// Settings of a [`TestSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestSourceConfig {
    /// Video (size, frame rate, IDR interval); `None` for audio only.
    pub video: Option<EncoderConfig>,
    /// Audio tone; `None` for video only. Its sample rate is replaced by the
    /// codec's fixed rate, if it has one (Speex: 16000 Hz).
    pub audio: Option<ToneConfig>,
    /// Audio codec.
    pub audio_codec: AudioCodec,
    /// Audio packet duration in ms (for codecs without a fixed frame size).
    /// Default 20.
    pub audio_packet_ms: u32,
    /// What the clock shows.
    pub clock: ClockDisplay,
    /// Stop after this much stream time; `None` runs forever.
    pub duration: Option<Duration>,
    /// Start with an `onMetaData` tag. Default true.
    pub metadata: bool,
}

impl Default for TestSourceConfig {
    fn default() -> Self {
        TestSourceConfig {
            video: Some(EncoderConfig::default()),
            audio: Some(ToneConfig::default()),
            audio_codec: AudioCodec::PcmLe,
            audio_packet_ms: 20,
            clock: ClockDisplay::StreamTime,
            duration: None,
            metadata: true,
        }
    }
}

#[derive(Debug)]
struct VideoState {
    encoder: H264Encoder,
    pattern: TestPattern,
    frame: Frame,
    next_frame: u64,
    fps: u64,
    last_stats: FrameStats,
}

#[derive(Debug)]
struct AudioState {
    tone: ToneGenerator,
    encoder: Box<dyn AudioEncoder>,
    next_packet: u64,
    rate: u64,
    packet_ms: u64,
    pcm: Vec<i16>,
}

impl AudioState {
    /// First sample of packet `k`.
    fn packet_start(&self, k: u64) -> u64 {
        match self.encoder.frame_samples() {
            Some(n) => k.saturating_mul(n as u64),
            None => k.saturating_mul(self.rate * self.packet_ms) / 1000,
        }
    }
}

/// The audio/video test source (see the module documentation).
#[derive(Debug)]
pub struct TestSource {
    video: Option<VideoState>,
    audio: Option<AudioState>,
    pending: Vec<MediaTag>,
    clock_base_ms: Option<u64>,
    clock: ClockDisplay,
    end_ms: Option<u64>,
    beep: Option<ToneConfig>,
}

impl TestSource {
    /// A source for `cfg`; fails on invalid settings.
    pub fn new(cfg: TestSourceConfig) -> Result<Self, MediaError> {
        if cfg.video.is_none() && cfg.audio.is_none() {
            return Err(MediaError::Config(
                "a test source needs audio or video".into(),
            ));
        }
        if !(1..=1000).contains(&cfg.audio_packet_ms) {
            return Err(MediaError::Config(
                "audio_packet_ms must be 1..=1000".into(),
            ));
        }
        let video = match cfg.video {
            Some(vc) => {
                let encoder = H264Encoder::new(vc)?;
                Some(VideoState {
                    pattern: TestPattern::new(vc.width, vc.height)?,
                    frame: Frame::new(vc.width, vc.height)?,
                    encoder,
                    next_frame: 0,
                    fps: u64::from(vc.fps),
                    last_stats: FrameStats::default(),
                })
            }
            None => None,
        };
        // Codecs with a fixed rate (Speex: 16 kHz) set the tone's rate.
        let tone_cfg = cfg.audio.map(|tc| ToneConfig {
            sample_rate: cfg
                .audio_codec
                .fixed_sample_rate()
                .unwrap_or(tc.sample_rate),
            ..tc
        });
        let audio = match tone_cfg {
            Some(tc) => {
                let encoder = cfg.audio_codec.encoder(tc.sample_rate)?;
                Some(AudioState {
                    tone: ToneGenerator::new(tc)?,
                    rate: u64::from(encoder.sample_rate()),
                    encoder,
                    next_packet: 0,
                    packet_ms: u64::from(cfg.audio_packet_ms),
                    pcm: Vec::new(),
                })
            }
            None => None,
        };
        let mut pending = Vec::new();
        if cfg.metadata {
            let info = StreamInfo {
                video: cfg.video.map(|v| (v.width, v.height, v.fps)),
                audio: tone_cfg.map(|a| (cfg.audio_codec.sound_format().as_u4(), a.sample_rate)),
            };
            pending.push(metadata_tag(&info)?);
        }
        if let Some(v) = &video {
            let body = avc_sequence_header_body(&v.encoder.decoder_configuration_bytes());
            pending.push(MediaTag::new(MediaKind::Video, 0, body));
        }
        pending.reverse(); // popped from the back: metadata, then the sequence header
        Ok(TestSource {
            video,
            audio,
            pending,
            clock_base_ms: None,
            clock: cfg.clock,
            end_ms: cfg
                .duration
                .map(|d| d.as_millis().min(u128::from(u32::MAX)) as u64),
            beep: tone_cfg,
        })
    }

    /// The video encoder, if there is video (for its configuration record).
    pub fn video_encoder(&self) -> Option<&H264Encoder> {
        self.video.as_ref().map(|v| &v.encoder)
    }

    /// Statistics of the last encoded picture.
    pub fn last_video_stats(&self) -> Option<FrameStats> {
        self.video.as_ref().map(|v| v.last_stats)
    }

    /// Timestamp (ms) of the next video frame, if any.
    fn next_video_ts(&self) -> Option<u64> {
        self.video
            .as_ref()
            .map(|v| v.next_frame.saturating_mul(1000) / v.fps)
    }

    fn next_audio_ts(&self) -> Option<u64> {
        self.audio
            .as_ref()
            .map(|a| (a.packet_start(a.next_packet).saturating_mul(1000) + a.rate / 2) / a.rate)
    }

    fn video_tag(&mut self, ts: u64) -> Result<MediaTag, MediaError> {
        let base = *self.clock_base_ms.get_or_insert_with(|| match self.clock {
            ClockDisplay::StreamTime => 0,
            ClockDisplay::UtcTimeOfDay => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64 % 86_400_000),
        });
        let beep = self.beep.is_some_and(|b| b.beeping_at(ts));
        let Some(v) = self.video.as_mut() else {
            return Err(MediaError::Config("no video".into()));
        };
        let overlay = Overlay {
            clock_ms: base + ts,
            frame: v.next_frame,
            beep,
        };
        v.pattern.render(&mut v.frame, &overlay);
        let enc = v.encoder.encode(&v.frame)?;
        v.last_stats = enc.stats;
        v.next_frame += 1;
        let body = avc_nalu_body(enc.keyframe, &enc.to_avcc());
        Ok(MediaTag::new(MediaKind::Video, ts as u32, body))
    }

    fn audio_tag(&mut self, ts: u64) -> Result<MediaTag, MediaError> {
        let Some(a) = self.audio.as_mut() else {
            return Err(MediaError::Config("no audio".into()));
        };
        let start = a.packet_start(a.next_packet);
        let end = a.packet_start(a.next_packet + 1);
        let n = usize::try_from(end.saturating_sub(start))
            .unwrap_or(0)
            .min(1 << 16);
        a.pcm.resize(n, 0);
        a.tone.fill(&mut a.pcm);
        let mut body = Vec::with_capacity(1 + 2 * n);
        a.encoder.encode(&a.pcm, &mut body)?;
        a.next_packet += 1;
        Ok(MediaTag::new(
            MediaKind::Audio,
            ts as u32,
            Bytes::from(body),
        ))
    }
}

impl MediaSource for TestSource {
    fn next_tag(&mut self) -> Result<Option<MediaTag>, MediaError> {
        if let Some(t) = self.pending.pop() {
            return Ok(Some(t));
        }
        let (vt, at) = (self.next_video_ts(), self.next_audio_ts());
        let video_first = match (vt, at) {
            (Some(v), Some(a)) => v <= a,
            (Some(_), None) => true,
            _ => false,
        };
        let ts = if video_first { vt } else { at }.unwrap_or(0);
        if self.end_ms.is_some_and(|end| ts >= end) || ts > u64::from(u32::MAX) {
            return Ok(None);
        }
        let tag = if video_first {
            self.video_tag(ts)?
        } else {
            self.audio_tag(ts)?
        };
        Ok(Some(tag))
    }

    /// The next video frame is an IDR picture (the encoder's
    /// [`force_keyframe`](H264Encoder::force_keyframe)).
    fn request_keyframe(&mut self) {
        if let Some(v) = self.video.as_mut() {
            v.encoder.force_keyframe();
        }
    }
}

impl Iterator for TestSource {
    type Item = Result<MediaTag, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_tag().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Paced;
    use std::time::Instant;

    #[test]
    fn audio_only_packets_are_20ms() {
        let mut s = TestSource::new(TestSourceConfig {
            video: None,
            metadata: false,
            duration: Some(Duration::from_secs(1)),
            ..TestSourceConfig::default()
        })
        .unwrap();
        let tags: Vec<MediaTag> = s.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(tags.len(), 50);
        let samples: usize = tags.iter().map(|t| (t.data.len() - 1) / 2).sum();
        assert_eq!(samples, 11_025);
        for (k, t) in tags.iter().enumerate() {
            assert_eq!(t.kind, MediaKind::Audio);
            assert_eq!(t.timestamp, k as u32 * 20);
            assert_eq!(t.data[0], 0x36);
            let n = (t.data.len() - 1) / 2;
            assert!(n == 220 || n == 221, "{n}");
        }
    }

    #[test]
    fn video_only_with_metadata_and_utc_clock() {
        let s = TestSource::new(TestSourceConfig {
            audio: None,
            clock: ClockDisplay::UtcTimeOfDay,
            duration: Some(Duration::from_millis(1000)),
            ..TestSourceConfig::default()
        })
        .unwrap();
        let tags: Vec<MediaTag> = s.collect::<Result<_, _>>().unwrap();
        assert_eq!(tags[0].kind, MediaKind::Data);
        assert!(tags[1].is_sequence_header());
        assert_eq!(tags.len(), 2 + 15);
        assert!(tags[2].is_keyframe());
        assert!(tags[3..]
            .iter()
            .all(|t| !t.is_keyframe() && t.data[0] == 0x27 && t.data[1] == 1));
    }

    #[test]
    fn paced_source_takes_real_time() {
        let s = TestSource::new(TestSourceConfig {
            duration: Some(Duration::from_millis(300)),
            ..TestSourceConfig::default()
        })
        .unwrap();
        let start = Instant::now();
        let mut p = Paced::new(s);
        let mut n = 0;
        while p.next_tag().unwrap().is_some() {
            n += 1;
        }
        assert!(n > 10);
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(260) && e < Duration::from_secs(3),
            "{e:?}"
        );
    }

    #[test]
    fn a_keyframe_request_makes_the_next_picture_an_idr() {
        let mut s = TestSource::new(TestSourceConfig {
            audio: None,
            metadata: false,
            ..TestSourceConfig::default()
        })
        .unwrap();
        fn video(s: &mut TestSource) -> MediaTag {
            loop {
                let t = s.next_tag().unwrap().unwrap();
                if t.kind == MediaKind::Video && !t.is_sequence_header() {
                    return t;
                }
            }
        }
        assert!(video(&mut s).is_keyframe(), "the first picture");
        assert!(!video(&mut s).is_keyframe());
        assert!(!video(&mut s).is_keyframe());
        s.request_keyframe();
        assert!(video(&mut s).is_keyframe(), "the picture after the request");
        assert!(!video(&mut s).is_keyframe(), "then P pictures again");
    }

    #[test]
    fn invalid_configs() {
        let none = TestSourceConfig {
            video: None,
            audio: None,
            ..TestSourceConfig::default()
        };
        assert!(TestSource::new(none).is_err());
        let bad_rate = TestSourceConfig {
            audio: Some(ToneConfig {
                sample_rate: 8000,
                ..ToneConfig::default()
            }),
            ..TestSourceConfig::default()
        };
        assert!(TestSource::new(bad_rate).is_err());
        let bad_ptime = TestSourceConfig {
            audio_packet_ms: 0,
            ..TestSourceConfig::default()
        };
        assert!(TestSource::new(bad_ptime).is_err());
    }
}
