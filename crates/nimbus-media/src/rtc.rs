//! Between WebRTC's frames and FLV tags, without transcoding video.
//!
//! A WebRTC stack (str0m, say) hands over depacketized frames: an H.264
//! access unit in Annex B (start codes before every NAL unit) on a 90 kHz
//! RTP clock, or a G.711 frame on an 8 kHz clock. RTMFP/RTMP carry FLV tag
//! bodies: AVC sequence headers and length-prefixed NAL units (AVCC), and
//! audio with a one-byte header. This module turns one into the other:
//!
//! * [`H264ToFlv`]: Annex B access units → AVC sequence header (built from
//!   the SPS/PPS the encoder sends in band) + AVC NALU tags;
//! * [`FlvToH264`]: AVC tags → Annex B access units, with the SPS/PPS of the
//!   last sequence header put before every IDR (a decoder joining late needs
//!   them, and WebRTC carries no out-of-band configuration);
//! * [`FlvToG711`]: FLV audio → 20 ms G.711 frames. G.711 passes through
//!   untouched (re-companded if the page chose the other law); linear PCM
//!   (the test source's) is mixed to mono, resampled to 8 kHz and companded;
//!   other codecs (Speex without the `speex` feature, Nellymoser, MP3, AAC)
//!   are not converted and are reported as such;
//! * [`g711_tag`]: a G.711 frame → an FLV audio tag (SoundFormat 8 or 7);
//! * [`RtpClock`]: an RTP timestamp → milliseconds on a shared media clock.
//!
//! Nothing here allocates per byte or panics on malformed input: bad tags
//! are dropped and counted by the caller.

use bytes::Bytes;
use flash_amf::flv::{AvcDecoderConfigurationRecord, SoundFormat};

use crate::flv::{avc_nalu_body, avc_sequence_header_body};
use crate::g711::{Law, SAMPLE_RATE as G711_RATE};
use crate::{MediaKind, MediaTag};

/// NAL unit types that matter here (ITU-T H.264 Table 7-1).
mod nal {
    pub(super) const IDR: u8 = 5;
    pub(super) const SPS: u8 = 7;
    pub(super) const PPS: u8 = 8;
    pub(super) const AUD: u8 = 9;
    pub(super) const FILLER: u8 = 12;
}

/// Most bytes one access unit may have (a hostile or broken peer cannot
/// make us build larger ones).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;

/// The NAL units of an Annex B byte stream (3- or 4-byte start codes),
/// without their start codes; empty units are skipped.
pub fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    // skip to the first start code
    match find_start(rest) {
        Some((at, len)) => rest = &rest[at + len..],
        None => rest = &[],
    }
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let (unit, next) = match find_start(rest) {
            Some((at, len)) => (&rest[..at], &rest[at + len..]),
            None => (rest, &[][..]),
        };
        rest = next;
        // a 4-byte start code leaves the zero of "00 00 00 01" at the end of
        // the previous unit when found as "00 00 01": trim trailing zeros
        let mut end = unit.len();
        while end > 0 && unit[end - 1] == 0 {
            end -= 1;
        }
        if end > 0 {
            return Some(&unit[..end]);
        }
    })
}

/// Position and length of the first `00 00 01` start code.
fn find_start(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, 3));
        } else {
            i += 1;
        }
    }
    None
}

fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| b & 0x1f)
}

/// What [`H264ToFlv::push`] made of an access unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VideoOut {
    /// Tags to send, in order (a sequence header first when the parameter
    /// sets are new).
    pub tags: Vec<MediaTag>,
    /// The frame could not be used until a key frame comes (no parameter
    /// sets yet): ask the sender for one.
    pub need_keyframe: bool,
    /// The frame is an IDR.
    pub keyframe: bool,
}

/// Annex B access units → FLV AVC tags.
#[derive(Debug, Default)]
pub struct H264ToFlv {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The record of the last sequence header sent.
    sent: Option<Vec<u8>>,
    avcc: Vec<u8>,
}

impl H264ToFlv {
    /// A converter that has sent nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the parameter sets: the next tag sent is a sequence header
    /// again (a new receiver).
    pub fn reset(&mut self) {
        self.sent = None;
    }

