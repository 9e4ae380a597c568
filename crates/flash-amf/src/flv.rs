//! FLV file reader and writer, and the audio/video tag body headers shared by
//! FLV files and RTMP/RTMFP audio (type 8) and video (type 9) messages.
//!
//! File layout: a 9-byte [`FlvHeader`], `PreviousTagSize0` (u32, 0), then for
//! each tag an 11-byte [`TagHeader`], the tag body and a u32 `PreviousTagSize`
//! equal to 11 + body length.

use std::io::{self, Read, Write};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::value::Value;

/// Length of the FLV file header.
pub const HEADER_LEN: usize = 9;
/// Length of an FLV tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// Largest tag body (24-bit DataSize).
pub const MAX_DATA_SIZE: u32 = 0xFF_FFFF;
/// Largest stream id (24 bits).
pub const MAX_STREAM_ID: u32 = 0xFF_FFFF;

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn put_u24(out: &mut [u8], v: u32) {
    out[0] = (v >> 16) as u8;
    out[1] = (v >> 8) as u8;
    out[2] = v as u8;
}

// ---------------------------------------------------------------------------
// File header and tag header

/// The 9-byte FLV file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    /// File version (1).
    pub version: u8,
    /// TypeFlagsAudio (flags bit 2).
    pub has_audio: bool,
    /// TypeFlagsVideo (flags bit 0).
    pub has_video: bool,
    /// DataOffset: the header length, normally 9. Bytes between 9 and this offset
    /// are skipped by the reader and written as zeros by the writer.
    pub data_offset: u32,
}

impl FlvHeader {
    /// A version 1 header with the given stream flags.
    pub fn new(has_audio: bool, has_video: bool) -> Self {
        FlvHeader {
            version: 1,
            has_audio,
            has_video,
            data_offset: HEADER_LEN as u32,
        }
    }

    /// Parses a header from the first 9 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated("file header"));
        }
        if &b[0..3] != b"FLV" {
            return Err(Error::InvalidFlvSignature);
        }
        let data_offset = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        if data_offset < HEADER_LEN as u32 {
            return Err(Error::InvalidFlv("DataOffset smaller than the header"));
        }
        Ok(FlvHeader {
            version: b[3],
            has_audio: b[4] & 0x04 != 0,
            has_video: b[4] & 0x01 != 0,
            data_offset,
        })
    }

    /// The 9 header bytes (DataOffset as stored in the header).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let flags = (u8::from(self.has_audio) << 2) | u8::from(self.has_video);
        let o = self.data_offset.to_be_bytes();
        [
            b'F',
            b'L',
            b'V',
            self.version,
            flags,
            o[0],
            o[1],
            o[2],
            o[3],
        ]
    }
}

/// FLV tag type (5 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagType {
    /// 8: audio.
    Audio,
    /// 9: video.
    Video,
    /// 18: script data (AMF0).
    ScriptData,
    /// Any other 5-bit value.
    Other(u8),
}

impl TagType {
    /// From the low 5 bits of `b`.
    pub fn from_u8(b: u8) -> Self {
        match b & 0x1f {
            8 => TagType::Audio,
            9 => TagType::Video,
            18 => TagType::ScriptData,
            t => TagType::Other(t),
        }
    }

    /// The numeric type (only the low 5 bits of `Other` are kept).
    pub fn as_u8(self) -> u8 {
        match self {
            TagType::Audio => 8,
            TagType::Video => 9,
            TagType::ScriptData => 18,
            TagType::Other(t) => t & 0x1f,
        }
    }
}

/// The 11-byte FLV tag header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeader {
    /// Filter bit (1 = encrypted/pre-processed body).
    pub filter: bool,
    /// Tag type.
    pub tag_type: TagType,
    /// Body length (24 bits).
    pub data_size: u32,
    /// Timestamp in ms: the 24-bit field plus TimestampExtended as the high byte.
    pub timestamp: u32,
    /// StreamID (24 bits, always 0 in files).
    pub stream_id: u32,
}

impl TagHeader {
    /// Parses a tag header from the first 11 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < TAG_HEADER_LEN {
            return Err(Error::Truncated("tag header"));
        }
        Ok(TagHeader {
            filter: b[0] & 0x20 != 0,
            tag_type: TagType::from_u8(b[0]),
            data_size: u24(&b[1..4]),
            timestamp: u24(&b[4..7]) | (u32::from(b[7]) << 24),
            stream_id: u24(&b[8..11]),
        })
    }

    /// The 11 header bytes. Fails if `data_size` or `stream_id` exceed 24 bits.
    pub fn to_bytes(&self) -> Result<[u8; TAG_HEADER_LEN]> {
        if self.data_size > MAX_DATA_SIZE {
            return Err(Error::TagTooLarge {
                size: self.data_size,
                limit: MAX_DATA_SIZE,
            });
        }
        if self.stream_id > MAX_STREAM_ID {
            return Err(Error::InvalidFlv("stream id exceeds 24 bits"));
        }
        let mut b = [0u8; TAG_HEADER_LEN];
        b[0] = (u8::from(self.filter) << 5) | self.tag_type.as_u8();
        put_u24(&mut b[1..4], self.data_size);
        put_u24(&mut b[4..7], self.timestamp & 0xFF_FFFF);
        b[7] = (self.timestamp >> 24) as u8;
        put_u24(&mut b[8..11], self.stream_id);
        Ok(b)
    }
}

