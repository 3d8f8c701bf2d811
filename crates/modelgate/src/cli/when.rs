//! Times as people write and read them: `--since 10m`, RFC 3339, unix ms.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};

/// Unix milliseconds from what a person wrote: a whole number is unix ms
/// (what the API and the audit log carry), an RFC 3339 time is that instant
/// (`2026-12-07T04:00:00Z`, any offset), and an age such as `10m`, `2h 30m`
/// or `1day` is that long before now.
pub fn parse_when_ms(s: &str) -> anyhow::Result<i64> {
    parse_when_ms_at(s, crate::clock::now_ms() as i64)
}

fn parse_when_ms_at(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        anyhow::ensure!(ms >= 0, "'{s}' is before 1970");
        return Ok(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let age = humantime::parse_duration(s).with_context(|| {
        format!(
            "'{s}' is neither unix ms, an RFC 3339 time (2026-12-07T04:00:00Z) nor an age (10m, 2h, 1day)"
        )
    })?;
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Ok(now_ms.saturating_sub(age_ms).max(0))
}

/// Unix ms as RFC 3339 in UTC to the millisecond, e.g.
/// `2026-12-07T04:00:00.123Z`; the number itself if it is out of range.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_616_000_000; // 2026-12-07T04:00:00Z

    #[test]
    fn ms_rfc3339_and_ages_are_read() {
        assert_eq!(parse_when_ms_at("1796616000000", NOW).unwrap(), NOW);
        assert_eq!(parse_when_ms_at("2026-12-07T04:00:00Z", NOW).unwrap(), NOW);
        assert_eq!(parse_when_ms_at("2026-12-07T06:00:00+02:00", NOW).unwrap(), NOW);
        assert_eq!(parse_when_ms_at("10m", NOW).unwrap(), NOW - 600_000);
        assert_eq!(parse_when_ms_at("2h 30m", NOW).unwrap(), NOW - 9_000_000);
        assert_eq!(parse_when_ms_at(" 1day ", NOW).unwrap(), NOW - 86_400_000);
    }

    #[test]
    fn nonsense_says_what_is_accepted() {
        let e = parse_when_ms_at("yesterday-ish", NOW).unwrap_err().to_string();
        assert!(e.contains("RFC 3339") && e.contains("10m"), "{e}");
        assert!(parse_when_ms_at("-5", NOW).is_err());
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(format_ms(NOW + 123), "2026-12-07T04:00:00.123Z");
    }
}
