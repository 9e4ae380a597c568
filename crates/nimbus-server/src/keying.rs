//! The keying workers: the Diffie-Hellman work of handshakes, off the
//! shards' packet path.
//!
//! Each shard's engine runs with `deferred_keying`: an IIKeying that passes
//! the cheap checks (cookie, sizes) becomes a [`KeyingJob`] queued in the
//! engine, fairly between source addresses and within the shard's budget
//! of keyings in flight (`limits.keyings_in_flight`). The shard hands the
//! jobs it takes out to this pool; a worker runs one (pure computation: key
//! agreement, certificate checks, the RIKeying) and sends the result back
//! to the shard's host as [`ShardMsg::Keying`]. So a burst of clients
//! offering expensive groups costs the workers' time, not the shards': the
//! shards keep serving established sessions.
//!
//! The pool's queue holds every shard's keyings in flight at once, so a
//! submission never finds it full in practice; if it does, the shard gives
//! the job back to its engine as abandoned (the client retransmits).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use rand_core::SeedableRng;
use rtmfp::{KeyingId, KeyingJob};
use rtmfp_tokio::HostHandle;

use crate::shard::{ShardCore, ShardMsg};

/// The workers and the queue to them.
#[derive(Debug)]
pub(crate) struct KeyingPool {
    tx: SyncSender<(usize, KeyingJob)>,
}

impl KeyingPool {
    /// Starts `workers` threads (at least one) answering the shards of
    /// `shards` (by shard number), with room for `capacity` jobs waiting.
    /// The threads end once the pool is dropped.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub(crate) fn start(
        workers: usize,
        capacity: usize,
        shards: Vec<HostHandle<ShardCore>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let shards = shards.clone();
            std::thread::Builder::new()
                .name(format!("nimbus-keying-{i}"))
                .spawn(move || work(&rx, &shards))?;
        }
        Ok(Self { tx })
    }

    /// Queues `job` for shard `shard`; gives back its ID when the queue is
    /// full or the workers are gone.
    pub(crate) fn submit(&self, shard: usize, job: KeyingJob) -> Result<(), KeyingId> {
        self.tx.try_send((shard, job)).map_err(|e| match e {
            TrySendError::Full((_, job)) | TrySendError::Disconnected((_, job)) => job.id(),
        })
    }
}

fn work(rx: &Mutex<Receiver<(usize, KeyingJob)>>, shards: &[HostHandle<ShardCore>]) {
    loop {
        // one worker waits in recv at a time; the others wait for the lock
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((shard, job)) = next else { return };
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(job.seed());
        let result = job.run(&mut rng);
        // waits for room in the shard's channel: a result is never dropped
        // (a stopped shard no longer wants it)
        if let Some(host) = shards.get(shard) {
            let _ = host.blocking_send(ShardMsg::Keying(result));
        }
    }
}
