//! Error type shared by the AMF codecs, the command helpers and the FLV reader/writer.

use std::io;

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while encoding or decoding AMF values or FLV data.
///
/// Decoders never panic on malformed input: every problem is reported as one of
/// these variants. Offsets are byte offsets into the decoder's input slice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a complete value could be read.
    #[error("unexpected end of input at offset {offset} (needed {needed} more bytes)")]
    UnexpectedEof {
        /// Offset at which the read started.
        offset: usize,
        /// How many more bytes were needed than were available.
        needed: usize,
    },
    /// A type marker that does not exist in this encoding.
    #[error("unknown type marker 0x{marker:02x} at offset {offset}")]
    UnknownMarker {
        /// The marker byte.
        marker: u8,
        /// Offset of the marker byte.
        offset: usize,
    },
    /// A reserved AMF0 marker (movieclip 0x04, recordset 0x0E) that is not supported.
    #[error("reserved type marker 0x{marker:02x} at offset {offset}")]
    ReservedMarker {
        /// The marker byte.
        marker: u8,
        /// Offset of the marker byte.
        offset: usize,
    },
    /// An AMF0 object-end marker (0x09) where a value was expected.
    #[error("unexpected object-end marker at offset {offset}")]
    UnexpectedObjectEnd {
        /// Offset of the marker byte.
        offset: usize,
    },
    /// An AMF0 empty key was not followed by the object-end marker.
    #[error("expected object-end marker after empty key at offset {offset}")]
    ExpectedObjectEnd {
        /// Offset of the byte that should have been 0x09.
        offset: usize,
    },
    /// A string was not valid UTF-8.
    #[error("invalid UTF-8 string at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the first byte of the string data.
        offset: usize,
    },
    /// A reference index that does not point at an entry of the reference table.
    #[error("reference index {index} out of range at offset {offset}")]
    BadReference {
        /// The index that was read.
        index: usize,
        /// Offset of the reference.
        offset: usize,
    },
    /// A reference to a complex value that is still being decoded (a cycle).
    ///
    /// The value model is a tree, so cyclic object graphs cannot be represented.
    #[error("cyclic reference to index {index} at offset {offset}")]
    CyclicReference {
        /// The index that was read.
        index: usize,
        /// Offset of the reference.
        offset: usize,
    },
    /// Nesting deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("nesting depth limit {limit} exceeded")]
    DepthLimitExceeded {
        /// The configured limit.
        limit: usize,
    },
    /// A collection larger than [`Limits::max_collection_len`](crate::Limits::max_collection_len).
    #[error("collection of {len} elements exceeds limit {limit}")]
    CollectionTooLarge {
        /// The declared or reached element count.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Decoding would allocate more than [`Limits::max_alloc_bytes`](crate::Limits::max_alloc_bytes).
    #[error("allocation budget of {limit} bytes exceeded")]
    AllocationLimitExceeded {
        /// The configured limit.
        limit: usize,
    },
    /// A reference table grew beyond [`Limits::max_references`](crate::Limits::max_references).
    #[error("reference table limit {limit} exceeded")]
    ReferenceTableFull {
        /// The configured limit.
        limit: usize,
    },
    /// An AMF3 externalizable object whose payload format is unknown.
    #[error("externalizable AMF3 class {class_name:?} cannot be decoded")]
    Externalizable {
        /// The class name from the traits.
        class_name: String,
    },
    /// An integer that does not fit the 29-bit U29 encoding.
    #[error("value {0} does not fit in a U29")]
    U29OutOfRange(u64),
    /// A string or byte sequence too long for its length prefix.
    #[error("length {len} exceeds the maximum {max} for this field")]
    TooLong {
        /// The actual length.
        len: usize,
        /// The maximum the encoding allows.
        max: usize,
    },
    /// A value that cannot be written in the requested encoding.
    #[error("value not representable: {0}")]
    NotRepresentable(&'static str),
    /// An empty property name where the encoding uses the empty string as a terminator.
    #[error("empty property name cannot be encoded")]
    EmptyKey,
    /// Bytes left over after a value that should have consumed the whole input.
    #[error("{remaining} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Offset of the first unused byte.
        offset: usize,
        /// How many bytes were left.
        remaining: usize,
    },
    /// The format selector byte of an RTMP type 15/17 message was not 0.
    #[error("unknown extended message format selector {0}")]
    UnknownFormatSelector(u8),
    /// An RTMP command or data message that does not have the expected shape.
    #[error("malformed message: {0}")]
    MalformedMessage(&'static str),
    /// An I/O error from the FLV reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The FLV file signature was not `FLV`.
    #[error("not an FLV file (bad signature)")]
    InvalidFlvSignature,
    /// Malformed FLV structure.
    #[error("invalid FLV data: {0}")]
    InvalidFlv(&'static str),
    /// An FLV tag larger than the configured maximum.
    #[error("FLV tag of {size} bytes exceeds limit {limit}")]
    TagTooLarge {
        /// The declared data size.
        size: u32,
        /// The configured limit.
        limit: u32,
    },
    /// A PreviousTagSize field that does not match the tag before it.
    #[error("previous tag size {found} does not match expected {expected}")]
    PreviousTagSizeMismatch {
        /// 11 + DataSize of the previous tag (0 before the first tag).
        expected: u32,
        /// The value found in the file.
        found: u32,
    },
    /// The FLV stream ended in the middle of a header, tag or size field.
    #[error("FLV stream truncated while reading {0}")]
    Truncated(&'static str),
    /// A malformed codec header or configuration record inside an FLV/RTMP body.
    #[error("invalid codec data: {0}")]
    InvalidCodecData(&'static str),
}