    /// One access unit at `timestamp` (ms).
    pub fn push(&mut self, timestamp: u32, access_unit: &[u8]) -> VideoOut {
        let mut out = VideoOut::default();
        if access_unit.len() > MAX_ACCESS_UNIT {
            out.need_keyframe = true;
            return out;
        }
        self.avcc.clear();
        for unit in annexb_nals(access_unit) {
            match nal_type(unit) {
                nal::SPS => self.sps = Some(Bytes::copy_from_slice(unit)),
                nal::PPS => self.pps = Some(Bytes::copy_from_slice(unit)),
                nal::AUD | nal::FILLER => {}
                t => {
                    out.keyframe |= t == nal::IDR;
                    let len = u32::try_from(unit.len()).unwrap_or(u32::MAX);
                    self.avcc.extend_from_slice(&len.to_be_bytes());
                    self.avcc.extend_from_slice(unit);
                }
            }
        }
        if let Some(record) = self.record() {
            if self.sent.as_ref() != Some(&record) {
                out.tags.push(MediaTag::new(
                    MediaKind::Video,
                    timestamp,
                    avc_sequence_header_body(&record),
                ));
                self.sent = Some(record);
            }
        }
        if self.avcc.is_empty() {
            return out;
        }
        if self.sent.is_none() {
            // nothing a receiver could decode this with
            out.need_keyframe = true;
            return out;
        }
        out.tags.push(MediaTag::new(
            MediaKind::Video,
            timestamp,
            avc_nalu_body(out.keyframe, &self.avcc),
        ));
        out
    }

    fn record(&self) -> Option<Vec<u8>> {
        let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
        if sps.len() < 4 {
            return None;
        }
        AvcDecoderConfigurationRecord {
            configuration_version: 1,
            profile_indication: sps[1],
            profile_compatibility: sps[2],
            level_indication: sps[3],
            length_size_minus_one: 3,
            sps: vec![sps.clone()],
            pps: vec![pps.clone()],
            trailing: Bytes::new(),
        }
        .to_bytes()
        .ok()
    }
}

/// An H.264 access unit for a WebRTC sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Frame {
    /// Media time (ms).
    pub timestamp: u32,
    /// Annex B, 4-byte start codes.
    pub data: Vec<u8>,
    /// An IDR (with its SPS/PPS in front).
    pub keyframe: bool,
}

/// Why an FLV tag was not turned into a WebRTC frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unconverted {
    /// A codec WebRTC cannot carry and we do not transcode (video other than
    /// H.264; audio other than G.711 and linear PCM).
    #[error("codec {0} is not converted")]
    Codec(&'static str),
    /// Malformed tag.
    #[error("malformed tag")]
    Malformed,
    /// A frame that needs a key frame first (no configuration yet).
    #[error("waiting for a key frame")]
    WaitingForKeyframe,
}

/// FLV AVC tags → Annex B access units.
#[derive(Debug, Default)]
pub struct FlvToH264 {
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
    nal_len: usize,
    /// A key frame was given out since the configuration arrived.
    started: bool,
}

const START: [u8; 4] = [0, 0, 0, 1];

impl FlvToH264 {
    /// A converter with no configuration yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the next key frame again (the receiver lost its state).
    pub fn restart(&mut self) {
        self.started = false;
    }

    /// One FLV video tag. `Ok(None)`: consumed (a sequence header, an end of
    /// sequence).
    ///
    /// # Errors
    /// [`Unconverted`] when the tag cannot be given to a WebRTC sender.
    pub fn push(&mut self, tag: &MediaTag) -> Result<Option<H264Frame>, Unconverted> {
        let d = &tag.data[..];
        let (&first, rest) = d.split_first().ok_or(Unconverted::Malformed)?;
        match first & 0x0f {
            7 => {}
            2 => return Err(Unconverted::Codec("Sorenson H.263")),
            4 | 5 => return Err(Unconverted::Codec("VP6")),
            3 | 6 => return Err(Unconverted::Codec("Screen video")),
            _ => return Err(Unconverted::Codec("unknown video")),
        }
        if first >> 4 == 5 {
            // video info / command frame
            return Ok(None);
        }
        if rest.len() < 4 {
            return Err(Unconverted::Malformed);
        }
        let body = &rest[4..];
        match rest[0] {
            0 => {
                let r = AvcDecoderConfigurationRecord::parse(body)
                    .map_err(|_| Unconverted::Malformed)?;
                self.nal_len = r.nalu_length_size();
                self.sps = r.sps;
                self.pps = r.pps;
                self.started = false;
                Ok(None)
            }
            1 => self.frame(tag.timestamp, first >> 4 == 1, body),
            _ => Ok(None),
        }
    }

