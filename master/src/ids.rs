//! The shell's id source for the scheduler core: random (version 4) ids from a generator
//! seeded once from entropy, instead of a `getrandom` syscall per id (task ids are minted
//! on the placement hot path). The core only calls the generator it is handed.
use plinth_scheduler::IdSource;

/// A fresh random id source, seeded from the operating system's entropy.
pub fn random_ids() -> IdSource {
    let mut rng = fastrand::Rng::new();
    Box::new(move || uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid())
}
