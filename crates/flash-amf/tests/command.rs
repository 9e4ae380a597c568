//! RTMP command and data message payloads, with hand-computed bytes.

use flash_amf::command::{
    decode_extended, decode_message_values, Amf3Switch, Command, DataMessage, MSG_COMMAND_AMF0,
    MSG_COMMAND_AMF3,
};
use flash_amf::{EcmaArray, Error, Object, Value};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn connect_object() -> Object {
    Object::new()
        .with("app", "live")
        .with("flashVer", "FMLE/3.0")
        .with("tcUrl", "rtmp://localhost/live")
        .with("fpad", false)
        .with("objectEncoding", 0.0)
}

fn connect_bytes() -> Vec<u8> {
    cat(&[
        &[0x02, 0x00, 0x07],
        b"connect",
        &[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0],
        &[0x03],
        &[0x00, 0x03],
        b"app",
        &[0x02, 0x00, 0x04],
        b"live",
        &[0x00, 0x08],
        b"flashVer",
        &[0x02, 0x00, 0x08],
        b"FMLE/3.0",
        &[0x00, 0x05],
        b"tcUrl",
        &[0x02, 0x00, 0x15],
        b"rtmp://localhost/live",
        &[0x00, 0x04],
        b"fpad",
        &[0x01, 0x00],
        &[0x00, 0x0E],
        b"objectEncoding",
        &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x00, 0x00, 0x09],
    ])
}

#[test]
fn connect_amf0_known_answer() {
    let cmd = Command::connect(connect_object());
    assert_eq!(cmd.to_amf0().unwrap(), connect_bytes());
    let back = Command::from_amf0(&connect_bytes()).unwrap();
    assert_eq!(back, cmd);
    assert_eq!(back.name, "connect");
    assert_eq!(back.transaction_id, 1.0);
    assert_eq!(
        back.command_object.get("tcUrl").and_then(Value::as_str),
        Some("rtmp://localhost/live")
    );
    assert!(back.arguments.is_empty());
    assert_eq!(
        decode_message_values(MSG_COMMAND_AMF0, &connect_bytes())
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn connect_with_extra_arguments() {
    let cmd = Command::connect(Object::new().with("app", "a"))
        .with_arg("user")
        .with_arg(Value::Null)
        .with_arg(42.0);
    let back = Command::from_amf0(&cmd.to_amf0().unwrap()).unwrap();
    assert_eq!(back, cmd);
    assert_eq!(back.arguments.len(), 3);
}

#[test]
fn result_reply_round_trip() {
    let info = Object::new()
        .with("level", "status")
        .with("code", "NetConnection.Connect.Success")
        .with("description", "Connection succeeded.")
        .with("objectEncoding", 3.0);
    let props = Object::new()
        .with("fmsVer", "FMS/3,5,7,7009")
        .with("capabilities", 31.0);
    let reply = Command::new("_result", 1.0, Value::Object(props)).with_arg(Value::Object(info));
    let back = Command::from_amf0(&reply.to_amf0().unwrap()).unwrap();
    assert_eq!(back, reply);
    // The same through the AMF3 (type 17) form, with either switch policy.
    for policy in [Amf3Switch::AfterHeader, Amf3Switch::WhenNeeded] {
        let back = Command::from_amf3(&reply.to_amf3(policy).unwrap()).unwrap();
        assert_eq!(back, reply);
    }
}

#[test]
fn amf3_command_known_answer() {
    let cmd = Command::new("test", 0.0, Value::Null).with_arg("x");
    // Format selector 0, name and transaction id in AMF0, then each further value
    // behind the avmplus marker.
    let after_header = cat(&[
        &[0x00],
        &[0x02, 0x00, 0x04],
        b"test",
        &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x11, 0x01],
        &[0x11, 0x06, 0x03, b'x'],
    ]);
    assert_eq!(cmd.to_amf3(Amf3Switch::AfterHeader).unwrap(), after_header);
    assert_eq!(Command::from_amf3(&after_header).unwrap(), cmd);
    let when_needed = cat(&[
        &[0x00],
        &[0x02, 0x00, 0x04],
        b"test",
        &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x05],
        &[0x02, 0x00, 0x01, b'x'],
    ]);
    assert_eq!(cmd.to_amf3(Amf3Switch::WhenNeeded).unwrap(), when_needed);
    assert_eq!(Command::from_amf3(&when_needed).unwrap(), cmd);
    assert_eq!(
        decode_message_values(MSG_COMMAND_AMF3, &when_needed).unwrap(),
        vec![
            Value::from("test"),
            Value::Number(0.0),
            Value::Null,
            Value::from("x")
        ]
    );
}

