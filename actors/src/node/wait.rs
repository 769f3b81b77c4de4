//! Waiting for a condition in an actix system without blocking it.

use std::future::Future;
use std::time::{Duration, Instant};

/// Asks `probe` every `every` until it answers, for at most `within`; `None` if it never did.
///
/// ```
/// # actix::System::new().block_on(async {
/// use std::time::Duration;
/// let mut asked = 0;
/// let third = actors::node::wait::eventually(Duration::from_secs(1), Duration::from_millis(1), || {
///     asked += 1;
///     std::future::ready((asked == 3).then_some(asked))
/// }).await;
/// assert_eq!(third, Some(3));
/// # });
/// ```
pub async fn eventually<T, F: Future<Output = Option<T>>>(within: Duration, every: Duration, mut probe: impl FnMut() -> F) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(answer) = probe().await {
            return Some(answer);
        }
        if Instant::now() >= deadline {
            return None;
        }
        actix::clock::sleep(every).await;
    }
}
