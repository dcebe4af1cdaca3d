//! Durations as people write them on a command line: one or more number-unit pairs, units
//! `ms`, `s`, `m`, `h`, `d` (`500ms`, `90s`, `1h30m`, `2d`).

use std::time::Duration;

/// `None` for anything else (no unit, a fraction, a sign, an overflow).
pub fn parse(text: &str) -> Option<Duration> {
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

/// For clap: a duration argument, or what it should look like.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text.trim())
        .ok_or_else(|| format!("`{text}` is not a duration (use `500ms`, `30s`, `2m`, `1h30m`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_add_up_and_anything_else_is_refused() {
        let ms = |text| parse(text).map(|duration| duration.as_millis());
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("2d"), Some(172_800_000));
        for bad in ["", "10", "1.5s", "-1s", "5x", "s"] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }
}