#[test]
fn amf3_command_with_switched_name_and_integer_transaction_id() {
    // Every value switched, including the name; transaction id as AMF3 integer.
    let bytes = cat(&[
        &[0x00, 0x11, 0x06, 0x09],
        b"test",
        &[0x11, 0x04, 0x07, 0x11, 0x01],
    ]);
    let cmd = Command::from_amf3(&bytes).unwrap();
    assert_eq!(cmd.name, "test");
    assert_eq!(cmd.transaction_id, 7.0);
    assert_eq!(cmd.command_object, Value::Null);
}

#[test]
fn extended_format_selector() {
    assert!(matches!(
        decode_extended(&[0x01, 0x05]),
        Err(Error::UnknownFormatSelector(1))
    ));
    assert!(matches!(
        decode_extended(&[]),
        Err(Error::MalformedMessage(_))
    ));
    assert_eq!(decode_extended(&[0x00]).unwrap(), vec![]);
}

#[test]
fn malformed_commands() {
    assert!(Command::from_amf0(&[]).is_err());
    // Name is a number.
    assert!(Command::from_amf0(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // No transaction id.
    assert!(Command::from_amf0(&[0x02, 0x00, 0x01, b'a']).is_err());
    // No command object: reads as null.
    let c = Command::from_amf0(&[0x02, 0x00, 0x01, b'a', 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(c.command_object, Value::Null);
}

#[test]
fn set_data_frame_known_answer() {
    let meta = Value::EcmaArray(EcmaArray::new().with("duration", 0.0).with("width", 640.0));
    let msg = DataMessage::set_data_frame(meta.clone());
    let bytes = cat(&[
        &[0x02, 0x00, 0x0D],
        b"@setDataFrame",
        &[0x02, 0x00, 0x0A],
        b"onMetaData",
        &[0x08, 0, 0, 0, 2],
        &[0x00, 0x08],
        b"duration",
        &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x00, 0x05],
        b"width",
        &[0x00, 0x40, 0x84, 0, 0, 0, 0, 0, 0],
        &[0x00, 0x00, 0x09],
    ]);
    assert_eq!(msg.to_amf0().unwrap(), bytes);
    let back = DataMessage::from_amf0(&bytes).unwrap();
    assert_eq!(back, msg);
    let stripped = back.strip_set_data_frame();
    assert_eq!(stripped, DataMessage::on_meta_data(meta.clone()));
    // Stripped form is exactly the bytes after the first value.
    assert_eq!(stripped.to_amf0().unwrap(), &bytes[16..]);
    // AMF3 data message (type 15) round trip.
    let amf3 = msg.to_amf3(Amf3Switch::AfterHeader).unwrap();
    assert_eq!(&amf3[..16], &[&[0x00][..], &bytes[..15]].concat()[..]);
    assert_eq!(DataMessage::from_amf3(&amf3).unwrap(), msg);
    // Non-@setDataFrame messages are unchanged by stripping.
    let im = DataMessage::new("onIm", vec![Value::from("hi")]);
    assert_eq!(im.clone().strip_set_data_frame(), im);
}
