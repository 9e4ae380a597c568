//! Fuzzes the RTMFP wire parsers: multiplex, packet header, every chunk,
//! ack ranges, option lists, and re-encoding of what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtmfp::wire::{demultiplex, options, Chunk, Packet};

fuzz_target!(|data: &[u8]| {
    let _ = demultiplex(data);
    if let Ok(p) = Packet::parse(data) {
        for (_, c) in p.chunks() {
            if let Ok(c) = c {
                // our encoding is canonical: parse(encode(c)) re-encodes to
                // the same bytes (the input may use non-minimal VLUs)
                let mut out = Vec::new();
                if c.encode(&mut out).is_ok() {
                    let again = Chunk::parse(out[0], &out[3..]).expect("own encoding parses");
                    let mut out2 = Vec::new();
                    again.encode(&mut out2).expect("re-encodes");
                    assert_eq!(out, out2);
                }
                match c {
                    Chunk::Ack(a) => {
                        for r in a.ranges().take(10_000) {
                            assert!(r.0 <= r.1);
                        }
                    }
                    Chunk::UserData(u) => {
                        if let Some(o) = u.options {
                            for x in options(o) {
                                let _ = x;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
});
