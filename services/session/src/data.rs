//! A session's contents as connect-redis stores them: one JSON object, fields in their order.
//!
//! Owns the ordered field map (field name -> raw JSON text, so fields this code never reads keep
//! their exact bytes, order and number text across a save), the `cookie` object's `expires`, and
//! the TTL rule of SESSION-FORMAT.md. It never talks to Redis.

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::{SystemTime, UNIX_EPOCH};

/// TTL of a session whose cookie has no `expires` (connect-redis's default: one day).
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("the stored session is not a JSON object: {0}")]
    NotAnObject(#[source] serde_json::Error),
}

/// The fields of one session, in stored order, each kept as its raw JSON text.
#[derive(Debug, Clone)]
pub struct SessionData {
    fields: IndexMap<String, Box<RawValue>>,
    rotate_id: bool,
}

impl SessionData {
    /// A new session holding only its `cookie` object (given as JSON, see
    /// `cookie::CookieOptions::stored_json`).
    pub fn new(cookie_json: &str) -> Self {
        let mut fields = IndexMap::new();
        let cookie = RawValue::from_string(cookie_json.to_owned())
            .expect("CookieOptions::stored_json renders a valid JSON object");
        fields.insert("cookie".to_owned(), cookie);
        Self {
            fields,
            rotate_id: false,
        }
    }

    /// Parses a stored value. Anything but a JSON object is an error.
    pub fn parse(raw: &str) -> Result<Self, DataError> {
        let fields = serde_json::from_str(raw).map_err(DataError::NotAnObject)?;
        Ok(Self {
            fields,
            rotate_id: false,
        })
    }

