//! RFC 7425 §5 message layer: round trips, hostile input, and the recorded
//! exchange with rtmfp-cpp's `tcserver` decoded with the message layer.

use bytes::Bytes;
use flash_amf::{Command, DataMessage, Value};
use proptest::prelude::*;
use rtmfp_flash::message::{
    parse_connect_url, Body, FlowMetadata, ReceiveIntent, RtmpMessage, UserControl,
};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn user_control() -> impl Strategy<Value = UserControl> {
    prop_oneof![
        any::<u32>().prop_map(UserControl::StreamBegin),
        any::<u32>().prop_map(UserControl::StreamEof),
        any::<u32>().prop_map(UserControl::StreamDry),
        (any::<u32>(), any::<u32>()).prop_map(|(stream_id, buffer_ms)| {
            UserControl::SetBufferLength {
                stream_id,
                buffer_ms,
            }
        }),
        any::<u32>().prop_map(UserControl::StreamIsRecorded),
        any::<u32>().prop_map(UserControl::PingRequest),
        any::<u32>().prop_map(UserControl::PingResponse),
        any::<u32>().prop_map(UserControl::BufferEmpty),
        any::<u32>().prop_map(UserControl::BufferReady),
        (any::<u32>(), any::<u32>())
            .prop_map(|(sync_id, count)| UserControl::FlowSync { sync_id, count }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(server_ms, peer_ms)| UserControl::SetKeepalive { server_ms, peer_ms }),
        (100u16.., proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(event_type, d)| {
            UserControl::Other {
                event_type,
                data: d.into(),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn metadata_round_trip(stream_id in any::<u32>(), network in any::<bool>()) {
        let intent = if network { ReceiveIntent::Network } else { ReceiveIntent::Sequence };
        let m = FlowMetadata::new(stream_id).with_intent(intent);
        let enc = m.encode();
        prop_assert_eq!(&enc[..2], b"TC");
        prop_assert_eq!(FlowMetadata::decode(&enc).unwrap(), m);
    }

    #[test]
    fn framing_round_trip(ty in any::<u8>(), ts in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let m = RtmpMessage::new(ty, ts, payload.clone());
        let enc = m.encode();
        prop_assert_eq!(enc.len(), 5 + payload.len());
        prop_assert_eq!(RtmpMessage::decode(&enc).unwrap(), m);
    }

    #[test]
    fn user_control_round_trip(u in user_control(), ts in any::<u32>()) {
        let m = RtmpMessage::from_body(ts, &Body::UserControl(u.clone())).unwrap();
        prop_assert_eq!(m.message_type, 4);
        prop_assert_eq!(RtmpMessage::decode(&m.encode()).unwrap().body().unwrap(), Body::UserControl(u));
    }

    #[test]
    fn command_and_data_round_trip(name in "[a-zA-Z_]{1,12}", tid in 0u32..1000, s in ".{0,20}", n in any::<f64>().prop_filter("not NaN", |x| !x.is_nan()), amf3 in any::<bool>()) {
        let c = Command::new(name.clone(), f64::from(tid), Value::Null).with_arg(s.as_str()).with_arg(n);
        let body = Body::Command { command: c, amf3 };
        let m = RtmpMessage::from_body(7, &body).unwrap();
        prop_assert_eq!(m.message_type, if amf3 { 17 } else { 20 });
        prop_assert_eq!(RtmpMessage::decode(&m.encode()).unwrap().body().unwrap(), body);
        let d = Body::Data { message: DataMessage::new(name, vec![Value::from(s.as_str()), Value::Number(n)]), amf3 };
        let m = RtmpMessage::from_body(9, &d).unwrap();
        prop_assert_eq!(m.message_type, if amf3 { 15 } else { 18 });
        prop_assert_eq!(RtmpMessage::decode(&m.encode()).unwrap().body().unwrap(), d);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = FlowMetadata::decode(&data);
        let _ = UserControl::decode(&data);
        let b = Bytes::from(data.clone());
        if let Ok(m) = RtmpMessage::decode(&b) {
            let _ = m.body();
        }
        for ty in [4u8, 8, 9, 15, 17, 18, 20, 1, 22] {
            let _ = Body::decode(ty, &b);
        }
        let _ = parse_connect_url(&String::from_utf8_lossy(&data));
    }

    #[test]
    fn tc_prefixed_bytes_never_panic(rest in proptest::collection::vec(any::<u8>(), 0..20)) {
        let mut md = b"TC".to_vec();
        md.extend(rest);
        let _ = FlowMetadata::decode(&md);
    }
}

/// The flow messages of a real exchange with rtmfp-cpp's `tcserver`
/// (recorded by `examples/tc_client.rs --record`): connect, setPeerInfo,
/// two createStream, play and publish of "demo", 3 frames of audio and video
/// relayed back.
#[test]
fn tcserver_netconnection_vector() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/tcserver_netconnection.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut commands = Vec::new();
    let mut statuses = Vec::new();
    let (mut audio, mut video) = (Vec::new(), Vec::new());
    let mut user_controls = Vec::new();
    for m in v["messages"].as_array().unwrap() {
        let out = m["dir"] == "out";
        let md = FlowMetadata::decode(&unhex(m["metadata"].as_str().unwrap())).unwrap();
        let raw = Bytes::from(unhex(m["message"].as_str().unwrap()));
        let msg = RtmpMessage::decode(&raw).unwrap();
        // our encoder reproduces the server's bytes
        assert_eq!(msg.encode(), raw);
        let body = msg.body().unwrap();
        let (ty, payload) = body.encode().unwrap();
        assert_eq!(ty, msg.message_type);
        if !matches!(body, Body::Command { .. } | Body::Data { .. }) {
            assert_eq!(payload, msg.payload);
        }
        match body {
            Body::Command { command, .. } => {
                if command.name == "onStatus" {
                    let code = command.arguments[0].get("code").cloned();
                    statuses.push((md.stream_id, code));
                } else if command.name == "_result" && !out {
                    if let Some(code) = command.arguments[0].get("code") {
                        statuses.push((0, Some(code.clone())));
                    }
                }
                commands.push((out, md.stream_id, command.name));
            }
            Body::Audio(p) if !out => audio.push((md.stream_id, msg.timestamp, p)),
            Body::Video(p) if !out => video.push((md.stream_id, msg.timestamp, p)),
            Body::UserControl(u) => user_controls.push(u),
            _ => {}
        }
    }
    let sent: Vec<&str> = commands
        .iter()
        .filter(|c| c.0)
        .map(|c| c.2.as_str())
        .collect();
    assert_eq!(
        sent,
        [
            "connect",
            "setPeerInfo",
            "createStream",
            "createStream",
            "play",
            "publish"
        ]
    );
    let code = |s: &str| Some(Value::from(s));
    assert!(statuses.contains(&(0, code("NetConnection.Connect.Success"))));
    assert!(statuses
        .iter()
        .any(|(s, c)| *s != 0 && *c == code("NetStream.Play.Start")));
    assert!(statuses
        .iter()
        .any(|(s, c)| *s != 0 && *c == code("NetStream.Publish.Start")));
    assert!(user_controls
        .iter()
        .any(|u| matches!(u, UserControl::StreamBegin(_))));
    // 3 frames + sequence header of each kind came back, in order
    assert_eq!(audio.len(), 4);
    assert_eq!(video.len(), 4);
    assert_eq!(
        &video[1].2[..],
        b"\x17\x01\x00\x00\x00\x00\x00\x00\x02\x65\x00"
    );
    assert_eq!(
        video.iter().map(|v| v.1).collect::<Vec<_>>(),
        [0, 0, 40, 80]
    );
}
