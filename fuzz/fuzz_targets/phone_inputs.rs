//! The phone's parsers and its sans-IO core: reg.cgi HTTP replies and
//! registry URLs, the server URL of the command line, `onRelay` arguments,
//! then (by the first byte) either the call-signalling machine fed arbitrary
//! relay messages, commands and timeouts, or a whole `PhoneCore` fed
//! arbitrary datagrams (raw, or plain packets encrypted with the Flash
//! Default Session Key so they reach the handshake parser), timeouts and
//! user commands.
#![no_main]

mod input;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use input::Input;
use libfuzzer_sys::fuzz_target;
use nimbus_phone::call::{parse_relay_args, Action, CallMachine, CallState, Message};
use nimbus_phone::cli::server_host_port;
use nimbus_phone::phone::{PhoneConfig, PhoneCore};
use nimbus_phone::registry::{
    parse_http_reply, parse_lookup_reply, parse_register_reply, RegistryClient,
};
use rand_core::{RngCore, SeedableRng};
use rtmfp::PacketCrypto;
use rtmfp_flash::{DhGroup, DhKeyPair, FlashPacketCrypto, FlashProfile};

impl Input<'_> {
    /// A short string: a well-known word or arbitrary text.
    fn string(&mut self) -> String {
        const WORDS: [&str; 10] = [
            "invite", "cancel", "accept", "reject", "bye", "ok", "alice", "bob", "", "INVITE",
        ];
        match self.byte().unwrap_or(0) {
            b @ 0..=127 => WORDS[usize::from(b) % WORDS.len()].to_string(),
            128..=191 => PEERS[usize::from(self.byte().unwrap_or(0)) % PEERS.len()].to_string(),
            _ => String::from_utf8_lossy(self.bytes(64, false)).into_owned(),
        }
    }
}

const PEERS: [&str; 4] = [
    "0000000000000000000000000000000000000000000000000000000000000001",
    "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789",
    "BOB-ID",
    "",
];

fn parsers(data: &[u8]) {
    if let Ok((status, body)) = parse_http_reply(data) {
        // the body never grows past the reply (de-chunking only drops bytes,
        // lossy UTF-8 may triple invalid ones)
        assert!(body.len() <= data.len() * 3);
        let _ = status;
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_register_reply(&text);
    if let Ok(Some(id)) = parse_lookup_reply(&text) {
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    let _ = RegistryClient::new(&text);
    let _ = RegistryClient::new(&format!("http://{text}"));
    let _ = server_host_port(&text);
    if let Ok((host, _port)) = server_host_port(&format!("rtmfp://{text}")) {
        assert!(host.len() <= text.len());
    }
    let args: Vec<&str> = text.split('\u{0}').take(8).collect();
    if let Some((m, name)) = parse_relay_args(&args) {
        assert_eq!(m.as_str(), args[0]);
        assert_eq!(name, args.get(1).copied());
    }
}

/// The signalling machine fed arbitrary relay messages, commands and
/// timeouts; checks the invariants of its documentation.
fn call_machine(mut inp: Input<'_>) {
    let start = Instant::now();
    let mut now = start;
    let mut m = CallMachine::new("me");
    let mut open = 0i64;
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 256 {
            break;
        }
        let before = m.state();
        let before_peer = m.peer().map(str::to_owned);
        let out = match op % 8 {
            0 => {
                let peer = inp.string();
                m.call(now, "me", &peer)
            }
            1 | 2 => {
                let from = inp.string();
                let n = inp.byte().unwrap_or(0) % 4;
                let args: Vec<String> = (0..n).map(|_| inp.string()).collect();
                m.on_relay(now, &from, &args)
            }
            3 => m.accept(now),
            4 => m.reject(now),
            5 => m.hangup(now),
            6 => {
                let to = inp.string();
                m.relay_failed(now, &to)
            }
            _ => {
                now += Duration::from_millis(u64::from(inp.u16()) * 10);
                m.handle_timeout(now)
            }
        };
        let after = m.state();
        assert_eq!(after == CallState::Idle, m.peer().is_none());
        assert_eq!(
            m.poll_timeout().is_some(),
            matches!(
                after,
                CallState::Calling | CallState::Ringing | CallState::Ending
            )
        );
        if before != CallState::Idle && after != CallState::Idle {
            assert_eq!(before_peer.as_deref(), m.peer());
        }
        for a in &out {
            match a {
                Action::SendRelay { to_peer, args } => {
                    assert_eq!(args.len(), 2);
                    assert!(Message::parse(&args[0]).is_some());
                    assert_eq!(args[1], "me");
                    assert!(!to_peer.is_empty());
                }
                Action::Event(nimbus_phone::call::Event::Ended) => open -= 1,
                Action::Event(nimbus_phone::call::Event::Incoming { .. }) => open += 1,
                Action::Event(_) => {}
            }
        }
        if op % 8 == 0 && before == CallState::Idle {
            open += 1;
        }
        // every call that begins ends exactly once, when the machine is idle
        assert_eq!(open, i64::from(after != CallState::Idle));
    }
}

/// A plain RTMFP packet encrypted with the Default Session Key, for session 0.
fn default_key_packet(plain: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    d.extend_from_slice(plain);
    FlashPacketCrypto::default_key().encrypt(&mut d, 4);
    let ssid = rtmfp::wire::scramble_session_id(0, &d[4..]);
    d[..4].copy_from_slice(&ssid.to_be_bytes());
    d
}

/// The phone's static DH keys, generated once per process: generating them
/// costs several milliseconds, far more than the rest of an iteration.
fn static_keys() -> &'static [DhKeyPair] {
    static KEYS: OnceLock<Vec<DhKeyPair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        // the client's default groups 16, 14 and 2
        [DhGroup::Modp4096, DhGroup::Modp2048, DhGroup::Modp1024]
            .into_iter()
            .map(|g| DhKeyPair::generate(g, &mut rng))
            .collect()
    })
}