    fn frame(
        &mut self,
        timestamp: u32,
        keyframe: bool,
        body: &[u8],
    ) -> Result<Option<H264Frame>, Unconverted> {
        if self.nal_len == 0 || (!keyframe && !self.started) {
            return Err(Unconverted::WaitingForKeyframe);
        }
        let mut units = Vec::new();
        let mut rest = body;
        let mut has_idr = false;
        let mut has_ps = false;
        while !rest.is_empty() {
            if rest.len() < self.nal_len {
                return Err(Unconverted::Malformed);
            }
            let n = rest[..self.nal_len]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            rest = &rest[self.nal_len..];
            if n == 0 || n > rest.len() {
                return Err(Unconverted::Malformed);
            }
            let unit = &rest[..n];
            rest = &rest[n..];
            let t = nal_type(unit);
            has_idr |= t == nal::IDR;
            has_ps |= t == nal::SPS;
            units.push(unit);
        }
        let keyframe = keyframe || has_idr;
        if keyframe && !has_idr && !self.started {
            return Err(Unconverted::WaitingForKeyframe);
        }
        let mut data = Vec::with_capacity(body.len() + 64);
        if has_idr && !has_ps {
            for ps in self.sps.iter().chain(&self.pps) {
                data.extend_from_slice(&START);
                data.extend_from_slice(ps);
            }
        }
        for unit in units {
            data.extend_from_slice(&START);
            data.extend_from_slice(unit);
        }
        if has_idr {
            self.started = true;
        }
        if data.len() > MAX_ACCESS_UNIT {
            return Err(Unconverted::Malformed);
        }
        Ok(Some(H264Frame {
            timestamp,
            data,
            keyframe: has_idr,
        }))
    }
}

/// A G.711 frame for a WebRTC sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct G711Frame {
    /// Media time (ms) of its first sample.
    pub timestamp: u32,
    /// Companded samples (160 for 20 ms).
    pub data: Vec<u8>,
}

/// Samples in a 20 ms G.711 frame.
pub const G711_FRAME: usize = 160;

/// FLV audio → 20 ms G.711 frames in one law.
#[derive(Debug)]
pub struct FlvToG711 {
    law: Law,
    /// Linear samples at 8 kHz waiting to fill a frame.
    pending: Vec<i16>,
    /// Media time of `pending[0]`.
    pending_ts: u32,
    resample: Resampler,
}

impl FlvToG711 {
    /// A converter into `law`.
    pub fn new(law: Law) -> Self {
        Self {
            law,
            pending: Vec::with_capacity(G711_FRAME * 2),
            pending_ts: 0,
            resample: Resampler::default(),
        }
    }

    /// The law frames come out in.
    pub fn law(&self) -> Law {
        self.law
    }

    /// One FLV audio tag; the frames it completes go to `out`.
    ///
    /// # Errors
    /// [`Unconverted`] for codecs not converted and malformed tags.
    pub fn push(&mut self, tag: &MediaTag, out: &mut Vec<G711Frame>) -> Result<(), Unconverted> {
        let (&h, body) = tag.data.split_first().ok_or(Unconverted::Malformed)?;
        match SoundFormat::from_u4(h >> 4) {
            SoundFormat::G711MuLaw | SoundFormat::G711ALaw => {
                let from = if h >> 4 == 8 { Law::Mu } else { Law::A };
                let data = if from == self.law {
                    body.to_vec()
                } else {
                    body.iter().map(|&b| self.law.from_other(b)).collect()
                };
                if !data.is_empty() {
                    out.push(G711Frame {
                        timestamp: tag.timestamp,
                        data,
                    });
                }
                Ok(())
            }
            SoundFormat::LinearPcmLittleEndian | SoundFormat::LinearPcmPlatformEndian => {
                let rate = [5512u32, 11_025, 22_050, 44_100][usize::from((h >> 2) & 3)];
                let wide = h & 0x02 != 0;
                let stereo = h & 0x01 != 0;
                self.pcm(tag.timestamp, rate, wide, stereo, body, out);
                Ok(())
            }
            SoundFormat::Speex => Err(Unconverted::Codec("Speex")),
            SoundFormat::Aac => Err(Unconverted::Codec("AAC")),
            SoundFormat::Mp3 | SoundFormat::Mp3_8k => Err(Unconverted::Codec("MP3")),
            SoundFormat::Nellymoser
            | SoundFormat::Nellymoser8kMono
            | SoundFormat::Nellymoser16kMono => Err(Unconverted::Codec("Nellymoser")),
            _ => Err(Unconverted::Codec("unknown audio")),
        }
    }

