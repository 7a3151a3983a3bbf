//! Futures put on the heap where they are built.
//!
//! `Box::pin(f())` evaluates `f()` first, so the future is built in a
//! temporary and then copied whole into the new allocation. For the
//! request pipeline's future (several kilobytes, of which a request's
//! start fills a few hundred bytes) that copy was the largest `memcpy` of
//! every request. Allocating first and building the value into the
//! allocation lets the compiler pass the heap slot as the place the
//! future is returned to, so only the arguments are written.

use std::pin::Pin;

/// `Box::pin(make())`, without the copy: the allocation is made before
/// `make` runs and receives its result directly.
#[inline(always)]
pub fn pinned<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_future_runs_as_built() {
        let words = ["in", "place"];
        let fut = pinned(|| async move { words.join(" ") });
        let out = tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(fut));
        assert_eq!(out.ok().as_deref(), Some("in place"));
    }
}
