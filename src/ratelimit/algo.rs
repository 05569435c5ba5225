//! The three algorithms, as pure functions of a small state and the time
//! (microseconds, injected), so that every backend runs the same arithmetic
//! and tests can step the clock.
//!
//! * **Fixed window:** a counter per window (`now / window`). Cheapest and
//!   exact within a window, but a client can send `limit` requests at the
//!   end of one window and `limit` more at the start of the next: up to 2×
//!   the limit across a boundary.
//! * **Sliding window:** the two-window weighted counter (Cloudflare's,
//!   Redis' usual): the previous window's count weighted by how much of it
//!   still overlaps the last `window`, plus the current count. No boundary
//!   burst; the estimate assumes the previous window's requests were evenly
//!   spread, so it can be off by a little in either direction, never by 2×.
//! * **GCRA** (the generic cell rate algorithm, a token bucket kept as one
//!   timestamp): a sustained rate of `limit` per `window` plus a `burst` of
//!   requests at once. Smooth, one number of state, exact.
//!
//! The state is one [`State`] per key: `a`, `b`, `c` mean different things
//! per algorithm (documented on each function).

/// Which algorithm a limit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Counter per fixed window.
    FixedWindow,
    /// Two-window weighted counter.
    SlidingWindow,
    /// Generic cell rate algorithm (token bucket).
    Gcra,
}

impl Algorithm {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindow => "sliding_window",
            Self::Gcra => "gcra",
        }
    }
}

/// What a limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests per window (the sustained rate, for GCRA).
    pub limit: u32,
    /// The window, in microseconds (> 0).
    pub window_us: u64,
    /// GCRA: requests allowed at once (defaults to `limit`).
    pub burst: u32,
}

/// Per-key state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Window index (fixed, sliding) or theoretical arrival time (GCRA, µs).
    pub a: u64,
    /// Count in the current window.
    pub b: u32,
    /// Count in the previous window (sliding).
    pub c: u32,
}

/// The answer for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The configured limit (GCRA: the burst).
    pub limit: u32,
    /// Requests still allowed now (after this one, when it was counted).
    pub remaining: u32,
    /// Microseconds until the quota is whole again (the end of the window;
    /// GCRA: until the bucket is full).
    pub reset_us: u64,
    /// Microseconds until a request would be allowed (0 when allowed).
    pub retry_after_us: u64,
    /// Microseconds after which the state can be forgotten.
    pub ttl_us: u64,
}

/// Checks one request at `now` and, when `take`, counts it if allowed.
/// `take = false` only looks (a login limit looks first and counts a
/// failure afterwards with [`add`]).
pub fn check(spec: &Spec, st: &mut State, now: u64, take: bool) -> Decision {
    match spec.algorithm {
        Algorithm::FixedWindow => fixed(spec, st, now, take),
        Algorithm::SlidingWindow => sliding(spec, st, now, take),
        Algorithm::Gcra => gcra(spec, st, now, take),
    }
}

/// Counts one event unconditionally (a failure, after the fact).
pub fn add(spec: &Spec, st: &mut State, now: u64) {
    match spec.algorithm {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => {
            roll(spec, st, now);
            st.b = st.b.saturating_add(1);
        }
        Algorithm::Gcra => {
            let t = interval(spec);
            st.a = st.a.max(now).saturating_add(t);
        }
    }
}

/// Fixed window: `a` = window index, `b` = count.
fn fixed(spec: &Spec, st: &mut State, now: u64, take: bool) -> Decision {
    let w = spec.window_us;
    let idx = now / w;
    if st.a != idx {
        *st = State { a: idx, b: 0, c: 0 };
    }
    let reset = (idx + 1) * w - now;
    let allowed = st.b < spec.limit;
    if allowed && take {
        st.b += 1;
    }
    Decision {
        allowed,
        limit: spec.limit,
        remaining: spec.limit.saturating_sub(st.b),
        reset_us: reset,
        retry_after_us: if allowed { 0 } else { reset },
        ttl_us: reset,
    }
}

