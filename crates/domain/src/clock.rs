//! The one source of "now". Everything that needs the time takes a [`Clock`], so tests can
//! move time forward (session expiry, lockouts) without sleeping.

use std::sync::Mutex;
use time::OffsetDateTime;

/// A source of the current time, always UTC and truncated to whole microseconds (the
/// precision both databases keep, so a time read back equals the time written).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// Truncates a time to whole microseconds in UTC.
#[must_use]
pub fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let micros = t.microsecond();
    t.replace_nanosecond(micros * 1000).unwrap_or(t)
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> OffsetDateTime {
        to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that stands still until told to move: for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(to_micros(start)))
    }

    pub fn advance(&self, by: time::Duration) {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = to_micros(*guard + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