/// One FLV tag: header fields and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Tag type.
    pub tag_type: TagType,
    /// Timestamp in ms (32 bits including the extended byte).
    pub timestamp: u32,
    /// StreamID (24 bits, 0 in files).
    pub stream_id: u32,
    /// Filter bit.
    pub filter: bool,
    /// The tag body (an RTMP audio/video/data message payload).
    pub data: Bytes,
}

impl FlvTag {
    /// A tag of the given type with stream id 0 and no filter.
    pub fn new(tag_type: TagType, timestamp: u32, data: impl Into<Bytes>) -> Self {
        FlvTag {
            tag_type,
            timestamp,
            stream_id: 0,
            filter: false,
            data: data.into(),
        }
    }

    /// An audio tag.
    pub fn audio(timestamp: u32, data: impl Into<Bytes>) -> Self {
        Self::new(TagType::Audio, timestamp, data)
    }

    /// A video tag.
    pub fn video(timestamp: u32, data: impl Into<Bytes>) -> Self {
        Self::new(TagType::Video, timestamp, data)
    }

    /// A script-data tag.
    pub fn script(timestamp: u32, data: impl Into<Bytes>) -> Self {
        Self::new(TagType::ScriptData, timestamp, data)
    }

    /// The tag header for this tag. Fails if the body is longer than 24 bits.
    pub fn header(&self) -> Result<TagHeader> {
        let size = u32::try_from(self.data.len())
            .ok()
            .filter(|s| *s <= MAX_DATA_SIZE)
            .ok_or(Error::TagTooLarge {
                size: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
                limit: MAX_DATA_SIZE,
            })?;
        Ok(TagHeader {
            filter: self.filter,
            tag_type: self.tag_type,
            data_size: size,
            timestamp: self.timestamp,
            stream_id: self.stream_id,
        })
    }

    /// Parses the audio tag header at the start of the body.
    pub fn audio_header(&self) -> Result<AudioTagHeader> {
        AudioTagHeader::parse(&self.data).map(|(h, _)| h)
    }

    /// Parses the video tag header at the start of the body.
    pub fn video_header(&self) -> Result<VideoTagHeader> {
        VideoTagHeader::parse(&self.data).map(|(h, _)| h)
    }

    /// Decodes a script-data body as a sequence of AMF0 values.
    pub fn script_values(&self) -> Result<Vec<Value>> {
        crate::amf0::decode_all(&self.data)
    }
}

// ---------------------------------------------------------------------------
// Audio

/// Audio SoundFormat (4 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundFormat {
    /// 0: linear PCM, platform endian.
    LinearPcmPlatformEndian,
    /// 1: ADPCM.
    Adpcm,
    /// 2: MP3.
    Mp3,
    /// 3: linear PCM, little endian.
    LinearPcmLittleEndian,
    /// 4: Nellymoser 16 kHz mono.
    Nellymoser16kMono,
    /// 5: Nellymoser 8 kHz mono.
    Nellymoser8kMono,
    /// 6: Nellymoser.
    Nellymoser,
    /// 7: G.711 A-law.
    G711ALaw,
    /// 8: G.711 mu-law.
    G711MuLaw,
    /// 10: AAC.
    Aac,
    /// 11: Speex.
    Speex,
    /// 14: MP3 8 kHz.
    Mp3_8k,
    /// 15: device-specific sound.
    DeviceSpecific,
    /// 9, 12, 13: reserved.
    Reserved(u8),
}

impl SoundFormat {
    /// From a 4-bit value.
    pub fn from_u4(v: u8) -> Self {
        use SoundFormat::*;
        match v & 0x0f {
            0 => LinearPcmPlatformEndian,
            1 => Adpcm,
            2 => Mp3,
            3 => LinearPcmLittleEndian,
            4 => Nellymoser16kMono,
            5 => Nellymoser8kMono,
            6 => Nellymoser,
            7 => G711ALaw,
            8 => G711MuLaw,
            10 => Aac,
            11 => Speex,
            14 => Mp3_8k,
            15 => DeviceSpecific,
            r => Reserved(r),
        }
    }

