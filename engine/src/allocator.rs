//! How the engine's allocator, mimalloc, gives memory back to the operating system.
//!
//! Every epoch decodes a batch of records and frees it once the operators are through, and
//! the next epoch allocates as much again. mimalloc returns ("purges") pages that stay free
//! for its purge delay, 1 s by default in version 3, so a worker kept handing the same pages
//! to the kernel and faulting them back in, zeroed. `bench-operators` at 1 worker, five
//! alternating pairs on 2026-12-06: 125,006-153,851 events/s with the default and
//! 157,425-177,711 with purging off, a second of system time less per run; then three
//! alternating pairs of processes, three runs each, 146,164-186,101 (median 171,866) without
//! and 167,148-192,032 (median 175,767) with this module's delay. A delay of
//! [`PURGE_DELAY_MS`] keeps what the next epochs will take again and still returns what a
//! shrinking state left free, seconds later rather than at once.
//!
//! The engine and `bench-operators` call [`tune`] first thing in `main`, so the benchmark
//! measures the allocator the engine runs with. `MIMALLOC_PURGE_DELAY` (or its older name
//! `MIMALLOC_RESET_DELAY`) in the environment still decides.
//!
//! Its [`heap_bytes`] tells what each of the process's two allocators holds: mimalloc
//! serves Rust's allocations (the operators' state, the records, the rows), the C library's
//! malloc serves librdkafka's (its fetch queues hold the records read ahead of the engine).
//! The resident set alone cannot say which of them grew, nor whether by live data or by
//! freed memory an allocator keeps.
//!
//! This module holds the workspace's only `unsafe` code, calls into mimalloc's option table
//! and statistics and into the C library's `mallinfo2`; the engine crate denies `unsafe`
//! elsewhere, and every other crate forbids it.

use std::ffi::c_long;
use std::sync::{Once, OnceLock};

/// How long freed pages stay with the process before mimalloc returns them, in ms.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// `mi_option_purge_delay`'s index in mimalloc 3.3's `mi_option_e` (`mimalloc.h`), which
/// `libmimalloc-sys` does not name. [`MIMALLOC_VERSION`] pins the version it was read from,
/// and a test checks it against the environment variable mimalloc reads by the option's name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The mimalloc version ([`mimalloc::MiMalloc::version`]) whose option indices this module
/// uses; a test fails when the lock file moves to another.
pub const MIMALLOC_VERSION: u32 = 30302;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless the environment set it, and
/// returns the delay in force, in ms.
///
/// Call it at the start of `main`, before any thread allocates: mimalloc's option table is
/// not synchronised, and a thread freeing memory reads this option. Only the first call
/// writes.
pub fn tune() -> c_long {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let set_by_environment = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if !set_by_environment {
            // SAFETY: `mi_option_set` stores a value in mimalloc's option table. The index
            // names an option of the linked version (see `MIMALLOC_VERSION`), and the caller
            // runs this before other threads allocate (see above).
            #[allow(unsafe_code)]
            unsafe {
                libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
            };
        }
    });
    // SAFETY: reads one entry of mimalloc's option table, by an index it has.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
    }
}

/// Where [`heap_bytes`] reads the live bytes of mimalloc from, when the binary counts them.
static LIVE_BYTES: OnceLock<fn() -> usize> = OnceLock::new();

/// Makes [`heap_bytes`] report `live` as mimalloc's live bytes: the engine's binary built
/// with the `live-heap` feature counts them around its global allocator. With live bytes
/// beside committed ones, a resident set that stays up after a burst of input tells state
/// that stayed (live bytes up) from pages the allocator cannot give back because a few live
/// blocks hold each of them (live bytes back down). Only the first call counts.
pub fn count_live_bytes_with(live: fn() -> usize) {
    let _ = LIVE_BYTES.set(live);
}

