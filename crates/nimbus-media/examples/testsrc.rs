//! Writes the test source as FLV: `testsrc [OUT.flv|-] [SECONDS] [WIDTHxHEIGHT] [FPS] [--realtime]`.
//!
//! `cargo run -p nimbus-phone --release --example testsrc -- - 0 --realtime | ffplay -`
//! streams forever (SECONDS 0) in real time.

use std::time::{Duration, Instant};

use nimbus_media::h264::EncoderConfig;
use nimbus_media::source::ClockDisplay;
use nimbus_media::{FlvSink, MediaKind, MediaSource, Paced, TestSource, TestSourceConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let realtime = args.iter().any(|a| a == "--realtime");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let out = pos.first().map_or("testsrc.flv", |s| s.as_str());
    let secs: u64 = pos.get(1).map_or(Ok(10), |s| s.parse())?;
    let mut video = EncoderConfig::default();
    if let Some(size) = pos.get(2) {
        let (w, h) = size.split_once('x').ok_or("size is WIDTHxHEIGHT")?;
        video.width = w.parse()?;
        video.height = h.parse()?;
    }
    if let Some(fps) = pos.get(3) {
        video.fps = fps.parse()?;
        video.idr_interval = video.fps * 2;
    }
    let cfg = TestSourceConfig {
        video: Some(video),
        duration: (secs > 0).then(|| Duration::from_secs(secs)),
        clock: if realtime {
            ClockDisplay::UtcTimeOfDay
        } else {
            ClockDisplay::StreamTime
        },
        ..TestSourceConfig::default()
    };
    let src = TestSource::new(cfg)?;
    let mut src: Box<dyn MediaSource> = if realtime {
        Box::new(Paced::new(src))
    } else {
        Box::new(src)
    };
    let mut sink = FlvSink::open(out, true, true)?;
    let started = Instant::now();
    let (mut key, mut keys, mut inter, mut inters, mut audio, mut last_ts) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u32);
    while let Some(tag) = src.next_tag()? {
        match tag.kind {
            MediaKind::Video if tag.is_sequence_header() => {}
            MediaKind::Video if tag.is_keyframe() => {
                key += tag.data.len() as u64;
                keys += 1;
            }
            MediaKind::Video => {
                inter += tag.data.len() as u64;
                inters += 1;
            }
            MediaKind::Audio => audio += tag.data.len() as u64,
            MediaKind::Data => {}
        }
        last_ts = tag.timestamp;
        sink.write(&tag)?;
        if realtime {
            sink.flush()?;
        }
    }
    sink.finish()?;
    let elapsed = started.elapsed();
    let dur = f64::from(last_ts.max(1)) / 1000.0;
    eprintln!(
        "{} key frames, {} B avg; {} P frames, {} B avg; video {:.1} kbit/s, audio {:.1} kbit/s; \
         {:.3} ms per video frame (wall, incl. audio and I/O)",
        keys,
        key / keys.max(1),
        inters,
        inter / inters.max(1),
        (key + inter) as f64 * 8.0 / dur / 1000.0,
        audio as f64 * 8.0 / dur / 1000.0,
        elapsed.as_secs_f64() * 1000.0 / (keys + inters).max(1) as f64,
    );
    Ok(())
}