    /// The 4-bit value.
    pub fn as_u4(self) -> u8 {
        use SoundFormat::*;
        match self {
            LinearPcmPlatformEndian => 0,
            Adpcm => 1,
            Mp3 => 2,
            LinearPcmLittleEndian => 3,
            Nellymoser16kMono => 4,
            Nellymoser8kMono => 5,
            Nellymoser => 6,
            G711ALaw => 7,
            G711MuLaw => 8,
            Aac => 10,
            Speex => 11,
            Mp3_8k => 14,
            DeviceSpecific => 15,
            Reserved(r) => r & 0x0f,
        }
    }
}

/// Audio SoundRate (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundRate {
    /// 0: 5.5 kHz.
    Rate5_5k,
    /// 1: 11 kHz.
    Rate11k,
    /// 2: 22 kHz.
    Rate22k,
    /// 3: 44 kHz.
    Rate44k,
}

impl SoundRate {
    fn from_u2(v: u8) -> Self {
        match v & 3 {
            0 => SoundRate::Rate5_5k,
            1 => SoundRate::Rate11k,
            2 => SoundRate::Rate22k,
            _ => SoundRate::Rate44k,
        }
    }

    fn as_u2(self) -> u8 {
        self as u8
    }

    /// The nominal rate in Hz (5512, 11025, 22050, 44100).
    pub fn hz(self) -> u32 {
        match self {
            SoundRate::Rate5_5k => 5512,
            SoundRate::Rate11k => 11025,
            SoundRate::Rate22k => 22050,
            SoundRate::Rate44k => 44100,
        }
    }
}

/// Audio SoundSize (1 bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundSize {
    /// 0: 8-bit samples.
    Bits8,
    /// 1: 16-bit samples.
    Bits16,
}

/// Audio SoundType (1 bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundType {
    /// 0: mono.
    Mono,
    /// 1: stereo.
    Stereo,
}

/// AACPacketType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AacPacketType {
    /// 0: AudioSpecificConfig.
    SequenceHeader,
    /// 1: raw AAC frame.
    Raw,
    /// Any other value (invalid per spec, kept).
    Other(u8),
}

impl AacPacketType {
    /// From a byte.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => AacPacketType::SequenceHeader,
            1 => AacPacketType::Raw,
            o => AacPacketType::Other(o),
        }
    }

    /// The byte.
    pub fn as_u8(self) -> u8 {
        match self {
            AacPacketType::SequenceHeader => 0,
            AacPacketType::Raw => 1,
            AacPacketType::Other(o) => o,
        }
    }
}

/// The header at the start of an audio tag body / RTMP audio message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioTagHeader {
    /// Codec.
    pub sound_format: SoundFormat,
    /// Sampling rate field.
    pub sound_rate: SoundRate,
    /// Sample size field.
    pub sound_size: SoundSize,
    /// Mono/stereo field.
    pub sound_type: SoundType,
    /// AACPacketType, present exactly when `sound_format` is AAC.
    pub aac_packet_type: Option<AacPacketType>,
}

impl AudioTagHeader {
    /// Parses the header, returning it and the rest of the body.
    pub fn parse(data: &[u8]) -> Result<(Self, &[u8])> {
        let (&b, rest) = data
            .split_first()
            .ok_or(Error::InvalidCodecData("empty audio body"))?;
        let sound_format = SoundFormat::from_u4(b >> 4);
        let mut h = AudioTagHeader {
            sound_format,
            sound_rate: SoundRate::from_u2(b >> 2),
            sound_size: if b & 0x02 != 0 {
                SoundSize::Bits16
            } else {
                SoundSize::Bits8
            },
            sound_type: if b & 0x01 != 0 {
                SoundType::Stereo
            } else {
                SoundType::Mono
            },
            aac_packet_type: None,
        };
        if sound_format == SoundFormat::Aac {
            let (&t, rest) = rest.split_first().ok_or(Error::InvalidCodecData(
                "AAC audio body without packet type",
            ))?;
            h.aac_packet_type = Some(AacPacketType::from_u8(t));
            return Ok((h, rest));
        }
        Ok((h, rest))
    }

    /// Header length in bytes (2 for AAC, otherwise 1).
    pub fn len(&self) -> usize {
        1 + usize::from(self.aac_packet_type.is_some())
    }

    /// Always false: a header has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let b = (self.sound_format.as_u4() << 4)
            | (self.sound_rate.as_u2() << 2)
            | (u8::from(self.sound_size == SoundSize::Bits16) << 1)
            | u8::from(self.sound_type == SoundType::Stereo);
        let mut v = vec![b];
        if let Some(t) = self.aac_packet_type {
            v.push(t.as_u8());
        }
        v
    }
}

// ---------------------------------------------------------------------------
// Video

/// Video FrameType (4 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 1: key frame (seekable frame for AVC).
    KeyFrame,
    /// 2: inter frame.
    InterFrame,
    /// 3: disposable inter frame (H.263 only).
    DisposableInterFrame,
    /// 4: generated key frame (server use only).
    GeneratedKeyFrame,
    /// 5: video info / command frame.
    VideoInfoCommand,
    /// Any other value.
    Other(u8),
}

