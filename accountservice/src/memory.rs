//! Keeps glibc's allocator from inflating the resident set.
//!
//! glibc malloc gives each thread that meets contention its own arena (up to
//! 8 per core), and each arena keeps freed memory around. For a service whose
//! working set is a few hundred KiB that shows up as megabytes of RSS, so cap
//! the arenas before any thread starts. Thread caches (tcache) still keep the
//! small allocations on the request path lock-free.

pub fn limit_malloc_arenas(max: i32) {
    // SAFETY: mallopt only adjusts allocator tunables; it is called from main
    // before other threads exist.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max;
}