/// Moves a sliding/fixed state to the window of `now`: `a` = window index,
/// `b` = current count, `c` = previous count.
fn roll(spec: &Spec, st: &mut State, now: u64) {
    let idx = now / spec.window_us;
    if st.a == idx {
        return;
    }
    let prev = if st.a + 1 == idx && spec.algorithm == Algorithm::SlidingWindow {
        st.b
    } else {
        0
    };
    *st = State {
        a: idx,
        b: 0,
        c: prev,
    };
}

/// Sliding window: the previous count weighted by its overlap with the last
/// `window`, plus the current count.
fn sliding(spec: &Spec, st: &mut State, now: u64, take: bool) -> Decision {
    let w = spec.window_us;
    roll(spec, st, now);
    let elapsed = now - st.a * w;
    let limit = u64::from(spec.limit);
    let (prev, cur) = (u64::from(st.c), u64::from(st.b));
    // estimate × w, in integers: prev × (w − elapsed) + cur × w
    let est_w = prev * (w - elapsed) + cur * w;
    let allowed = est_w + w <= limit * w;
    if allowed && take {
        st.b += 1;
    }
    let est_after_w = prev * (w - elapsed) + u64::from(st.b) * w;
    let remaining = (limit * w).saturating_sub(est_after_w) / w;
    let reset = w - elapsed;
    let retry = if allowed {
        0
    } else if cur + 1 > limit {
        // Not before the next window, and then until this window's count,
        // as the previous one, weighs little enough.
        let need = (limit - 1) * w; // cur × (w − e′) ≤ (limit − 1) × w
        let e2 = w - need.checked_div(cur).unwrap_or(0).min(w);
        reset + e2
    } else {
        // Within this window: until prev × (w − e) ≤ (limit − 1 − cur) × w.
        let room = (limit - 1 - cur) * w;
        let e = w - room.checked_div(prev).unwrap_or(w).min(w);
        e.saturating_sub(elapsed).max(1)
    };
    Decision {
        allowed,
        limit: spec.limit,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_us: reset,
        retry_after_us: retry,
        ttl_us: reset + w,
    }
}

/// The emission interval: one request every `window / limit`.
fn interval(spec: &Spec) -> u64 {
    (spec.window_us / u64::from(spec.limit.max(1))).max(1)
}