impl FrameType {
    /// From a 4-bit value.
    pub fn from_u4(v: u8) -> Self {
        match v & 0x0f {
            1 => FrameType::KeyFrame,
            2 => FrameType::InterFrame,
            3 => FrameType::DisposableInterFrame,
            4 => FrameType::GeneratedKeyFrame,
            5 => FrameType::VideoInfoCommand,
            o => FrameType::Other(o),
        }
    }

    /// The 4-bit value.
    pub fn as_u4(self) -> u8 {
        match self {
            FrameType::KeyFrame => 1,
            FrameType::InterFrame => 2,
            FrameType::DisposableInterFrame => 3,
            FrameType::GeneratedKeyFrame => 4,
            FrameType::VideoInfoCommand => 5,
            FrameType::Other(o) => o & 0x0f,
        }
    }
}

/// Video CodecID (4 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecId {
    /// 2: Sorenson H.263.
    SorensonH263,
    /// 3: Screen video.
    ScreenVideo,
    /// 4: On2 VP6.
    Vp6,
    /// 5: On2 VP6 with alpha channel.
    Vp6Alpha,
    /// 6: Screen video version 2.
    ScreenVideoV2,
    /// 7: AVC (H.264).
    Avc,
    /// Any other value (1 is JPEG, unused).
    Other(u8),
}

impl CodecId {
    /// From a 4-bit value.
    pub fn from_u4(v: u8) -> Self {
        match v & 0x0f {
            2 => CodecId::SorensonH263,
            3 => CodecId::ScreenVideo,
            4 => CodecId::Vp6,
            5 => CodecId::Vp6Alpha,
            6 => CodecId::ScreenVideoV2,
            7 => CodecId::Avc,
            o => CodecId::Other(o),
        }
    }

    /// The 4-bit value.
    pub fn as_u4(self) -> u8 {
        match self {
            CodecId::SorensonH263 => 2,
            CodecId::ScreenVideo => 3,
            CodecId::Vp6 => 4,
            CodecId::Vp6Alpha => 5,
            CodecId::ScreenVideoV2 => 6,
            CodecId::Avc => 7,
            CodecId::Other(o) => o & 0x0f,
        }
    }
}

/// AVCPacketType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AvcPacketType {
    /// 0: AVCDecoderConfigurationRecord.
    SequenceHeader,
    /// 1: one or more length-prefixed NAL units.
    Nalu,
    /// 2: end of sequence.
    EndOfSequence,
    /// Any other value.
    Other(u8),
}

impl AvcPacketType {
    /// From a byte.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => AvcPacketType::SequenceHeader,
            1 => AvcPacketType::Nalu,
            2 => AvcPacketType::EndOfSequence,
            o => AvcPacketType::Other(o),
        }
    }

    /// The byte.
    pub fn as_u8(self) -> u8 {
        match self {
            AvcPacketType::SequenceHeader => 0,
            AvcPacketType::Nalu => 1,
            AvcPacketType::EndOfSequence => 2,
            AvcPacketType::Other(o) => o,
        }
    }
}

/// The header at the start of a video tag body / RTMP video message.
///
/// Layout: `FrameType:4 CodecID:4`, then for AVC `AVCPacketType u8` and
/// `CompositionTime SI24`, then for FrameType 5 a one-byte video command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoTagHeader {
    /// Frame type.
    pub frame_type: FrameType,
    /// Codec.
    pub codec_id: CodecId,
    /// AVCPacketType, present exactly when the codec is AVC.
    pub avc_packet_type: Option<AvcPacketType>,
    /// AVC composition time offset in ms (cts - dts); 0 for other codecs.
    pub composition_time: i32,
    /// For FrameType 5: the command byte (0 = start of client-side seek, 1 = end).
    pub video_command: Option<u8>,
}

impl VideoTagHeader {
    /// Parses the header, returning it and the rest of the body.
    pub fn parse(data: &[u8]) -> Result<(Self, &[u8])> {
        let (&b, mut rest) = data
            .split_first()
            .ok_or(Error::InvalidCodecData("empty video body"))?;
        let mut h = VideoTagHeader {
            frame_type: FrameType::from_u4(b >> 4),
            codec_id: CodecId::from_u4(b),
            avc_packet_type: None,
            composition_time: 0,
            video_command: None,
        };
        if h.codec_id == CodecId::Avc {
            if rest.len() < 4 {
                return Err(Error::InvalidCodecData(
                    "AVC video header shorter than 5 bytes",
                ));
            }
            h.avc_packet_type = Some(AvcPacketType::from_u8(rest[0]));
            // SI24: sign-extend the 24-bit value.
            h.composition_time = ((u24(&rest[1..4]) << 8) as i32) >> 8;
            rest = &rest[4..];
        }
        if h.frame_type == FrameType::VideoInfoCommand {
            if let Some((&c, r)) = rest.split_first() {
                h.video_command = Some(c);
                rest = r;
            }
        }
        Ok((h, rest))
    }