/// What the process's allocators hold, bytes, when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapBytes {
    /// Memory mimalloc has committed: its live blocks and the free pages it has not purged
    /// yet (see [`PURGE_DELAY_MS`]). mimalloc as built here (release, `MI_STAT` 0) does not
    /// count its live bytes; `bench-operators`' counting allocator does.
    pub mimalloc_committed: usize,
    /// Bytes handed out through the global allocator and not freed, when the binary counts
    /// them (see [`count_live_bytes_with`]).
    pub mimalloc_live: Option<usize>,
    /// Bytes the C library's malloc has handed out and not had back (`mallinfo2`'s
    /// `uordblks + hblkhd`): librdkafka's queues and buffers.
    pub libc_in_use: usize,
    /// Bytes free in the C library's arenas (`mallinfo2`'s `fordblks`), resident or not:
    /// glibc returns an arena's memory by itself only from its top, and a trim
    /// ([`trim_libc_heap`]) releases the pages of free chunks but still counts them here.
    pub libc_free: usize,
}

/// Reads [`HeapBytes`]. `mallinfo2` locks and walks every arena of the C library's malloc:
/// call it per scrape, not per record. Outside glibc the C library's figures are 0.
pub fn heap_bytes() -> HeapBytes {
    let mut committed = 0usize;
    let mut unused = [0usize; 7];
    let [elapsed, user, system, rss, peak_rss, peak_commit, faults] = &mut unused;
    // SAFETY: `mi_process_info` writes one `size_t` through each pointer, all to live locals.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_process_info(
            elapsed,
            user,
            system,
            rss,
            peak_rss,
            &mut committed,
            peak_commit,
            faults,
        )
    };
    let (libc_in_use, libc_free) = libc_heap();
    HeapBytes {
        mimalloc_committed: committed,
        mimalloc_live: LIVE_BYTES.get().map(|live| live()),
        libc_in_use,
        libc_free,
    }
}

/// How often [`trim_libc_heap_periodically`] trims, s.
pub const LIBC_TRIM_INTERVAL_SECS: u64 = 10;

