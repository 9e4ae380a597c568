//! Decoder limits and encoder/decoder options.

/// Resource limits applied while decoding untrusted input.
///
/// All limits are checked before the corresponding memory is committed, so a
/// hostile message can make decoding fail but never make it allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting depth of complex values (objects, arrays, vectors,
    /// dictionaries, AMF3 switches). A top-level scalar is at depth 0, the members
    /// of a top-level object at depth 1. Default 64.
    ///
    /// The decoders and encoders recurse once per level, so very large values
    /// need a correspondingly large thread stack.
    pub max_depth: usize,
    /// Maximum number of elements in one collection (array elements, object
    /// properties, vector items, dictionary entries). Default 1 048 576.
    pub max_collection_len: usize,
    /// Maximum number of bytes the decoder may allocate for the values it
    /// produces, counted approximately (value nodes, string and byte contents,
    /// reference tables, and copies made to resolve references). Default 64 MiB.
    pub max_alloc_bytes: usize,
    /// Maximum number of entries in any one reference table (AMF0 object table,
    /// AMF3 string/object/traits tables). Default 65 536.
    pub max_references: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_collection_len: 1 << 20,
            max_alloc_bytes: 64 << 20,
            max_references: 1 << 16,
        }
    }
}

/// What the AMF3 decoder does with an externalizable object whose class is not
/// listed in [`DecodeOptions::externalizable_value_classes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalizableMode {
    /// Fail with [`Error::Externalizable`](crate::Error::Externalizable) (default).
    ///
    /// The payload of an externalizable object is written by the class's own
    /// `writeExternal`, so its length cannot be known without the class.
    #[default]
    Reject,
    /// Take every remaining input byte as the raw payload
    /// ([`ExternalData::Raw`](crate::ExternalData::Raw)). Only useful when the
    /// externalizable object is the last thing in the input.
    RawRemainder,
}

/// Options for [`Amf0Decoder`](crate::amf0::Amf0Decoder) and
/// [`Amf3Decoder`](crate::amf3::Amf3Decoder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Resource limits.
    pub limits: Limits,
    /// AMF0: resolve reference markers (0x07) into copies of the referenced value
    /// (default `true`). When `false`, they are returned as
    /// [`Value::Reference`](crate::Value::Reference) and cyclic references are allowed.
    pub resolve_amf0_references: bool,
    /// AMF0: return an AMF3 value introduced by the avmplus marker (0x11) as
    /// [`Value::Avmplus`](crate::Value::Avmplus) instead of returning the inner
    /// value directly (default `false`).
    pub keep_avmplus_wrapper: bool,
    /// AMF0: share one set of AMF3 reference tables among all avmplus-switched
    /// values read by the same decoder. Default `false`: every 0x11 starts a
    /// fresh AMF3 context (strings, objects, traits), as the RTMP errata
    /// pseudocode (`decode_amf3()` per value) implies.
    pub share_amf3_context: bool,
    /// AMF3: handling of externalizable objects of unknown classes.
    pub externalizable: ExternalizableMode,
    /// AMF3: class names whose externalized payload is exactly one AMF3 value
    /// (for example Flex's `flex.messaging.io.ArrayCollection`). Empty by default;
    /// see [`DecodeOptions::with_flex_collections`].
    pub externalizable_value_classes: Vec<String>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            limits: Limits::default(),
            resolve_amf0_references: true,
            keep_avmplus_wrapper: false,
            share_amf3_context: false,
            externalizable: ExternalizableMode::Reject,
            externalizable_value_classes: Vec::new(),
        }
    }
}

impl DecodeOptions {
    /// The Flex collection classes whose `writeExternal` writes one AMF3 value.
    pub const FLEX_COLLECTIONS: [&'static str; 3] = [
        "flex.messaging.io.ArrayCollection",
        "flex.messaging.io.ArrayList",
        "flex.messaging.io.ObjectProxy",
    ];

    /// Adds [`DecodeOptions::FLEX_COLLECTIONS`] to the externalizable value classes.
    pub fn with_flex_collections(mut self) -> Self {
        self.externalizable_value_classes
            .extend(Self::FLEX_COLLECTIONS.iter().map(|s| s.to_string()));
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Options for [`Amf0Encoder`](crate::amf0::Amf0Encoder) and
/// [`Amf3Encoder`](crate::amf3::Amf3Encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Maximum nesting depth of the values being encoded (default 64). Deeper
    /// values fail with [`Error::DepthLimitExceeded`](crate::Error::DepthLimitExceeded).
    pub max_depth: usize,
    /// AMF0: write a reference (0x07) for an object, ECMA array or strict array
    /// that is bitwise-equal to one already written by this encoder (default `false`).
    pub amf0_references: bool,
    /// AMF3: write an object reference for an object-table value (object, array,
    /// date, XML, ByteArray, vector, dictionary) that is bitwise-equal to one
    /// already written in the same AMF3 context (default `false`). String and
    /// traits references are always used.
    pub amf3_object_references: bool,
    /// AMF0: write values that AMF0 cannot represent exactly (ByteArray, vectors,
    /// dictionaries, E4X XML, externalizable objects, objects with sealed traits)
    /// as an AMF3 value behind the avmplus marker 0x11 (default `true`). When
    /// `false`, such values fail with
    /// [`Error::NotRepresentable`](crate::Error::NotRepresentable).
    pub auto_avmplus: bool,
    /// AMF0: share one set of AMF3 reference tables among all avmplus-switched
    /// values written by the same encoder (default `false`, a fresh context per
    /// switch; must match the peer's [`DecodeOptions::share_amf3_context`]).
    pub share_amf3_context: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_depth: 64,
            amf0_references: false,
            amf3_object_references: false,
            auto_avmplus: true,
            share_amf3_context: false,
        }
    }
}