    /// The header bytes. Fails if the composition time does not fit in 24 bits.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = vec![(self.frame_type.as_u4() << 4) | self.codec_id.as_u4()];
        if self.codec_id == CodecId::Avc {
            if !(-(1 << 23)..(1 << 23)).contains(&self.composition_time) {
                return Err(Error::InvalidCodecData("composition time exceeds 24 bits"));
            }
            let c = (self.composition_time as u32) & 0xFF_FFFF;
            v.push(self.avc_packet_type.unwrap_or(AvcPacketType::Nalu).as_u8());
            v.extend_from_slice(&[(c >> 16) as u8, (c >> 8) as u8, c as u8]);
        }
        if let Some(c) = self.video_command {
            v.push(c);
        }
        Ok(v)
    }
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1), the body of an
/// AVC sequence header after the 5-byte video tag header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfigurationRecord {
    /// configurationVersion (1).
    pub configuration_version: u8,
    /// AVCProfileIndication (e.g. 66 Baseline, 77 Main, 100 High).
    pub profile_indication: u8,
    /// profile_compatibility.
    pub profile_compatibility: u8,
    /// AVCLevelIndication (e.g. 31 for level 3.1).
    pub level_indication: u8,
    /// lengthSizeMinusOne: NAL unit length prefix size minus one (normally 3).
    pub length_size_minus_one: u8,
    /// Sequence parameter set NAL units.
    pub sps: Vec<Bytes>,
    /// Picture parameter set NAL units.
    pub pps: Vec<Bytes>,
    /// Bytes after the PPS list (the High-profile extension), kept verbatim.
    pub trailing: Bytes,
}

impl AvcDecoderConfigurationRecord {
    /// Parses a record.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let err = Error::InvalidCodecData;
        if data.len() < 6 {
            return Err(err("AVC configuration record shorter than 6 bytes"));
        }
        if data[0] != 1 {
            return Err(err("unsupported AVC configurationVersion"));
        }
        let mut rest = &data[6..];
        let sps = read_parameter_sets(&mut rest, usize::from(data[5] & 0x1f))?;
        let (&pps_count, r) = rest.split_first().ok_or(err("missing PPS count"))?;
        rest = r;
        let pps = read_parameter_sets(&mut rest, usize::from(pps_count))?;
        Ok(AvcDecoderConfigurationRecord {
            configuration_version: data[0],
            profile_indication: data[1],
            profile_compatibility: data[2],
            level_indication: data[3],
            length_size_minus_one: data[4] & 0x03,
            sps,
            pps,
            trailing: Bytes::copy_from_slice(rest),
        })
    }

    /// NAL unit length prefix size in bytes (1, 2 or 4; 3 is invalid per spec).
    pub fn nalu_length_size(&self) -> usize {
        usize::from(self.length_size_minus_one) + 1
    }

    /// The record bytes, with reserved bits set to 1.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.sps.len() > 31 {
            return Err(Error::InvalidCodecData("more than 31 SPS"));
        }
        if self.pps.len() > 255 {
            return Err(Error::InvalidCodecData("more than 255 PPS"));
        }
        let mut v = vec![
            self.configuration_version,
            self.profile_indication,
            self.profile_compatibility,
            self.level_indication,
            0xFC | (self.length_size_minus_one & 0x03),
            0xE0 | self.sps.len() as u8,
        ];
        let put = |v: &mut Vec<u8>, sets: &[Bytes]| -> Result<()> {
            for s in sets {
                let n = u16::try_from(s.len())
                    .map_err(|_| Error::InvalidCodecData("parameter set longer than 65535"))?;
                v.extend_from_slice(&n.to_be_bytes());
                v.extend_from_slice(s);
            }
            Ok(())
        };
        put(&mut v, &self.sps)?;
        v.push(self.pps.len() as u8);
        put(&mut v, &self.pps)?;
        v.extend_from_slice(&self.trailing);
        Ok(v)
    }
}