    /// The stored form: compact JSON, fields in order, untouched fields byte for byte.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.fields)
            .expect("a map of strings to valid raw JSON always serialises")
    }

    /// A field's raw JSON text.
    pub fn get_raw(&self, name: &str) -> Option<&RawValue> {
        self.fields.get(name).map(AsRef::as_ref)
    }

    /// A field's raw JSON text when JavaScript would find it truthy (present and not `null`,
    /// `false`, `0` or `""`), which is how the demo tests `req.session.user`.
    pub fn get_truthy(&self, name: &str) -> Option<&RawValue> {
        self.get_raw(name).filter(|raw| {
            let falsy_number = raw
                .get()
                .parse::<f64>()
                .is_ok_and(|n| n == 0.0 || n.is_nan());
            !matches!(raw.get(), "null" | "false" | "\"\"") && !falsy_number
        })
    }

    /// A field decoded as `T`; `None` when it is absent, `null`, or of another shape.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        serde_json::from_str(self.fields.get(name)?.get()).ok()
    }

    /// Sets a field, keeping its place if it exists and appending it otherwise (as a JS object).
    pub fn set<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        let raw = serde_json::value::to_raw_value(value)
            .expect("session values are plain data that always serialise");
        self.fields.insert(name.to_owned(), raw);
    }

    /// Removes a field, keeping the order of the others.
    pub fn remove(&mut self, name: &str) {
        self.fields.shift_remove(name);
    }

    /// Asks that the session get a new id when this change is saved (login: an id planted
    /// before it is worthless after it). The data is kept; the old key is deleted.
    pub fn rotate_id(&mut self) {
        self.rotate_id = true;
    }

    pub(crate) fn take_rotate_id(&mut self) -> bool {
        std::mem::take(&mut self.rotate_id)
    }

    /// `cookie.expires` in milliseconds since the epoch, when set and readable.
    pub fn expires_ms(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct Cookie {
            expires: Option<String>,
        }
        let cookie: Cookie = self.get("cookie")?;
        parse_iso8601_ms(&cookie.expires?)
    }

    /// Seconds the stored session should live, per SESSION-FORMAT.md: ceil((expires - now) /
    /// 1000) when `cookie.expires` is set, otherwise one day. Zero or less means delete it.
    /// An unreadable `expires` counts as unset (connect-redis would compute NaN there).
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        match self.expires_ms() {
            Some(expires) => {
                let now_ms = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                });
                let remaining = expires.saturating_sub(now_ms);
                // ceil for integers, also right for negative numbers.
                remaining.div_euclid(1000) + i64::from(remaining.rem_euclid(1000) != 0)
            }
            None => DEFAULT_TTL_SECONDS,
        }
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (RFC 3339; `t`, `z`
/// and a space for `T` accepted), the shape `Date.prototype.toISOString` writes. `None` for
/// anything else, a day the month does not have included.
pub fn parse_iso8601_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Keep milliseconds; further digits are below what JS dates hold.
        let kept = &fraction[..digits.min(3)];
        millis = kept.parse::<i64>().ok()? * 10_i64.pow(3 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NODE_WRITTEN: &str = r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":{"id":0.36535326065695717},"count":1,"flash":{"note":"kept","n":1.50,"big":12345678901234567890}}"#;

    #[test]
    fn round_trips_unknown_fields_exactly() {
        let mut data = SessionData::parse(NODE_WRITTEN).expect("a JSON object");
        assert_eq!(data.to_json(), NODE_WRITTEN);
        assert_eq!(
            data.get_raw("user").map(RawValue::get),
            Some(r#"{"id":0.36535326065695717}"#)
        );
        data.set("count", &2);
        data.set("added", "x");
        let expected = NODE_WRITTEN.replace(r#""count":1"#, r#""count":2"#);
        let expected = format!(
            r#"{},"added":"x"}}"#,
            expected.trim_end_matches('}').to_owned() + "}"
        );
        assert_eq!(data.to_json(), expected);
        data.remove("count");
        assert!(!data.to_json().contains("count"));
        assert!(data
            .to_json()
            .contains(r#""n":1.50,"big":12345678901234567890"#));
        assert_eq!(data.get::<i64>("missing"), None);
        let falsy = ["null", "false", "0", "0.0", r#""""#];
        let truthy = ["{}", r#""0""#, "0.5", "[]"];
        for (value, is_truthy) in falsy
            .iter()
            .map(|v| (v, false))
            .chain(truthy.iter().map(|v| (v, true)))
        {
            let raw = RawValue::from_string((*value).to_owned()).expect("valid JSON");
            data.set("user", &raw);
            assert_eq!(
                data.get_truthy("user").is_some(),
                is_truthy,
                "user = {value}"
            );
        }
        assert!(SessionData::parse("[1]").is_err());
        assert!(SessionData::parse("not json").is_err());
    }

    #[test]
    fn parses_the_dates_javascript_writes() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_iso8601_ms("2026-11-29T03:00:00.000Z"),
            Some(1_795_921_200_000)
        );
        assert_eq!(
            parse_iso8601_ms("2000-02-29T12:34:56.789Z"),
            Some(951_827_696_789)
        );
        assert_eq!(
            parse_iso8601_ms("2000-02-29T13:34:56.7+01:00"),
            Some(951_827_696_700)
        );
        assert_eq!(parse_iso8601_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-11-29T03:00:00",
            "2026-11-29T03:00:00.Z",
        ] {
            assert_eq!(parse_iso8601_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn computes_the_ttl_from_cookie_expires() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_921_200_000);
        let with_expires = |expires: &str| {
            SessionData::parse(&format!(
                r#"{{"cookie":{{"originalMaxAge":1000,"expires":{expires}}}}}"#
            ))
            .expect("a JSON object")
        };
        let cases = [
            ("null", DEFAULT_TTL_SECONDS),
            (r#""2026-11-29T03:00:10.000Z""#, 10),
            (r#""2026-11-29T03:00:10.001Z""#, 11),
            (r#""2026-11-29T03:00:00.500Z""#, 1),
            (r#""2026-11-29T03:00:00.000Z""#, 0),
            (r#""2026-11-29T02:59:58.500Z""#, -1),
            (r#""not a date""#, DEFAULT_TTL_SECONDS),
        ];
        for (expires, ttl) in cases {
            assert_eq!(
                with_expires(expires).ttl_seconds(now),
                ttl,
                "expires {expires}"
            );
        }
        assert_eq!(
            SessionData::parse("{}").expect("object").ttl_seconds(now),
            DEFAULT_TTL_SECONDS
        );
    }
}
