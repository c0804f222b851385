//! Elapsed time on both platforms: `std::time::Instant` panics on wasm32 (there is no clock
//! behind it), so the browser build reads `Date.now()` (millisecond resolution, enough for
//! progress lines and step timings).

/// Time since it was started.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    #[cfg(not(target_arch = "wasm32"))]
    start: std::time::Instant,
    #[cfg(target_arch = "wasm32")]
    start_ms: f64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        #[cfg(not(target_arch = "wasm32"))]
        return Stopwatch { start: std::time::Instant::now() };
        #[cfg(target_arch = "wasm32")]
        return Stopwatch { start_ms: js_sys::Date::now() };
    }

    /// Seconds since [`Stopwatch::start`].
    pub fn secs(&self) -> f64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.start.elapsed().as_secs_f64();
        #[cfg(target_arch = "wasm32")]
        return (js_sys::Date::now() - self.start_ms) / 1000.0;
    }
}