/// Reads `count` parameter sets, each a u16 length and a NAL unit.
fn read_parameter_sets(rest: &mut &[u8], count: usize) -> Result<Vec<Bytes>> {
    let err = Error::InvalidCodecData;
    let mut sets = Vec::with_capacity(count.min(rest.len() / 2));
    for _ in 0..count {
        if rest.len() < 2 {
            return Err(err("truncated parameter set length"));
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + n {
            return Err(err("truncated parameter set"));
        }
        sets.push(Bytes::copy_from_slice(&rest[2..2 + n]));
        *rest = &rest[2 + n..];
    }
    Ok(sets)
}

/// Splits an AVC NALU payload (AVCPacketType 1) into NAL units, each prefixed by
/// a big-endian length of `length_size` bytes (1 to 4).
pub fn split_nalus(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>> {
    if !(1..=4).contains(&length_size) {
        return Err(Error::InvalidCodecData("NAL length size must be 1 to 4"));
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(Error::InvalidCodecData("truncated NAL unit length"));
        }
        let n = rest[..length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[length_size..];
        if rest.len() < n {
            return Err(Error::InvalidCodecData("truncated NAL unit"));
        }
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// AAC AudioSpecificConfig

/// Sampling frequencies by samplingFrequencyIndex (ISO/IEC 14496-3 Table 1.18).
pub const AAC_SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: u32) -> Result<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self
                .data
                .get(self.bit / 8)
                .ok_or(Error::InvalidCodecData("truncated AudioSpecificConfig"))?;
            let b = (byte >> (7 - (self.bit % 8))) & 1;
            v = (v << 1) | u32::from(b);
            self.bit += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8> {
        let t = self.read(5)?;
        Ok(if t == 31 {
            (32 + self.read(6)?) as u8
        } else {
            t as u8
        })
    }

    fn frequency(&mut self) -> Result<(u8, u32)> {
        let idx = self.read(4)? as u8;
        let f = if idx == 0x0f {
            self.read(24)?
        } else {
            AAC_SAMPLING_FREQUENCIES
                .get(usize::from(idx))
                .copied()
                .unwrap_or(0)
        };
        Ok((idx, f))
    }
}

struct BitWriter {
    out: Vec<u8>,
    bit: usize,
}

impl BitWriter {
    fn write(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            if self.bit & 7 == 0 {
                self.out.push(0);
            }
            let b = ((v >> i) & 1) as u8;
            if let Some(last) = self.out.last_mut() {
                *last |= b << (7 - (self.bit % 8));
            }
            self.bit += 1;
        }
    }

    /// Writes an audioObjectType; 31 (the escape value itself) is not a valid
    /// type and is written as escape + 0, i.e. 32.
    fn object_type(&mut self, t: u8) {
        if t >= 31 {
            self.write(5, 31);
            self.write(6, u32::from(t.saturating_sub(32)));
        } else {
            self.write(5, u32::from(t));
        }
    }

    fn frequency(&mut self, idx: u8, f: u32) {
        self.write(4, u32::from(idx & 0x0f));
        if idx & 0x0f == 0x0f {
            self.write(24, f);
        }
    }
}

/// Explicit SBR/PS signalling in an AudioSpecificConfig (object type 5 or 29).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbrSignal {
    /// 5 (SBR, HE-AAC) or 29 (PS, HE-AACv2): the object type that introduced it.
    pub object_type: u8,
    /// extensionSamplingFrequencyIndex.
    pub sampling_frequency_index: u8,
    /// The extension (output) sampling frequency in Hz (0 for a reserved index).
    pub sampling_frequency: u32,
}

/// GASpecificConfig flags (for AAC object types 1–4, 6, 7, 17, 19–23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaSpecificConfig {
    /// frameLengthFlag (0: 1024-sample frames, 1: 960).
    pub frame_length_flag: bool,
    /// dependsOnCoreCoder.
    pub depends_on_core_coder: bool,
    /// coreCoderDelay, present when `depends_on_core_coder`.
    pub core_coder_delay: Option<u16>,
    /// extensionFlag.
    pub extension_flag: bool,
}

/// MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the body of an AAC
/// sequence header after the 2-byte audio tag header.
///
/// Only the leading fields are interpreted; everything after the GA flags
/// (program config element, extension fields, backward-compatible SBR
/// signalling) is kept in `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// audioObjectType of the core codec (2 = AAC-LC). With explicit SBR/PS
    /// signalling this is the underlying type, and `sbr` holds the extension.
    pub audio_object_type: u8,
    /// samplingFrequencyIndex (15 = explicit frequency).
    pub sampling_frequency_index: u8,
    /// The core sampling frequency in Hz (0 for a reserved index).
    pub sampling_frequency: u32,
    /// channelConfiguration (0 = defined in a program config element).
    pub channel_configuration: u8,
    /// Explicit SBR/PS signalling, if present.
    pub sbr: Option<SbrSignal>,
    /// GASpecificConfig flags, for object types that have them.
    pub ga: Option<GaSpecificConfig>,
    /// The complete configuration bytes as parsed (empty when built by hand).
    pub raw: Bytes,
}

impl AudioSpecificConfig {
    /// An AAC-LC (object type 2) configuration with 1024-sample frames.
    pub fn aac_lc(sampling_frequency_index: u8, channel_configuration: u8) -> Self {
        AudioSpecificConfig {
            audio_object_type: 2,
            sampling_frequency_index,
            sampling_frequency: AAC_SAMPLING_FREQUENCIES
                .get(usize::from(sampling_frequency_index))
                .copied()
                .unwrap_or(0),
            channel_configuration,
            sbr: None,
            ga: Some(GaSpecificConfig {
                frame_length_flag: false,
                depends_on_core_coder: false,
                core_coder_delay: None,
                extension_flag: false,
            }),
            raw: Bytes::new(),
        }
    }

