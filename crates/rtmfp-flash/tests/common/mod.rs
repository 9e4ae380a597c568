//! Parts the simulation tests share: command messages and the proptest
//! strategies for hostile flows.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use flash_amf::{Command, Value};
use proptest::prelude::*;
use rtmfp_flash::message::{Body, FlowMetadata, RtmpMessage};

/// An encoded command message on stream 0.
pub fn cmd(name: &str, txn: f64, args: Vec<Value>) -> Bytes {
    let mut c = Command::new(name, txn, Value::Null);
    c.arguments = args;
    RtmpMessage::from_body(0, &Body::command(c))
        .unwrap()
        .encode()
}

/// Command arguments: numbers, strings, null, booleans, and `extra` values.
pub fn arbitrary_argument(extra: Vec<Value>) -> impl Strategy<Value = Value> {
    let mut arms = vec![
        any::<f64>().prop_map(Value::Number).boxed(),
        ".{0,12}".prop_map(Value::String).boxed(),
        Just(Value::Null).boxed(),
        any::<bool>().prop_map(Value::Bool).boxed(),
    ];
    arms.extend(extra.into_iter().map(|v| Just(v).boxed()));
    proptest::strategy::Union::new(arms)
}

/// Messages of a type from `types` with arbitrary timestamps and payloads.
pub fn arbitrary_typed_message(types: impl Strategy<Value = u8>) -> impl Strategy<Value = Bytes> {
    (
        types,
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(ty, ts, p)| RtmpMessage::new(ty, ts, p).encode())
}

/// Raw bytes that are rarely a message at all.
pub fn arbitrary_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from)
}

/// Flow metadata: a valid stream's, or raw bytes.
pub fn arbitrary_metadata() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u32..4).prop_map(|s| FlowMetadata::new(s).encode()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ]
}
