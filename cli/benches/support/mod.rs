//! What the benchmarks over node processes share: how they print a figure, and percentiles.

/// Prints a figure: `RESULT` from an optimised build; from a debug build (`make test` runs one to
/// keep the benchmark working) it is a smoke run, and says so.
macro_rules! result {
    ($($arg:tt)*) => {
        println!("{} {}", if cfg!(debug_assertions) { "SMOKE (debug build, not a measurement)" } else { "RESULT" }, format!($($arg)*))
    };
}
pub(crate) use result;

/// The `p` quantile (0 to 1) of `sorted`, which is not empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
