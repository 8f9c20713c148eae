//! Software prefetch: a hint that a cache line will be read soon.

/// Asks for the cache line holding `p`. A hint only: the address is never dereferenced and
/// an invalid one cannot fault, so any pointer is fine.
#[inline(always)]
pub fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 does not access memory architecturally and cannot fault; `sse` is
    // part of the x86_64 baseline.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for every cache line of `*r`.
#[inline(always)]
pub fn all<T>(r: &T) {
    let p = (r as *const T).cast::<u8>();
    let mut off = 0;
    while off < std::mem::size_of::<T>() {
        line(p.wrapping_add(off));
        off += 64;
    }
}
