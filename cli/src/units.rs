//! Durations and sizes as people write them on a command line: durations as one or more
//! number-unit pairs, units `ms`, `s`, `m`, `h`, `d` (`500ms`, `90s`, `1h30m`, `2d`); sizes as a
//! number and an optional unit, `B`, `KB`, `MB`, `GB` (powers of 1024: `512KB`, `10MB`);
//! and times as RFC 3339 UTC text.

use std::time::{Duration, SystemTime};

/// `2026-11-28T04:50:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let (date, seconds, _) = civil(time);
    format!("{date}T{seconds}Z")
}

/// `2026-11-28T04:50:00.250Z`.
pub fn rfc3339_ms(time: SystemTime) -> String {
    let (date, seconds, millis) = civil(time);
    format!("{date}T{seconds}.{millis:03}Z")
}

/// The date and the time of day (to the second) of `time` in UTC, and its milliseconds.
fn civil(time: SystemTime) -> (String, String, u32) {
    let elapsed = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = elapsed.as_secs();
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        ),
        elapsed.subsec_millis(),
    )
}

/// `None` for anything else (no unit, a fraction, a sign, an overflow).
pub fn duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit_ms)?)?;
        rest = &rest[unit..];
    }
    Some(Duration::from_millis(total))
}

/// For clap: a timeout argument (longer than 0), or what it should look like.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    let parsed = duration(text.trim())
        .ok_or_else(|| format!("`{text}` is not a duration (use `500ms`, `30s`, `2m`, `1h30m`)"))?;
    // Every duration flag is a timeout: zero would fail everything it bounds.
    if parsed.is_zero() {
        return Err(format!(
            "`{text}` is no time at all: give a timeout longer than 0 (`500ms`, `30s`)"
        ));
    }
    Ok(parsed)
}

/// A size in bytes; `None` for anything else (a fraction, a sign, an unknown unit, overflow).
pub fn size(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = match text[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// For clap: a size argument, or what it should look like.
pub fn size_arg(text: &str) -> Result<u64, String> {
    size(text.trim())
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("`{text}` is not a size (use `512KB`, `10MB`, `1GB`)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(super::rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(at(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(
            super::rfc3339(at(1_795_825_800_000)),
            "2026-11-28T00:30:00Z"
        );
        assert_eq!(
            super::rfc3339_ms(at(1_795_825_800_250)),
            "2026-11-28T00:30:00.250Z"
        );
    }

    use super::*;

    #[test]
    fn a_timeout_argument_is_longer_than_zero() {
        assert_eq!(duration_arg("500ms"), Ok(Duration::from_millis(500)));
        assert!(duration_arg("0s").unwrap_err().contains("longer than 0"));
        assert!(duration_arg("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn pairs_add_up_and_anything_else_is_refused() {
        let ms = |text| duration(text).map(|duration| duration.as_millis());
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("2d"), Some(172_800_000));
        for bad in ["", "10", "1.5s", "-1s", "5x", "s"] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(size("10MB"), Some(10 << 20));
        assert_eq!(size("512kb"), Some(512 << 10));
        assert_eq!(size("7"), Some(7));
        for bad in ["", "1.5MB", "-1", "10XB", "MB"] {
            assert_eq!(size(bad), None, "{bad}");
        }
    }
}