/// GCRA: `a` = theoretical arrival time (µs). A request is allowed when, once
/// counted, the arrival time is no more than `burst` intervals ahead of now.
fn gcra(spec: &Spec, st: &mut State, now: u64, take: bool) -> Decision {
    let t = interval(spec);
    let burst = u64::from(spec.burst.max(1));
    let capacity = burst * t;
    let tat = st.a.max(now);
    let new_tat = tat + t;
    let allowed = new_tat - now <= capacity;
    if allowed && take {
        st.a = new_tat;
    }
    let ahead = if allowed && take { new_tat } else { tat } - now;
    let remaining = (capacity - ahead.min(capacity)) / t;
    Decision {
        allowed,
        limit: spec.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_us: ahead,
        retry_after_us: if allowed { 0 } else { new_tat - now - capacity },
        ttl_us: ahead.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn spec(algorithm: Algorithm, limit: u32, window_s: u64, burst: u32) -> Spec {
        Spec {
            algorithm,
            limit,
            window_us: window_s * S,
            burst,
        }
    }

    fn run(spec: &Spec, st: &mut State, at: u64, n: u32) -> u32 {
        (0..n).filter(|_| check(spec, st, at, true).allowed).count() as u32
    }

    #[test]
    fn fixed_window_counts_and_resets_at_the_edge() {
        let sp = spec(Algorithm::FixedWindow, 3, 60, 0);
        let mut st = State::default();
        let t0 = 120 * S; // start of a window
        assert_eq!(run(&sp, &mut st, t0 + 10 * S, 5), 3);
        let d = check(&sp, &mut st, t0 + 10 * S, true);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_us, 50 * S);
        assert_eq!(d.reset_us, 50 * S);
        // the boundary burst fixed windows allow: 3 at the end, 3 at the start
        let mut st = State::default();
        assert_eq!(run(&sp, &mut st, t0 + 59 * S, 3), 3);
        assert_eq!(run(&sp, &mut st, t0 + 60 * S, 3), 3);
    }

    #[test]
    fn sliding_window_has_no_boundary_burst() {
        let sp = spec(Algorithm::SlidingWindow, 10, 60, 0);
        let mut st = State::default();
        let t0 = 600 * S;
        assert_eq!(run(&sp, &mut st, t0 + 59 * S, 10), 10);
        // 1 s into the next window, the previous 10 still weigh 59/60
        assert_eq!(run(&sp, &mut st, t0 + 61 * S, 10), 0);
        let d = check(&sp, &mut st, t0 + 61 * S, true);
        assert!(!d.allowed && d.retry_after_us > 0);
        // allowed again exactly when the estimate leaves room for one
        let at = t0 + 61 * S + d.retry_after_us;
        assert!(check(&sp, &mut st, at, true).allowed);
        assert!(!check(&sp, &mut st, at, true).allowed);
        // halfway through the window after, half the limit is free again
        let mut st = State::default();
        assert_eq!(run(&sp, &mut st, t0 + 30 * S, 10), 10);
        assert_eq!(run(&sp, &mut st, t0 + 90 * S, 10), 5);
        // two windows later the past is forgotten
        assert_eq!(run(&sp, &mut st, t0 + 200 * S, 20), 10);
    }

    #[test]
    fn sliding_retry_after_when_the_current_window_is_full() {
        let sp = spec(Algorithm::SlidingWindow, 4, 10, 0);
        let mut st = State::default();
        let t0 = 100 * S;
        assert_eq!(run(&sp, &mut st, t0 + 2 * S, 4), 4);
        let d = check(&sp, &mut st, t0 + 2 * S, true);
        assert!(!d.allowed);
        let at = t0 + 2 * S + d.retry_after_us;
        // not a moment earlier
        let mut early = st;
        assert!(!check(&sp, &mut early, at - 1000, true).allowed);
        assert!(check(&sp, &mut st, at, true).allowed);
    }

    #[test]
    fn gcra_burst_then_sustained_rate() {
        // 60 per minute sustained, bursts of 5
        let sp = spec(Algorithm::Gcra, 60, 60, 5);
        let mut st = State::default();
        let t0 = 1_000 * S;
        assert_eq!(run(&sp, &mut st, t0, 10), 5);
        let d = check(&sp, &mut st, t0, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, S);
        assert_eq!(run(&sp, &mut st, t0 + S / 2, 1), 0);
        assert_eq!(run(&sp, &mut st, t0 + S, 1), 1);
        // refills at one per second, up to the burst
        assert_eq!(run(&sp, &mut st, t0 + 4 * S, 10), 3);
        assert_eq!(run(&sp, &mut st, t0 + 100 * S, 10), 5);
        // remaining counts down from the burst
        let mut st = State::default();
        assert_eq!(check(&sp, &mut st, t0, true).remaining, 4);
        assert_eq!(check(&sp, &mut st, t0, true).remaining, 3);
    }

    #[test]
    fn looking_does_not_count_and_add_counts_failures() {
        for alg in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::Gcra,
        ] {
            let sp = spec(alg, 3, 60, 3);
            let mut st = State::default();
            let t = 60 * S;
            for _ in 0..10 {
                assert!(check(&sp, &mut st, t, false).allowed, "{alg:?}");
            }
            for _ in 0..3 {
                add(&sp, &mut st, t);
            }
            assert!(!check(&sp, &mut st, t, false).allowed, "{alg:?}");
        }
    }
}
