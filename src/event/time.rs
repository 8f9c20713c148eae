//! Event-time parsing and formatting (RFC 3339, UTC, milliseconds).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Earliest and latest accepted event time: 2000-01-01 and 2100-01-01 (UTC).
pub const MIN_TS_MS: i64 = 946_684_800_000;
pub const MAX_TS_MS: i64 = 4_102_444_800_000;

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    utc_fast(s.as_bytes()).or_else(|| {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    })
}

/// The form gateways write, `YYYY-MM-DDTHH:MM:SS[.f]Z` (1 to 9 fraction digits, year 1970 or
/// later), read directly: the general parser costs several times more, once per event. Any
/// other form, and any field out of range, is left to the general parser (`None`).
fn utc_fast(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let millis = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let mut ms = 0;
            for (i, &c) in digits.iter().enumerate() {
                if !c.is_ascii_digit() {
                    return None;
                }
                if i < 3 {
                    ms = ms * 10 + i64::from(c - b'0');
                }
            }
            ms * [100, 10, 1][digits.len().min(3) - 1]
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=month_days).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (years counted from March).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
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
        assert_eq!(
            parse_rfc3339_ms("2026-02-29T00:00:00Z"),
            None,
            "not a leap year"
        );
        assert_eq!(parse_rfc3339_ms("2026-11-02T24:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.001Z"), Some(1));
    }

    /// The general parser, for reference.
    fn general(s: &str) -> Option<i64> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    }

    proptest::proptest! {
        /// The fast path agrees with the general parser wherever it answers, on valid and
        /// near-valid timestamps alike.
        #[test]
        fn fast_path_agrees_with_the_general_parser(
            year in 1900i64..2200,
            month in 0i64..14,
            day in 0i64..33,
            hour in 0i64..26,
            minute in 0i64..61,
            second in 0i64..62,
            frac in proptest::option::of("[0-9]{1,10}"),
            zone in proptest::sample::select(vec!["Z", "z", "+00:00", "-07:30"]),
        ) {
            let s = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{}{zone}",
                frac.map(|f| format!(".{f}")).unwrap_or_default()
            );
            if let Some(ms) = utc_fast(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(ms), general(&s), "{}", s);
            }
            proptest::prop_assert_eq!(parse_rfc3339_ms(&s), general(&s), "{}", s);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&s);
        }
    }
}
