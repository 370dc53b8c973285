//! How the engine's allocator, mimalloc, gives memory back to the operating system.
//!
//! Every epoch decodes a batch of records and frees it once the operators are through, and
//! the next epoch allocates as much again. mimalloc returns ("purges") pages that stay free
//! for its purge delay, 1 s by default in version 3, so a worker kept handing the same pages
//! to the kernel and faulting them back in, zeroed: with the default, `bench-operators` at
//! 1 worker ran 125,006-153,851 events/s; with purging off, 157,425-177,711, and a second
//! of system time less per run (five alternating pairs, 2026-12-06). A delay of
//! [`PURGE_DELAY_MS`] keeps what the next epochs will take again and still returns what a
//! shrinking state left free, seconds later rather than at once.
//!
//! The engine and `bench-operators` call [`tune`] first thing in `main`, so the benchmark
//! measures the allocator the engine runs with. `MIMALLOC_PURGE_DELAY` in the environment
//! still overrides it.

/// How long freed pages stay with the process before mimalloc returns them, in ms.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay`'s index in mimalloc 3.3's `mi_option_e` (`mimalloc.h`), which
/// `libmimalloc-sys` does not name. [`MIMALLOC_VERSION`] pins the version it was read from.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The mimalloc version ([`mimalloc::MiMalloc::version`]) whose option indices this module
/// uses; a test fails when the lock file moves to another.
pub const MIMALLOC_VERSION: u32 = 30302;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless the environment set it, and
/// returns the delay in force, in ms. Call it before starting threads: mimalloc's option
/// setters are not thread-safe.
pub fn tune() -> i64 {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores a value in mimalloc's option table; the index names
        // an option of the linked version (see `MIMALLOC_VERSION`), and no other thread is
        // running yet to read the option while it is written.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _)
        };
    }
    // SAFETY: reads one entry of mimalloc's option table by a valid index.
    #[allow(unsafe_code)]
    let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    delay as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_is_read_from_the_linked_mimalloc_version() {
        assert_eq!(mimalloc::MiMalloc.version(), MIMALLOC_VERSION);
    }

    #[test]
    fn tune_sets_the_purge_delay_unless_the_environment_did() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(PURGE_DELAY_MS);
        assert_eq!(tune(), expected);
    }
}
