//! WebRTC frames ↔ FLV tags (`nimbus_media::rtc`) on arbitrary bytes:
//! Annex B access units into `H264ToFlv`, FLV video tags into `FlvToH264`,
//! FLV audio tags into `FlvToG711` (both laws), and what comes out of one
//! direction back into the other. Nothing may panic; outputs stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_media::g711::Law;
use nimbus_media::rtc::{
    annexb_nals, g711_tag, FlvToG711, FlvToH264, H264ToFlv, RtpClock, MAX_ACCESS_UNIT,
};
use nimbus_media::{MediaKind, MediaTag};

fuzz_target!(|data: &[u8]| {
    let mut up = H264ToFlv::new();
    let mut down = FlvToH264::new();
    let mut mu = FlvToG711::new(Law::Mu);
    let mut a = FlvToG711::new(Law::A);
    let mut clock = RtpClock::new(90_000);
    let mut frames = Vec::new();
    let mut rest = data;
    let mut ts = 0u32;
    while let Some((&op, r)) = rest.split_first() {
        let n = usize::from(r.first().copied().unwrap_or(0)) * 4;
        let n = n.min(r.len());
        let (chunk, r2) = r.split_at(n);
        rest = r2;
        ts = ts.wrapping_add(u32::from(op));
        let _ = clock.to_ms(u64::from(op) << 24, u64::from(ts));
        match op % 5 {
            0 => {
                let _ = annexb_nals(chunk).count();
                let out = up.push(ts, chunk);
                for t in &out.tags {
                    assert!(t.data.len() <= MAX_ACCESS_UNIT + 64);
                    if let Ok(Some(f)) = down.push(t) {
                        assert!(f.data.len() <= MAX_ACCESS_UNIT);
                    }
                }
            }
            1 => {
                let tag = MediaTag::new(MediaKind::Video, ts, chunk.to_vec());
                if let Ok(Some(f)) = down.push(&tag) {
                    let _ = up.push(f.timestamp, &f.data);
                }
            }
            2 | 3 => {
                let tag = MediaTag::new(MediaKind::Audio, ts, chunk.to_vec());
                let conv = if op % 5 == 2 { &mut mu } else { &mut a };
                let _ = conv.push(&tag, &mut frames);
            }
            _ => {
                let law = if op & 0x80 == 0 { Law::Mu } else { Law::A };
                let tag = g711_tag(law, ts, chunk);
                let _ = mu.push(&tag, &mut frames);
            }
        }
        assert!(frames.len() < 1 << 20);
        frames.clear();
    }
});