    fn has_ga(object_type: u8) -> bool {
        matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23)
    }

    /// Parses a configuration (at least 2 bytes).
    pub fn parse(data: &[u8]) -> Result<Self> {
        let mut r = BitReader { data, bit: 0 };
        let mut aot = r.object_type()?;
        let (idx, freq) = r.frequency()?;
        let channels = r.read(4)? as u8;
        let mut sbr = None;
        if aot == 5 || aot == 29 {
            let (eidx, efreq) = r.frequency()?;
            sbr = Some(SbrSignal {
                object_type: aot,
                sampling_frequency_index: eidx,
                sampling_frequency: efreq,
            });
            aot = r.object_type()?;
            if aot == 22 {
                // extensionChannelConfiguration (ER BSAC): skipped.
                r.read(4)?;
            }
        }
        let ga = if Self::has_ga(aot) {
            let frame_length_flag = r.read(1)? != 0;
            let depends_on_core_coder = r.read(1)? != 0;
            let core_coder_delay = if depends_on_core_coder {
                Some(r.read(14)? as u16)
            } else {
                None
            };
            let extension_flag = r.read(1)? != 0;
            Some(GaSpecificConfig {
                frame_length_flag,
                depends_on_core_coder,
                core_coder_delay,
                extension_flag,
            })
        } else {
            None
        };
        Ok(AudioSpecificConfig {
            audio_object_type: aot,
            sampling_frequency_index: idx,
            sampling_frequency: freq,
            channel_configuration: channels,
            sbr,
            ga,
            raw: Bytes::copy_from_slice(data),
        })
    }

    /// Writes the interpreted fields, zero-padded to a byte boundary. (For a
    /// parsed configuration with more fields than are interpreted, use `raw`.)
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = BitWriter {
            out: Vec::new(),
            bit: 0,
        };
        match &self.sbr {
            Some(s) => {
                w.object_type(s.object_type);
                w.frequency(self.sampling_frequency_index, self.sampling_frequency);
                w.write(4, u32::from(self.channel_configuration));
                w.frequency(s.sampling_frequency_index, s.sampling_frequency);
                w.object_type(self.audio_object_type);
                if self.audio_object_type == 22 {
                    w.write(4, 0);
                }
            }
            None => {
                w.object_type(self.audio_object_type);
                w.frequency(self.sampling_frequency_index, self.sampling_frequency);
                w.write(4, u32::from(self.channel_configuration));
            }
        }
        if let Some(ga) = &self.ga {
            w.write(1, u32::from(ga.frame_length_flag));
            w.write(1, u32::from(ga.depends_on_core_coder));
            if ga.depends_on_core_coder {
                w.write(14, u32::from(ga.core_coder_delay.unwrap_or(0)));
            }
            w.write(1, u32::from(ga.extension_flag));
        }
        w.out
    }
}

// ---------------------------------------------------------------------------
// Streaming reader and writer

/// Options for [`FlvReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvReaderOptions {
    /// Largest tag body accepted (default and maximum: 16 MiB - 1). The reader
    /// never holds more than one tag body in memory, and only allocates as
    /// body bytes actually arrive.
    pub max_tag_size: u32,
    /// Fail with [`Error::PreviousTagSizeMismatch`] when a PreviousTagSize field
    /// is not 11 + the previous body length (default `false`: such fields are
    /// common in files written by broken muxers and are ignored).
    pub check_previous_tag_size: bool,
    /// Largest header DataOffset accepted (default 65 536).
    pub max_data_offset: u32,
}

impl Default for FlvReaderOptions {
    fn default() -> Self {
        FlvReaderOptions {
            max_tag_size: MAX_DATA_SIZE,
            check_previous_tag_size: false,
            max_data_offset: 1 << 16,
        }
    }
}

/// Reads as many bytes as are available up to `buf.len()`; returns the count.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A streaming FLV reader that returns tags one at a time.
///
/// Also an [`Iterator`] of `Result<FlvTag>` that stops after the first error.
#[derive(Debug)]
pub struct FlvReader<R> {
    inner: R,
    header: FlvHeader,
    options: FlvReaderOptions,
    /// Expected value of the next PreviousTagSize field.
    expected_prev: u32,
    done: bool,
}

impl<R: Read> FlvReader<R> {
    /// Reads the file header and PreviousTagSize0 with default options.
    pub fn new(reader: R) -> Result<Self> {
        Self::with_options(reader, FlvReaderOptions::default())
    }

