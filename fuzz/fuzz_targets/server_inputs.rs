//! The rendezvous server's own parsers: connect URLs and arguments (app,
//! query, developer keys), signed tokens, media classification of relayed
//! frames, and the TOML configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_server::config::AppConfig;
use nimbus_server::policy::{decide, verify_token, ConnectRequest};
use nimbus_server::ServerConfig;
use flash_amf::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1}');
    let url = parts.next().unwrap_or("");
    let app = parts.next();
    let args: Vec<Value> = parts
        .map(|a| Value::String(a.to_string()))
        .collect();
    let req = ConnectRequest::from_connect(Some(url), app, &args);
    assert!(req.path.len() <= 8 && req.query.len() <= 32 && req.args.len() <= 16);
    let apps = vec![
        AppConfig::open("live"),
        AppConfig::developer_key("k", ["key"]),
        AppConfig::token("t", "0123456789abcdef"),
        AppConfig::registry("r"),
    ];
    let _ = decide(&apps, &req, 1_000);
    let _ = verify_token("0123456789abcdef", "t", &text, 1_000);
    let _ = nimbus_server::streams::classify(data);
    if data.len() < 4096 {
        let _ = ServerConfig::from_toml(&text);
    }
});
