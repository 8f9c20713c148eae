//! Event-time parsing and formatting (RFC 3339, UTC, milliseconds).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Earliest and latest accepted event time: 2000-01-01 and 2100-01-01 (UTC).
pub const MIN_TS_MS: i64 = 946_684_800_000;
pub const MAX_TS_MS: i64 = 4_102_444_800_000;

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-02T00:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// Whether an epoch-millisecond time is within the accepted range.
pub fn in_range(ms: i64) -> bool {
    (MIN_TS_MS..MAX_TS_MS).contains(&ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339_ms("2026-11-02T10:20:30.456Z").expect("parses");
        assert_eq!(format_ms(ms), "2026-11-02T10:20:30.456Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-02T12:20:30.456+02:00"),
            Some(ms),
            "offsets are honoured"
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
