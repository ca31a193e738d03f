//! Media time ↔ wallclock (sans-IO): what an RTCP sender report says about when a frame was captured, and
//! the conversion between the wallclock (`SystemTime`, comparable across processes) and `Instant`s.

use std::time::{Duration, Instant, SystemTime};

/// The capture wallclock of the frame at RTP time `rtp`, from a sender report that maps RTP time `sr_rtp` to
/// wallclock `sr_ntp` (both in ticks of a `clock` Hz clock; only their low 32 bits count, as on the wire).
pub fn capture_time(sr_ntp: SystemTime, sr_rtp: u64, rtp: u64, clock: u32) -> Option<SystemTime> {
    if clock == 0 {
        return None;
    }
    let delta = i64::from((rtp as u32).wrapping_sub(sr_rtp as u32) as i32);
    let nanos = u128::from(delta.unsigned_abs()) * 1_000_000_000 / u128::from(clock);
    let offset = Duration::from_nanos(nanos as u64);
    if delta >= 0 {
        sr_ntp.checked_add(offset)
    } else {
        sr_ntp.checked_sub(offset)
    }
}

/// The `Instant` of wallclock `t` (clamped to now if it lies in the future).
pub fn instant_of(t: SystemTime) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    match wall.duration_since(t) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(_) => now,
    }
}

/// The wallclock of `Instant` `t`.
pub fn system_time_of(t: Instant) -> SystemTime {
    let (now, wall) = (Instant::now(), SystemTime::now());
    if t <= now { wall - (now - t) } else { wall + (t - now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_placed_relative_to_the_report() {
        let sr = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // 4 500 ticks of 90 kHz after the report: 50 ms later; 960 of 48 kHz before it: 20 ms earlier.
        assert_eq!(
            capture_time(sr, 90_000, 94_500, 90_000),
            Some(sr + Duration::from_millis(50))
        );
        assert_eq!(
            capture_time(sr, 48_960, 48_000, 48_000),
            Some(sr - Duration::from_millis(20))
        );
        // Across the 32-bit wrap, and with extended times whose high bits differ.
        assert_eq!(
            capture_time(sr, u64::from(u32::MAX) - 899, (1 << 32) + 8_100, 90_000),
            Some(sr + Duration::from_millis(100))
        );
        assert_eq!(capture_time(sr, 0, 10, 0), None);
    }

    #[test]
    fn instants_and_wallclock_round_trip() {
        let past = Instant::now() - Duration::from_millis(300);
        let back = instant_of(system_time_of(past));
        let error = if back > past { back - past } else { past - back };
        assert!(error < Duration::from_millis(5), "{error:?}");
        let future = SystemTime::now() + Duration::from_secs(60);
        assert!(instant_of(future) <= Instant::now());
    }
}