    /// Linear PCM (16-bit little-endian or 8-bit unsigned, mono or stereo)
    /// at `rate` → frames.
    pub fn pcm(
        &mut self,
        timestamp: u32,
        rate: u32,
        wide: bool,
        stereo: bool,
        body: &[u8],
        out: &mut Vec<G711Frame>,
    ) {
        let step = usize::from(wide) + 1;
        let channels = usize::from(stereo) + 1;
        let frame = step * channels;
        let sample = |b: &[u8]| -> i32 {
            if wide {
                i32::from(i16::from_le_bytes([b[0], b[1]]))
            } else {
                (i32::from(b[0]) - 128) << 8
            }
        };
        // a gap or a jump in the source's clock restarts the frame
        let expected = self
            .pending_ts
            .wrapping_add((self.pending.len() as u32) / (G711_RATE / 1000));
        if self.pending.is_empty() || timestamp.abs_diff(expected) > 40 {
            self.pending.clear();
            self.pending_ts = timestamp;
            self.resample.restart(rate);
        }
        self.resample.set_rate(rate);
        for chunk in body.chunks_exact(frame) {
            let mono = if stereo {
                (sample(chunk) + sample(&chunk[step..])) / 2
            } else {
                sample(chunk)
            };
            self.resample.push(mono as i16, &mut self.pending);
        }
        let mut taken = 0;
        while self.pending.len() - taken >= G711_FRAME {
            let data = self.pending[taken..taken + G711_FRAME]
                .iter()
                .map(|&s| self.law.encode(s))
                .collect();
            out.push(G711Frame {
                timestamp: self.pending_ts,
                data,
            });
            taken += G711_FRAME;
            self.pending_ts = self.pending_ts.wrapping_add(20);
        }
        self.pending.drain(..taken);
    }
}

/// Rate conversion to 8 kHz by linear interpolation, after a moving-average
/// low-pass when decimating (enough for speech and test tones).
#[derive(Debug, Default)]
struct Resampler {
    rate: u32,
    /// Position of the next output sample, in input samples (fixed point
    /// 32.32).
    pos: u64,
    /// Input samples consumed.
    index: u64,
    prev: i32,
    /// Moving-average window.
    window: [i32; 8],
    wlen: usize,
    wpos: usize,
    wsum: i32,
}

impl Resampler {
    fn restart(&mut self, rate: u32) {
        *self = Resampler {
            rate,
            ..Resampler::default()
        };
        self.wlen = ((rate / G711_RATE) as usize).clamp(1, self.window.len());
    }

    fn set_rate(&mut self, rate: u32) {
        if rate != self.rate {
            self.restart(rate);
        }
    }

    fn push(&mut self, sample: i16, out: &mut Vec<i16>) {
        // low-pass
        self.wsum += i32::from(sample) - self.window[self.wpos];
        self.window[self.wpos] = i32::from(sample);
        self.wpos = (self.wpos + 1) % self.wlen.max(1);
        let cur = self.wsum / self.wlen.max(1) as i32;
        // outputs that fall between the previous input and this one
        let step = (u64::from(self.rate) << 32) / u64::from(G711_RATE);
        while self.pos >> 32 <= self.index {
            let frac = (self.pos & 0xffff_ffff) as i64;
            let (a, b) = if self.pos >> 32 == self.index {
                (self.prev, cur)
            } else {
                (cur, cur)
            };
            let v = i64::from(a) + (((i64::from(b) - i64::from(a)) * frac) >> 32);
            out.push(v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16);
            self.pos += step.max(1);
        }
        self.prev = cur;
        self.index += 1;
    }
}