    /// Reads the file header and PreviousTagSize0.
    pub fn with_options(mut reader: R, options: FlvReaderOptions) -> Result<Self> {
        let mut b = [0u8; HEADER_LEN];
        if read_full(&mut reader, &mut b)? < HEADER_LEN {
            return Err(Error::Truncated("file header"));
        }
        let header = FlvHeader::parse(&b)?;
        if header.data_offset > options.max_data_offset {
            return Err(Error::InvalidFlv("DataOffset exceeds the configured limit"));
        }
        let skip = u64::from(header.data_offset) - HEADER_LEN as u64;
        if skip > 0 {
            let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())?;
            if skipped < skip {
                return Err(Error::Truncated("file header"));
            }
        }
        let mut me = FlvReader {
            inner: reader,
            header,
            options,
            expected_prev: 0,
            done: false,
        };
        me.read_previous_tag_size()?;
        Ok(me)
    }

    /// Reads and checks a PreviousTagSize field. A clean end of input here ends
    /// the stream.
    fn read_previous_tag_size(&mut self) -> Result<()> {
        let mut b = [0u8; 4];
        match read_full(&mut self.inner, &mut b)? {
            0 => {
                self.done = true;
                Ok(())
            }
            4 => {
                let found = u32::from_be_bytes(b);
                if self.options.check_previous_tag_size && found != self.expected_prev {
                    return Err(Error::PreviousTagSizeMismatch {
                        expected: self.expected_prev,
                        found,
                    });
                }
                Ok(())
            }
            _ => Err(Error::Truncated("previous tag size")),
        }
    }

    /// The file header.
    pub fn header(&self) -> &FlvHeader {
        &self.header
    }

    /// Reads the next tag; `Ok(None)` at a clean end of input.
    pub fn next_tag(&mut self) -> Result<Option<FlvTag>> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_tag();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_tag(&mut self) -> Result<Option<FlvTag>> {
        let mut hb = [0u8; TAG_HEADER_LEN];
        match read_full(&mut self.inner, &mut hb)? {
            0 => return Ok(None),
            TAG_HEADER_LEN => {}
            _ => return Err(Error::Truncated("tag header")),
        }
        let h = TagHeader::parse(&hb)?;
        if h.data_size > self.options.max_tag_size {
            return Err(Error::TagTooLarge {
                size: h.data_size,
                limit: self.options.max_tag_size,
            });
        }
        let mut data = Vec::new();
        (&mut self.inner)
            .take(u64::from(h.data_size))
            .read_to_end(&mut data)?;
        if data.len() < h.data_size as usize {
            return Err(Error::Truncated("tag data"));
        }
        self.expected_prev = h.data_size + TAG_HEADER_LEN as u32;
        self.read_previous_tag_size()?;
        Ok(Some(FlvTag {
            tag_type: h.tag_type,
            timestamp: h.timestamp,
            stream_id: h.stream_id,
            filter: h.filter,
            data: Bytes::from(data),
        }))
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Iterator for FlvReader<R> {
    type Item = Result<FlvTag>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_tag().transpose()
    }
}

/// A streaming FLV writer.
#[derive(Debug)]
pub struct FlvWriter<W: Write> {
    inner: W,
}

impl<W: Write> FlvWriter<W> {
    /// Writes the file header (padded with zeros up to its DataOffset) and
    /// PreviousTagSize0.
    pub fn new(mut writer: W, header: &FlvHeader) -> Result<Self> {
        if header.data_offset < HEADER_LEN as u32 {
            return Err(Error::InvalidFlv("DataOffset smaller than the header"));
        }
        writer.write_all(&header.to_bytes())?;
        let pad = u64::from(header.data_offset) - HEADER_LEN as u64;
        io::copy(&mut io::repeat(0).take(pad), &mut writer)?;
        writer.write_all(&0u32.to_be_bytes())?;
        Ok(FlvWriter { inner: writer })
    }

    /// Writes one tag followed by its PreviousTagSize.
    pub fn write_tag(&mut self, tag: &FlvTag) -> Result<()> {
        let h = tag.header()?;
        let hb = h.to_bytes()?;
        self.inner.write_all(&hb)?;
        self.inner.write_all(&tag.data)?;
        self.inner
            .write_all(&(h.data_size + TAG_HEADER_LEN as u32).to_be_bytes())?;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Parses a complete in-memory FLV file into its header and tags, with default
/// options. Never panics; memory use is bounded by the input size.
pub fn decode_all(data: &[u8]) -> Result<(FlvHeader, Vec<FlvTag>)> {
    let mut r = FlvReader::new(data)?;
    let mut tags = Vec::new();
    while let Some(t) = r.next_tag()? {
        tags.push(t);
    }
    Ok((r.header, tags))
}

/// Writes a complete FLV file to memory.
pub fn encode_all(header: &FlvHeader, tags: &[FlvTag]) -> Result<Vec<u8>> {
    let mut w = FlvWriter::new(Vec::new(), header)?;
    for t in tags {
        w.write_tag(t)?;
    }
    w.into_inner()
}
