//! Stream relay bookkeeping: the server-wide table of published streams and
//! the media classification used to start late joiners at a keyframe.
//!
//! Media never goes through this table: the publisher's shard sends each
//! message once to every shard that has players of the stream (a bit mask it
//! keeps), and each shard fans it out to its own players. The table is
//! locked only when a stream is published, unpublished, played or stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rtmfp::SessionId;
use rtmfp_flash::message::{MSG_AUDIO, MSG_VIDEO};

/// A stream's server-wide name: `app/name`.
pub type StreamKey = Arc<str>;

/// Who publishes a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publisher {
    /// Shard.
    pub shard: usize,
    /// Session.
    pub session: SessionId,
    /// RTMP stream ID on that session.
    pub stream: u32,
}

#[derive(Debug, Default)]
struct Entry {
    publisher: Option<Publisher>,
    /// Players per shard.
    players: Vec<u32>,
}

/// The server-wide stream table.
#[derive(Debug)]
pub struct StreamTable {
    shards: usize,
    map: Mutex<HashMap<StreamKey, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StreamTable {
    /// A table for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            map: Mutex::default(),
        }
    }

    /// Makes `p` the publisher of `key`. Returns the mask of shards with
    /// players, or `None` when the stream already has a publisher.
    pub fn publish(&self, key: &StreamKey, p: Publisher) -> Option<u64> {
        let mut m = lock(&self.map);
        let e = m.entry(key.clone()).or_insert_with(|| Entry {
            publisher: None,
            players: vec![0; self.shards],
        });
        if e.publisher.is_some() {
            return None;
        }
        e.publisher = Some(p);
        Some(mask(&e.players))
    }

    /// Removes `p` as publisher of `key`; returns the mask of shards with
    /// players (to tell them), or `None` if `p` was not the publisher.
    pub fn unpublish(&self, key: &StreamKey, p: Publisher) -> Option<u64> {
        let mut m = lock(&self.map);
        let e = m.get_mut(key)?;
        if e.publisher != Some(p) {
            return None;
        }
        e.publisher = None;
        let players = mask(&e.players);
        if players == 0 {
            m.remove(key);
        }
        Some(players)
    }

    /// Adds a player on `shard`; returns the current publisher.
    pub fn play(&self, key: &StreamKey, shard: usize) -> Option<Publisher> {
        let mut m = lock(&self.map);
        let e = m.entry(key.clone()).or_insert_with(|| Entry {
            publisher: None,
            players: vec![0; self.shards],
        });
        if let Some(n) = e.players.get_mut(shard) {
            *n += 1;
        }
        e.publisher
    }

    /// Removes a player on `shard`; returns the publisher when that shard
    /// has no players left (to unsubscribe from it).
    pub fn stop(&self, key: &StreamKey, shard: usize) -> (bool, Option<Publisher>) {
        let mut m = lock(&self.map);
        let Some(e) = m.get_mut(key) else {
            return (true, None);
        };
        if let Some(n) = e.players.get_mut(shard) {
            *n = n.saturating_sub(1);
        }
        let last = e.players.get(shard).copied().unwrap_or(0) == 0;
        let publisher = e.publisher;
        if publisher.is_none() && mask(&e.players) == 0 {
            m.remove(key);
        }
        (last, publisher)
    }

    /// Number of streams with a publisher.
    pub fn published(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|e| e.publisher.is_some())
            .count()
    }
}

fn mask(players: &[u32]) -> u64 {
    players
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .fold(0, |m, (i, _)| m | (1u64 << i))
}

/// What a media message is, for keyframe gating and the header cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaClass {
    /// Codec configuration or metadata: always delivered, cached for late joiners.
    Config(ConfigSlot),
    /// A video keyframe.
    Keyframe,
    /// Other video.
    Video,
    /// Audio.
    Audio,
    /// Other data messages.
    Data,
}

/// Which cached header a config message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSlot {
    /// `onMetaData` / `@setDataFrame`.
    Metadata,
    /// AVC / HEVC decoder configuration.
    Video,
    /// AAC audio specific config.
    Audio,
}

