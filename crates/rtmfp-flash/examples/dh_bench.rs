//! Measures Diffie-Hellman modular exponentiation per group — key pair
//! generation (g^x) and agreement (y^x), with the short exponents the
//! profile uses — and packet encryption + decryption throughput for each
//! HMAC / sequence-number setting.
//! Run with `cargo run --release -p rtmfp-flash --example dh_bench`.

use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use rtmfp::PacketCrypto;
use rtmfp_flash::{derive_session_keys, DhGroup, DhKeyPair, FlashPacketCrypto, Negotiated};

fn main() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    println!("group                      exp bits   keygen      agree");
    for g in DhGroup::ALL.into_iter().rev() {
        let far = DhKeyPair::generate(g, &mut rng);
        let n = match g {
            DhGroup::Modp4096 => 20,
            DhGroup::Modp2048 => 60,
            _ => 150,
        };
        let t = Instant::now();
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(DhKeyPair::generate(g, &mut rng));
        }
        let keygen = t.elapsed() / n as u32;
        let t = Instant::now();
        for k in &keys {
            std::hint::black_box(k.shared_secret(far.public_key()).unwrap());
        }
        let agree = t.elapsed() / n as u32;
        println!(
            "{:<26} {:>8}   {:>8.3} ms {:>8.3} ms",
            g.to_string(),
            g.exponent_bits(),
            ms(keygen),
            ms(agree)
        );
    }
    packets();
}

fn packets() {
    println!();
    println!("packet crypto, 1200-byte datagrams, encrypt + decrypt");
    for (name, hmac, sseq) in [
        ("checksum", 0, false),
        ("checksum + SSEQ", 0, true),
        ("HMAC-16", 16, false),
        ("HMAC-16 + SSEQ", 16, true),
    ] {
        let n = Negotiated {
            send_hmac_len: hmac,
            recv_hmac_len: hmac,
            send_sseq: sseq,
            recv_sseq: sseq,
        };
        let m = derive_session_keys(b"secret", b"a", b"b", n);
        let mut tx = FlashPacketCrypto::new(&m);
        let mut rx = FlashPacketCrypto::new(&m.reversed());
        let plain = vec![0x5au8; 1200 - 4 - tx.overhead()];
        let count = 100_000;
        let t = Instant::now();
        let mut buf = Vec::with_capacity(1300);
        for _ in 0..count {
            buf.clear();
            buf.extend_from_slice(&[0; 4]);
            buf.extend_from_slice(&plain);
            tx.encrypt(&mut buf, 4);
            rx.decrypt(&mut buf[4..]).unwrap();
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "{:<18} {:>8.1} MB/s of datagrams ({:.2} us per packet both ways)",
            name,
            (count * 1200) as f64 / el / 1e6,
            el * 1e6 / count as f64
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
