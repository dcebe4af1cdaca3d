//! Human forms for `stack redis`: indented JSON with colours (keys, strings, numbers, literals),
//! TTLs (`23h 59m 58s`), sizes (`1.2 KB`), times of day and shortened values.
//!
//! Colour follows `console` (only on a terminal, never with `NO_COLOR`). Pure functions: no I/O.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use console::style;
use serde_json::Value;

/// `value` indented by two spaces, coloured when colours are on.
pub fn json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let pad = |depth: usize| "  ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (index, (key, item)) in map.iter().enumerate() {
                let key = serde_json::to_string(key).expect("a string always serialises");
                let key = crate::output::terminal_safe_json(&key).into_owned();
                let _ = write!(out, "{}{}: ", pad(depth + 1), style(key).cyan());
                write_value(out, item, depth + 1);
                out.push_str(if index + 1 < map.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(depth));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_value(out, item, depth + 1);
                out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(depth));
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::String(_) => {
            let text = value.to_string();
            let _ = write!(
                out,
                "{}",
                style(crate::output::terminal_safe_json(&text)).green()
            );
        }
        Value::Number(number) => {
            let _ = write!(out, "{}", style(number).yellow());
        }
        Value::Bool(_) | Value::Null => {
            let _ = write!(out, "{}", style(value.to_string()).magenta());
        }
    }
}

/// `23h 59m 58s`, `5m 0s`, `12s`; `no expiry` for `None`.
pub fn ttl(seconds: Option<i64>) -> String {
    let Some(seconds) = seconds else {
        return "no expiry".into();
    };
    let (days, hours, minutes, secs) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{minutes}m {secs}s"),
        (0, _, _) => format!("{hours}h {minutes}m {secs}s"),
        _ => format!("{days}d {hours}h {minutes}m"),
    }
}

/// `142 B`, `1.2 KB`, `3.4 MB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0..1000 => format!("{bytes} B"),
        1000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// `HH:MM:SS` (UTC) of `time`.
pub fn time_of_day(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    format!(
        "{:02}:{:02}:{:02}",
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_is_indented_and_keeps_numbers_exact() {
        console::set_colors_enabled(false);
        let value: Value = serde_json::from_str(
            r#"{"cookie":{"path":"/","expires":null},"user":{"id":0.36535326065695717},"tags":[],"n":[1,true]}"#,
        )
        .expect("test JSON");
        assert_eq!(
            json(&value),
            "{\n  \"cookie\": {\n    \"path\": \"/\",\n    \"expires\": null\n  },\n  \"user\": {\n    \"id\": 0.36535326065695717\n  },\n  \"tags\": [],\n  \"n\": [\n    1,\n    true\n  ]\n}"
        );
    }

    #[test]
    fn ttls_sizes_times_and_shortening() {
        assert_eq!(ttl(None), "no expiry");
        assert_eq!(ttl(Some(12)), "12s");
        assert_eq!(ttl(Some(300)), "5m 0s");
        assert_eq!(ttl(Some(86_399)), "23h 59m 59s");
        assert_eq!(ttl(Some(90_061)), "1d 1h 1m");
        assert_eq!(size(142), "142 B");
        assert_eq!(size(1234), "1.2 KB");
        assert_eq!(size(3_400_000), "3.4 MB");
        assert_eq!(
            time_of_day(UNIX_EPOCH + std::time::Duration::from_secs(86_400 + 3723)),
            "01:02:03"
        );
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
