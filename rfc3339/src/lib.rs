//! RFC 3339 timestamps to and from Unix seconds, without a date crate: the auth service's
//! `expires_at` for the filter, the same field as the dev auth service reads and writes it,
//! and the tests' replies. One copy, so all three read a timestamp alike.

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` (fractions of a second dropped); a missing
/// offset is read as UTC, as Python's naive `isoformat()` output would mean in a UTC service.
/// None for anything else.
pub fn parse(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        rest = &rest[1 + frac..];
    }
    let offset = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i64;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    Some(days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for seconds since the Unix epoch.
pub fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day), by the same era-based method.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{format_utc as f, parse as p};

    #[test]
    fn parses_common_forms() {
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1969-12-31T23:59:59z"), Some(-1));
        assert_eq!(p("2026-11-23T12:00:00Z"), Some(1_795_435_200));
        assert_eq!(p("2026-11-23T12:00:00.123456+00:00"), Some(1_795_435_200));
        assert_eq!(p("2026-11-23T14:00:00+02:00"), Some(1_795_435_200));
        assert_eq!(p("2029-12-31T19:00:00-05:00"), p("2030-01-01T00:00:00Z"));
        assert_eq!(p("2026-11-23 12:00:00"), Some(1_795_435_200));
        assert_eq!(p("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(p("2000-03-01T00:00:00Z"), Some(951_868_800));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2026",
            "2030-01-01",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T12:00:00+2:00",
            "2030-01-01T00:00:00+0100",
            "2026-11-23T12:00:00.Z",
            "２０２６-11-23T12:00:00Z",
            "2026-11-23T12:00:00Zjunk",
            "not a date at all!!",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(f(0), "1970-01-01T00:00:00Z");
        assert_eq!(f(-1), "1969-12-31T23:59:59Z");
        assert_eq!(f(1_709_210_096), "2024-02-29T12:34:56Z");
        for t in [-86_401, 0, 951_868_800, 1_893_456_000, 4_102_444_799] {
            assert_eq!(p(&f(t)), Some(t), "{t}");
        }
    }
}