/// Classifies one framed RTMP message.
pub fn classify(frame: &[u8]) -> MediaClass {
    let Some((&ty, rest)) = frame.split_first() else {
        return MediaClass::Data;
    };
    let body = rest.get(4..).unwrap_or(&[]);
    match ty {
        MSG_VIDEO => {
            let Some(&b0) = body.first() else {
                return MediaClass::Video;
            };
            let frame_type = b0 >> 4;
            let codec = b0 & 0x0f;
            // AVC (7) / HEVC (12) sequence header: packet type 0
            if matches!(codec, 7 | 12) && body.get(1) == Some(&0) {
                return MediaClass::Config(ConfigSlot::Video);
            }
            if frame_type == 1 {
                MediaClass::Keyframe
            } else {
                MediaClass::Video
            }
        }
        MSG_AUDIO => {
            // AAC (10) sequence header: packet type 0
            if body.first().map(|b| b >> 4) == Some(10) && body.get(1) == Some(&0) {
                MediaClass::Config(ConfigSlot::Audio)
            } else {
                MediaClass::Audio
            }
        }
        // AMF0 (18) or AMF3 (15) data: metadata when it names it
        18 | 15 => {
            let probe = &body[..body.len().min(32)];
            if contains(probe, b"onMetaData") || contains(probe, b"@setDataFrame") {
                MediaClass::Config(ConfigSlot::Metadata)
            } else {
                MediaClass::Data
            }
        }
        _ => MediaClass::Data,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The cached configuration messages of a stream.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// Metadata message.
    pub metadata: Option<Bytes>,
    /// Video decoder configuration.
    pub video: Option<Bytes>,
    /// Audio configuration.
    pub audio: Option<Bytes>,
}

impl Headers {
    /// Stores a config message.
    pub fn store(&mut self, slot: ConfigSlot, frame: Bytes) {
        match slot {
            ConfigSlot::Metadata => self.metadata = Some(frame),
            ConfigSlot::Video => self.video = Some(frame),
            ConfigSlot::Audio => self.audio = Some(frame),
        }
    }

    /// The cached messages, metadata first.
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> {
        [&self.metadata, &self.video, &self.audio]
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![ty, 0, 0, 0, 0];
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn classifies_media() {
        assert_eq!(
            classify(&frame(9, &[0x17, 0, 0, 0, 0])),
            MediaClass::Config(ConfigSlot::Video)
        );
        assert_eq!(
            classify(&frame(9, &[0x17, 1, 0, 0, 0])),
            MediaClass::Keyframe
        );
        assert_eq!(classify(&frame(9, &[0x27, 1])), MediaClass::Video);
        assert_eq!(
            classify(&frame(8, &[0xaf, 0, 0x12, 0x10])),
            MediaClass::Config(ConfigSlot::Audio)
        );
        assert_eq!(classify(&frame(8, &[0xaf, 1, 1])), MediaClass::Audio);
        assert_eq!(classify(&frame(8, &[0xb2, 1])), MediaClass::Audio);
        let meta = frame(18, b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData");
        assert_eq!(classify(&meta), MediaClass::Config(ConfigSlot::Metadata));
        assert_eq!(classify(&frame(18, b"\x02\x00\x04onIm")), MediaClass::Data);
        for junk in [&[][..], &[9], &[9, 0, 0], &[8, 0, 0, 0, 0]] {
            let _ = classify(junk);
        }
    }

    #[test]
    fn table_tracks_publishers_and_player_shards() {
        let t = StreamTable::new(4);
        let k: StreamKey = "live/a".into();
        let p = Publisher {
            shard: 1,
            session: SessionId(5),
            stream: 1,
        };
        assert_eq!(t.play(&k, 2), None);
        assert_eq!(t.publish(&k, p), Some(0b100));
        assert_eq!(t.publish(&k, Publisher { shard: 0, ..p }), None);
        assert_eq!(t.play(&k, 3), Some(p));
        assert_eq!(t.stop(&k, 2), (true, Some(p)));
        assert_eq!(t.unpublish(&k, p), Some(0b1000));
        assert_eq!(t.published(), 0);
        assert_eq!(t.stop(&k, 3), (true, None));
        assert!(lock(&t.map).is_empty());
    }
}
