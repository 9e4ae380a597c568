//! FLV files and streams on top of `flash_amf::flv`: a sink writing
//! [`MediaTag`]s to a file or stdout, a source reading them from a file or
//! stdin, and builders for the tag bodies the test source produces.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use flash_amf::flv::{FlvHeader, FlvReader, FlvReaderOptions, FlvWriter};
use flash_amf::{amf0, EcmaArray, Value};

use super::{MediaError, MediaKind, MediaSource, MediaTag};

/// The VIDEODATA body of an AVC sequence header: `0x17`, AVCPacketType 0,
/// composition time 0, then the AVCDecoderConfigurationRecord.
pub fn avc_sequence_header_body(record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + record.len());
    v.extend_from_slice(&[0x17, 0, 0, 0, 0]);
    v.extend_from_slice(record);
    v
}

/// The VIDEODATA body of an AVC picture: `0x17` (key frame) or `0x27`,
/// AVCPacketType 1, composition time 0, then the AVCC NAL units.
pub fn avc_nalu_body(keyframe: bool, avcc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + avcc.len());
    v.extend_from_slice(&[if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
    v.extend_from_slice(avcc);
    v
}

/// Stream properties for an `onMetaData` script tag.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamInfo {
    /// Video width, height and frame rate, when there is video (codec AVC).
    pub video: Option<(u32, u32, u32)>,
    /// Audio SoundFormat and sample rate, when there is audio (16-bit mono).
    pub audio: Option<(u8, u32)>,
}

/// The script-data body `onMetaData` with the stream's properties, as Flash
/// Player and ffmpeg expect at the start of an FLV.
pub fn metadata_body(info: &StreamInfo) -> Result<Vec<u8>, MediaError> {
    let mut a = EcmaArray::new().with("duration", 0.0);
    if let Some((w, h, fps)) = info.video {
        a = a
            .with("width", f64::from(w))
            .with("height", f64::from(h))
            .with("framerate", f64::from(fps))
            .with("videocodecid", 7.0);
    }
    if let Some((format, rate)) = info.audio {
        a = a
            .with("audiocodecid", f64::from(format))
            .with("audiosamplerate", f64::from(rate))
            .with("audiosamplesize", 16.0)
            .with("stereo", false);
    }
    let v = amf0::encode_all(&[Value::from("onMetaData"), Value::from(a)])?;
    Ok(v)
}

/// Writes [`MediaTag`]s as an FLV file or stream.
#[derive(Debug)]
pub struct FlvSink<W: Write> {
    writer: FlvWriter<W>,
    tags: u64,
    bytes: u64,
}

impl FlvSink<Box<dyn Write + Send>> {
    /// Creates (truncates) the file at `path`, or writes to stdout when
    /// `path` is `-`.
    pub fn open(
        path: impl AsRef<Path>,
        has_audio: bool,
        has_video: bool,
    ) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let w: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            Box::new(BufWriter::new(File::create(path)?))
        };
        FlvSink::new(w, has_audio, has_video)
    }
}

impl<W: Write> FlvSink<W> {
    /// Writes the FLV header to `writer`.
    pub fn new(writer: W, has_audio: bool, has_video: bool) -> Result<Self, MediaError> {
        let writer = FlvWriter::new(writer, &FlvHeader::new(has_audio, has_video))?;
        Ok(FlvSink {
            writer,
            tags: 0,
            bytes: 13,
        })
    }

    /// Writes one tag. Fails on bodies longer than 16 MiB − 1.
    pub fn write(&mut self, tag: &MediaTag) -> Result<(), MediaError> {
        self.writer.write_tag(&tag.to_flv_tag())?;
        self.tags += 1;
        self.bytes += 15 + tag.data.len() as u64;
        Ok(())
    }

    /// Copies every tag of `source` into the sink; returns how many.
    pub fn write_all<S: MediaSource + ?Sized>(
        &mut self,
        source: &mut S,
    ) -> Result<u64, MediaError> {
        let mut n = 0;
        while let Some(t) = source.next_tag()? {
            self.write(&t)?;
            n += 1;
        }
        Ok(n)
    }

    /// Tags written.
    pub fn tags_written(&self) -> u64 {
        self.tags
    }

    /// Bytes written, headers included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Flushes the underlying writer (call it per tag for live streams).
    pub fn flush(&mut self) -> Result<(), MediaError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, MediaError> {
        Ok(self.writer.into_inner()?)
    }
}