/// A G.711 frame as an FLV audio tag body (SoundFormat 8 or 7).
pub fn g711_tag(law: Law, timestamp: u32, samples: &[u8]) -> MediaTag {
    let mut body = Vec::with_capacity(samples.len() + 1);
    body.push(law.flv_header());
    body.extend_from_slice(samples);
    MediaTag::new(MediaKind::Audio, timestamp, body)
}

/// RTP timestamps of one stream → milliseconds on a media clock shared by
/// the streams of a call: the first timestamp maps to `origin` (the ms at
/// which the stream's first frame arrived, on the shared clock).
#[derive(Debug, Clone, Copy)]
pub struct RtpClock {
    rate: u64,
    first: Option<(u64, u64)>,
}

impl RtpClock {
    /// A clock of `rate` Hz (90000 for video, 8000 for G.711).
    pub fn new(rate: u32) -> Self {
        Self {
            rate: u64::from(rate.max(1)),
            first: None,
        }
    }

    /// The media time of `rtp` (an extended, non-wrapping RTP timestamp);
    /// `origin_ms` anchors the first one.
    pub fn to_ms(&mut self, rtp: u64, origin_ms: u64) -> u32 {
        let (r0, o) = *self.first.get_or_insert((rtp, origin_ms));
        let ms = if rtp >= r0 {
            o + (rtp - r0) * 1000 / self.rate
        } else {
            o.saturating_sub((r0 - rtp) * 1000 / self.rate)
        };
        ms as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annexb(units: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, u) in units.iter().enumerate() {
            if i % 2 == 0 {
                v.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                v.extend_from_slice(&[0, 0, 1]);
            }
            v.extend_from_slice(u);
        }
        v
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xda, 0x01, 0x40];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x80];

    #[test]
    fn nal_units_are_split_on_3_and_4_byte_start_codes() {
        let au = annexb(&[SPS, PPS, IDR]);
        let units: Vec<&[u8]> = annexb_nals(&au).collect();
        assert_eq!(units, vec![SPS, PPS, IDR]);
        assert_eq!(annexb_nals(&[]).count(), 0);
        assert_eq!(annexb_nals(&[0, 0, 1]).count(), 0);
        assert_eq!(annexb_nals(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn a_page_stream_becomes_a_sequence_header_and_nalus_and_back() {
        let mut up = H264ToFlv::new();
        // a P frame first cannot be used
        let out = up.push(0, &annexb(&[P]));
        assert!(out.tags.is_empty() && out.need_keyframe);
        let out = up.push(33, &annexb(&[SPS, PPS, IDR]));
        assert_eq!(out.tags.len(), 2);
        assert!(out.tags[0].is_sequence_header());
        assert!(out.tags[1].is_keyframe());
        assert!(out.keyframe && !out.need_keyframe);
        // the same parameter sets again: no new header
        let again = up.push(66, &annexb(&[SPS, PPS, IDR]));
        assert_eq!(again.tags.len(), 1);
        let p = up.push(99, &annexb(&[P]));
        assert_eq!(p.tags.len(), 1);
        assert!(!p.tags[0].is_keyframe());

        let mut down = FlvToH264::new();
        assert_eq!(
            down.push(&p.tags[0]),
            Err(Unconverted::WaitingForKeyframe),
            "nothing before the configuration"
        );
        assert_eq!(down.push(&out.tags[0]), Ok(None));
        assert_eq!(
            down.push(&p.tags[0]),
            Err(Unconverted::WaitingForKeyframe),
            "P before the first IDR"
        );
        let key = down.push(&out.tags[1]).unwrap().unwrap();
        assert!(key.keyframe);
        assert_eq!(key.timestamp, 33);
        // SPS and PPS were put back in front of the IDR
        let units: Vec<&[u8]> = annexb_nals(&key.data).collect();
        assert_eq!(units, vec![SPS, PPS, IDR]);
        let pf = down.push(&p.tags[0]).unwrap().unwrap();
        assert_eq!(annexb_nals(&pf.data).collect::<Vec<_>>(), vec![P]);
    }

    #[test]
    fn other_video_codecs_are_reported() {
        let mut down = FlvToH264::new();
        let h263 = MediaTag::new(MediaKind::Video, 0, vec![0x12, 0, 0]);
        assert_eq!(down.push(&h263), Err(Unconverted::Codec("Sorenson H.263")));
        let short = MediaTag::new(MediaKind::Video, 0, vec![0x17, 1]);
        assert_eq!(down.push(&short), Err(Unconverted::Malformed));
    }

    #[test]
    fn malformed_nalu_lengths_are_refused() {
        let mut up = H264ToFlv::new();
        let out = up.push(0, &annexb(&[SPS, PPS, IDR]));
        let mut down = FlvToH264::new();
        down.push(&out.tags[0]).unwrap();
        let mut bad = out.tags[1].data.to_vec();
        bad[5..9].copy_from_slice(&1000u32.to_be_bytes());
        let bad = MediaTag::new(MediaKind::Video, 0, bad);
        assert_eq!(down.push(&bad), Err(Unconverted::Malformed));
    }

    #[test]
    fn g711_passes_through_and_changes_law() {
        let mut conv = FlvToG711::new(Law::Mu);
        let mut out = Vec::new();
        let tag = g711_tag(Law::Mu, 40, &[0x11; 160]);
        conv.push(&tag, &mut out).unwrap();
        assert_eq!(out[0].data, vec![0x11; 160]);
        assert_eq!(out[0].timestamp, 40);
        let a = g711_tag(Law::A, 60, &[0xd5; 160]);
        conv.push(&a, &mut out).unwrap();
        assert_eq!(out[1].data, vec![Law::Mu.encode(8); 160]);
    }

    #[test]
    fn pcm_at_11khz_becomes_20ms_frames_at_8khz() {
        let mut conv = FlvToG711::new(Law::Mu);
        let mut out = Vec::new();
        // 1 s of a 440 Hz tone at 11025 Hz, in 50 ms tags
        let rate = 11_025.0f64;
        let mut n = 0u64;
        for k in 0..20u32 {
            let mut body = vec![0x36u8]; // PCM LE, 11 kHz, 16-bit, mono
            for _ in 0..551 {
                let s =
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / rate).sin()) as i16;
                body.extend_from_slice(&s.to_le_bytes());
                n += 1;
            }
            let tag = MediaTag::new(MediaKind::Audio, k * 50, body);
            conv.push(&tag, &mut out).unwrap();
        }
        // 20 × 551 input samples ≈ 7,996 output samples ≈ 49 frames
        assert!((48..=50).contains(&out.len()), "{} frames", out.len());
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f.data.len(), G711_FRAME);
            assert_eq!(f.timestamp, i as u32 * 20);
        }
        // the tone survives: RMS near 8000/√2
        let samples: Vec<f64> = out
            .iter()
            .flat_map(|f| f.data.iter().map(|&b| f64::from(Law::Mu.decode(b))))
            .collect();
        let rms = (samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64).sqrt();
        assert!((4500.0..6500.0).contains(&rms), "rms {rms}");
    }

    #[test]
    fn other_audio_codecs_are_reported() {
        let mut conv = FlvToG711::new(Law::A);
        let mut out = Vec::new();
        let aac = MediaTag::new(MediaKind::Audio, 0, vec![0xaf, 1, 2, 3]);
        assert_eq!(conv.push(&aac, &mut out), Err(Unconverted::Codec("AAC")));
        let empty = MediaTag::new(MediaKind::Audio, 0, Vec::new());
        assert_eq!(conv.push(&empty, &mut out), Err(Unconverted::Malformed));
    }

    #[test]
    fn rtp_clocks_share_an_origin() {
        let mut v = RtpClock::new(90_000);
        let mut a = RtpClock::new(8000);
        assert_eq!(v.to_ms(1_000_000, 500), 500);
        assert_eq!(v.to_ms(1_000_000 + 90_000, 0), 1500);
        assert_eq!(a.to_ms(77, 510), 510);
        assert_eq!(a.to_ms(77 + 160, 0), 530);
        assert_eq!(v.to_ms(1_000_000 - 9000, 0), 400);
    }
}
