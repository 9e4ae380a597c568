//! Test identities: engines with a seeded identity and randomness, the
//! same for every test that asks for the same seed.
//!
//! The engine's RNG is the one the identity was drawn from (ChaCha8 from
//! `seed`), so a seed fixes both.

use std::time::Instant;

use rand_core::SeedableRng;
use rtmfp::{Endpoint, EndpointConfig, PlainProfile};
use rtmfp_flash::{FlashProfile, FlashProfileBuilder};

/// An engine with the plain test profile (its certificate is `name`).
pub fn plain(name: &str, seed: u64, now: Instant) -> Endpoint {
    plain_with(
        name.as_bytes().to_vec(),
        EndpointConfig::default(),
        seed,
        now,
    )
}

/// [`plain`] with any certificate bytes and an engine configuration.
pub fn plain_with(cert: Vec<u8>, config: EndpointConfig, seed: u64, now: Instant) -> Endpoint {
    Endpoint::new(
        config,
        Box::new(PlainProfile::new(cert)),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        now,
    )
}

/// An engine with a Flash identity built by `builder`.
///
/// # Panics
/// When the builder's settings are invalid (a test bug).
pub fn flash(builder: FlashProfileBuilder, seed: u64, now: Instant) -> Endpoint {
    flash_with(builder, EndpointConfig::default(), seed, now)
}

/// [`flash`] with an engine configuration.
///
/// # Panics
/// When the builder's settings are invalid (a test bug).
pub fn flash_with(
    builder: FlashProfileBuilder,
    config: EndpointConfig,
    seed: u64,
    now: Instant,
) -> Endpoint {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let profile = builder.build(&mut rng).expect("a valid test identity");
    Endpoint::new(config, Box::new(profile), Box::new(rng), now)
}

/// A Flash client (static keys: a stable peer ID for the seed).
pub fn flash_client(seed: u64, now: Instant) -> Endpoint {
    flash(FlashProfile::client(), seed, now)
}

/// A Flash server (ephemeral keys, no EPD check).
pub fn flash_server(seed: u64, now: Instant) -> Endpoint {
    flash(FlashProfile::server(None), seed, now)
}