/// What `driver::new_core` builds, with the cached static keys and a fixed
/// wall clock (so that runs reproduce).
fn fast_core(cfg: PhoneConfig, now: Instant) -> Option<PhoneCore> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let mut b = FlashProfile::client();
    for k in static_keys() {
        b = b.static_key(k.clone());
    }
    let profile = b.build(&mut rng).ok()?;
    let engine_rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(rng.next_u64()));
    Some(PhoneCore::new(
        cfg,
        profile,
        engine_rng,
        now,
        1_700_000_000_000.0,
    ))
}

/// A whole phone fed datagrams, timeouts and user commands; `driver`: built
/// by `driver::new_core` itself (slow: new keys every time).
fn phone_core(mut inp: Input<'_>, driver: bool) {
    let server: SocketAddr = "127.0.0.1:1935".parse().unwrap();
    let others: [SocketAddr; 3] = [
        server,
        "127.0.0.1:40000".parse().unwrap(),
        "[::1]:5".parse().unwrap(),
    ];
    let cfg = PhoneConfig::new("alice", "rtmfp://127.0.0.1:1935/phone", vec![server]);
    let mut now = Instant::now();
    let core = if driver {
        nimbus_phone::driver::new_core(cfg, Some(7)).ok()
    } else {
        fast_core(cfg, now)
    };
    let Some(mut core) = core else {
        return;
    };
    if driver {
        now = Instant::now();
    }
    core.start(now);
    let mut buf = Vec::new();
    let mut steps = 0;
    loop {
        let mut n = 0;
        while core.poll_transmit(now, &mut buf).is_some() {
            n += 1;
            assert!(n < 10_000, "poll_transmit does not stop");
        }
        let mut n = 0;
        while core.poll_event().is_some() {
            n += 1;
            assert!(n < 100_000, "poll_event does not stop");
        }
        let _ = core.poll_timeout();
        steps += 1;
        let Some(op) = inp.byte() else { break };
        if steps > 128 {
            break;
        }
        match op % 12 {
            0..=2 => {
                let from = others[usize::from(op >> 4) % others.len()];
                let plain = inp.bytes(255, false);
                core.handle_datagram(now, from, &default_key_packet(plain));
            }
            3 => {
                let from = others[usize::from(op >> 4) % others.len()];
                let raw = inp.bytes(255, false);
                core.handle_datagram(now, from, raw);
            }
            4 | 5 => {
                now += Duration::from_millis(u64::from(inp.u16()));
                core.handle_timeout(now);
            }
            6 => {
                let name = inp.string();
                core.call(now, &name);
            }
            7 => core.accept(now),
            8 => core.reject(now),
            9 => core.hangup(now),
            10 => {
                let text = inp.string();
                core.say(now, &text);
            }
            _ => {
                let name = inp.string();
                let id = inp.string();
                let id = (op & 0x10 != 0).then_some(id.as_str());
                core.registry_lookup_result(now, &name, id);
            }
        }
    }
    core.quit(now);
    while core.poll_transmit(now, &mut buf).is_some() {}
    while core.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0..=2 => call_machine(Input(rest)),
        3..=6 => phone_core(Input(rest), false),
        _ => phone_core(Input(rest), true),
    }
});