/// Hands the free memory of the C library's malloc back to the operating system
/// (`malloc_trim(0)`: since glibc 2.8 it releases the free pages inside each arena, not
/// only at its top); whether any was released. glibc returns an arena's free memory by
/// itself only from its top, and librdkafka's fetch buffers, freed by the worker threads in
/// another order than its broker threads allocated them, leave it in the middle: when a
/// replay of `bench memory` ended, 192 MiB were free in the arenas, and each burst of input
/// had left about 10 MiB there (2026-12-07). A no-op outside glibc.
pub fn trim_libc_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes each arena's lock itself and only releases free pages.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Calls [`trim_libc_heap`] every [`LIBC_TRIM_INTERVAL_SECS`], off the runtime's threads
/// (a trim walks every arena under its lock), for the life of the process.
pub async fn trim_libc_heap_periodically() {
    let mut interval =
        tokio::time::interval(std::time::Duration::from_secs(LIBC_TRIM_INTERVAL_SECS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(error) = tokio::task::spawn_blocking(trim_libc_heap).await {
            tracing::warn!(error = %error, "trimming the C library's heap failed");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn libc_heap() -> (usize, usize) {
    // SAFETY: `mallinfo2` (glibc 2.33 and later) takes no argument and returns a struct by
    // value; it takes each arena's lock itself.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd, info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn libc_heap() -> (usize, usize) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap figures are the process's: the tests that move them by tens of MiB run one
    /// at a time.
    static HEAP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Each figure moves with what its allocator was given: a block from mimalloc and one
    /// from the C library's `malloc`, both touched and held while read. (The tests run on the
    /// system allocator, the engine's binary on mimalloc: the test asks mimalloc directly.)
    #[test]
    fn heap_bytes_tell_the_two_allocators_apart() {
        const BLOCK: usize = 64 << 20;
        let _alone = HEAP_TESTS.lock();
        let before = heap_bytes();
        // SAFETY: plain allocations of each allocator, filled, then freed by their own
        // allocator after the readings.
        #[allow(unsafe_code)]
        let mimalloc_block = unsafe { libmimalloc_sys::mi_malloc(BLOCK) };
        assert!(!mimalloc_block.is_null());
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::write_bytes(mimalloc_block.cast::<u8>(), 1, BLOCK)
        };
        let with_mimalloc = heap_bytes();
        // `black_box`: LLVM knows `malloc` and drops a block nothing reads.
        #[allow(unsafe_code)]
        let c_block = std::hint::black_box(unsafe { libc::malloc(BLOCK) });
        assert!(!c_block.is_null());
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::write_bytes(c_block.cast::<u8>(), 1, BLOCK)
        };
        let with_both = heap_bytes();
        #[allow(unsafe_code)]
        unsafe {
            libc::free(std::hint::black_box(c_block));
            libmimalloc_sys::mi_free(mimalloc_block);
        };
        assert!(
            with_mimalloc.mimalloc_committed >= before.mimalloc_committed + BLOCK,
            "{before:?} -> {with_mimalloc:?}"
        );
        // Half a block of slack: another test's thread may free C memory meanwhile.
        assert!(
            with_both.libc_in_use >= with_mimalloc.libc_in_use + BLOCK / 2,
            "{with_mimalloc:?} -> {with_both:?}"
        );
    }

    /// Resident memory of this process, bytes (`/proc/self/statm`, in pages).
    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: `sysconf` reads a system constant.
        #[allow(unsafe_code)]
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages * usize::try_from(page).unwrap()
    }

    /// Memory freed in the middle of an arena stays resident until trimmed: blocks below
    /// the mmap threshold, touched, all freed but the last (which keeps the arena's top in
    /// use, so glibc cannot shrink it by itself).
    #[test]
    fn a_trim_returns_memory_freed_inside_an_arena() {
        const BLOCK: usize = 64 << 10;
        const BLOCKS: usize = 2_048;
        let _alone = HEAP_TESTS.lock();
        let blocks: Vec<_> = (0..BLOCKS)
            .map(|_| {
                // SAFETY: plain allocations of the C library, filled, then freed below.
                #[allow(unsafe_code)]
                let block = std::hint::black_box(unsafe { libc::malloc(BLOCK) });
                assert!(!block.is_null());
                #[allow(unsafe_code)]
                unsafe {
                    std::ptr::write_bytes(block.cast::<u8>(), 1, BLOCK)
                };
                block
            })
            .collect();
        for block in &blocks[..BLOCKS - 1] {
            #[allow(unsafe_code)]
            unsafe {
                libc::free(std::hint::black_box(*block))
            };
        }
        let freed = heap_bytes().libc_free;
        let before = resident_bytes();
        assert!(freed >= (BLOCKS - 1) * BLOCK, "{freed} bytes free");
        assert!(trim_libc_heap(), "nothing was released");
        let after = resident_bytes();
        #[allow(unsafe_code)]
        unsafe {
            libc::free(std::hint::black_box(blocks[BLOCKS - 1]))
        };
        assert!(
            before >= after + BLOCKS * BLOCK / 2,
            "resident {before} -> {after} bytes after trimming {freed} free"
        );
    }

    /// A `live-heap` build's count reaches the heap figures and the metrics, under its own
    /// kind; without it there is no `live` figure (the test binary counts nothing until it
    /// registers a count, and only the first registration counts).
    #[test]
    fn live_bytes_are_reported_once_the_binary_counts_them() {
        let metrics = crate::metrics::Metrics::default();
        let live = "clickstream_engine_heap_bytes{allocator=\"mimalloc\",kind=\"live\"}";
        if LIVE_BYTES.get().is_none() {
            assert_eq!(heap_bytes().mimalloc_live, None);
            assert!(!metrics.render().contains(live));
        }
        count_live_bytes_with(|| 4096);
        assert_eq!(heap_bytes().mimalloc_live, Some(4096));
        assert!(
            metrics.render().contains(&format!("{live} 4096")),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn the_option_index_is_read_from_the_linked_mimalloc_version() {
        assert_eq!(mimalloc::MiMalloc.version(), MIMALLOC_VERSION);
    }

    /// mimalloc reads `MIMALLOC_PURGE_DELAY` into the purge delay option by its name: a child
    /// test process started with it set reads it back at [`MI_OPTION_PURGE_DELAY`] only if
    /// that index is the purge delay. Without the variable, [`tune`] sets the delay.
    #[test]
    fn tune_sets_the_purge_delay_and_the_environment_still_decides() {
        const CHILD_DELAY: &str = "1234";
        if std::env::var("MIMALLOC_PURGE_DELAY").as_deref() == Ok(CHILD_DELAY) {
            assert_eq!(tune(), 1234);
            return;
        }
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(PURGE_DELAY_MS);
        assert_eq!(tune(), expected);
        let test = "allocator::tests::tune_sets_the_purge_delay_and_the_environment_still_decides";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--test-threads=1"])
            .env("MIMALLOC_PURGE_DELAY", CHILD_DELAY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "{stdout}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }
}