/// Reads [`MediaTag`]s from an FLV file or stream (tags of unknown types are
/// skipped). Memory is bounded by one tag body (at most
/// `FlvReaderOptions::max_tag_size`, 16 MiB by default).
#[derive(Debug)]
pub struct FlvFileSource<R: Read> {
    reader: FlvReader<R>,
}

impl FlvFileSource<Box<dyn Read + Send>> {
    /// Opens the file at `path`, or stdin when `path` is `-`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let r: Box<dyn Read + Send> = if path == Path::new("-") {
            Box::new(BufReader::new(io::stdin()))
        } else {
            Box::new(BufReader::new(File::open(path)?))
        };
        FlvFileSource::new(r)
    }
}

impl<R: Read> FlvFileSource<R> {
    /// Reads the FLV header from `reader`.
    pub fn new(reader: R) -> Result<Self, MediaError> {
        Self::with_options(reader, FlvReaderOptions::default())
    }

    /// Reads the FLV header from `reader`, with reader limits.
    pub fn with_options(reader: R, options: FlvReaderOptions) -> Result<Self, MediaError> {
        Ok(FlvFileSource {
            reader: FlvReader::with_options(reader, options)?,
        })
    }

    /// The file header.
    pub fn header(&self) -> &FlvHeader {
        self.reader.header()
    }
}

impl<R: Read> MediaSource for FlvFileSource<R> {
    fn next_tag(&mut self) -> Result<Option<MediaTag>, MediaError> {
        loop {
            let Some(tag) = self.reader.next_tag()? else {
                return Ok(None);
            };
            if let Some(t) = MediaTag::from_flv_tag(tag) {
                return Ok(Some(t));
            }
        }
    }
}

impl<R: Read> Iterator for FlvFileSource<R> {
    type Item = Result<MediaTag, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_tag().transpose()
    }
}

/// Reads a whole in-memory FLV into tags.
pub fn read_all(data: &[u8]) -> Result<Vec<MediaTag>, MediaError> {
    FlvFileSource::new(data)?.collect()
}

/// Writes tags into an in-memory FLV.
pub fn write_all(
    tags: &[MediaTag],
    has_audio: bool,
    has_video: bool,
) -> Result<Vec<u8>, MediaError> {
    let mut s = FlvSink::new(Vec::new(), has_audio, has_video)?;
    for t in tags {
        s.write(t)?;
    }
    s.finish()
}

/// A data tag with the `onMetaData` body for `info` at time 0.
pub fn metadata_tag(info: &StreamInfo) -> Result<MediaTag, MediaError> {
    Ok(MediaTag::new(
        MediaKind::Data,
        0,
        Bytes::from(metadata_body(info)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_tag() -> impl Strategy<Value = MediaTag> {
        (
            prop_oneof![
                Just(MediaKind::Audio),
                Just(MediaKind::Video),
                Just(MediaKind::Data)
            ],
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(k, ts, d)| MediaTag::new(k, ts, d))
    }

    proptest! {
        #[test]
        fn write_read_round_trip(tags in proptest::collection::vec(arb_tag(), 0..20), a: bool, v: bool) {
            let bytes = write_all(&tags, a, v).unwrap();
            let src = FlvFileSource::new(&bytes[..]).unwrap();
            prop_assert_eq!(src.header().has_audio, a);
            prop_assert_eq!(src.header().has_video, v);
            let back: Vec<MediaTag> = src.collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, tags);
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut input = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
            input.extend_from_slice(&data);
            let _ = read_all(&input);
            let _ = read_all(&data);
        }
    }

    #[test]
    fn truncated_file_is_an_error() {
        let tags = vec![MediaTag::new(MediaKind::Video, 5, vec![1, 2, 3])];
        let bytes = write_all(&tags, false, true).unwrap();
        assert!(read_all(&bytes[..bytes.len() - 6]).is_err());
        assert_eq!(read_all(&bytes).unwrap(), tags);
    }

    #[test]
    fn metadata_decodes() {
        let t = metadata_tag(&StreamInfo {
            video: Some((320, 240, 15)),
            audio: Some((3, 11_025)),
        })
        .unwrap();
        let values = t.to_flv_tag().script_values().unwrap();
        assert_eq!(values[0], Value::from("onMetaData"));
    }
}
