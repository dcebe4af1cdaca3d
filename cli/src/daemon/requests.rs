//! The proxy's request log as callers see it (`stack requests`, the dashboard): each
//! [`LoggedRequest`] made into a [`RequestRecord`] with nothing secret left in it.
//!
//! Owns the masking (cookie and authorization values, every secret value of the environment)
//! and the session column: the first 8 characters of the id of a `connect.sid` cookie that
//! verifies with the project's session secrets, never the id itself, never for a cookie that
//! does not verify. This runs when a record is read, not on the proxy's request path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use session::cookie::{find_session_cookie, Secrets};

use crate::control::api::RequestRecord;
use crate::proxy::LoggedRequest;
use crate::state::Alias;
use crate::supervisor::logs::Redactor;
use crate::units;

/// What a record is made with: the project's session secrets, the secret values to mask and
/// the aliases in force.
pub struct Renderer<'a> {
    pub secrets: Option<&'a Secrets>,
    pub redactor: &'a Redactor,
    pub aliases: &'a BTreeMap<String, Alias>,
    pub sessions: &'a SessionCache,
}

/// Cookies already verified, and the session prefix each gave: a browser sends one cookie on
/// many requests, and an HMAC per record would be most of a listing's cost. Bounded: emptied
/// when full.
#[derive(Default)]
pub struct SessionCache {
    verified: Mutex<HashMap<String, Option<String>, foldhash::fast::RandomState>>,
}

/// Cookies remembered at most.
const CACHED_COOKIES: usize = 1024;

impl SessionCache {
    fn prefix(&self, signed: &str, verify: impl FnOnce() -> Option<String>) -> Option<String> {
        let mut verified = self
            .verified
            .lock()
            .expect("never poisoned: nothing panics while it is held");
        if let Some(prefix) = verified.get(signed) {
            return prefix.clone();
        }
        let prefix = verify();
        if verified.len() >= CACHED_COOKIES {
            verified.clear();
        }
        verified.insert(signed.to_owned(), prefix.clone());
        prefix
    }
}

/// Characters of the session id shown.
const SESSION_PREFIX: usize = 8;

impl Renderer<'_> {
    /// The record of `logged`, its headers masked (a brief entry from
    /// [`crate::proxy::RequestLog::since_brief`] has only its cookies: left out here).
    pub fn record(&self, logged: &LoggedRequest) -> RequestRecord {
        let host = &*logged.host;
        let alias = crate::proxy::host_key(host);
        let alias = self
            .aliases
            .contains_key(alias.as_ref())
            .then(|| alias.into_owned());
        RequestRecord {
            seq: logged.seq,
            time: units::rfc3339_ms(logged.time),
            method: logged.method.to_string(),
            host: self.redactor.redact(host),
            path: mask_query_secrets(&self.redactor.redact(&logged.path)),
            status: logged.status,
            duration_ms: (logged.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            bytes_in: logged.bytes_in,
            bytes_out: logged.bytes_out,
            alias,
            rule: logged.rule,
            deployment: logged
                .deployment
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .map(str::to_owned),
            instance: logged.instance,
            session: self.session(logged),
            headers: self.headers(logged),
        }
    }

    fn session(&self, logged: &LoggedRequest) -> Option<String> {
        let secrets = self.secrets?;
        let cookies = logged
            .headers
            .iter()
            .filter(|(name, _)| *name == COOKIE.as_str())
            .filter_map(|(_, value)| std::str::from_utf8(value).ok());
        let signed = find_session_cookie(cookies)?;
        self.sessions.prefix(&signed, || {
            let id = secrets.unsign(&signed)?;
            Some(id.chars().take(SESSION_PREFIX).collect())
        })
    }

    fn headers(&self, logged: &LoggedRequest) -> Vec<(String, String)> {
        let only_cookies = logged
            .headers
            .iter()
            .all(|(name, _)| name == COOKIE.as_str());
        if only_cookies {
            return Vec::new();
        }
        logged
            .headers
            .iter()
            .map(|(name, value)| {
                let text = String::from_utf8_lossy(value);
                let shown = if name == COOKIE.as_str() {
                    mask_cookies(&text)
                } else if name == AUTHORIZATION.as_str() || name == PROXY_AUTHORIZATION.as_str() {
                    mask_credentials(&text)
                } else {
                    self.redactor.redact(&text)
                };
                (name.to_owned(), shown)
            })
            .collect()
    }
}

/// `a=1; connect.sid=s%3A...` as `a=***; connect.sid=***`: the names stay, the values go.
fn mask_cookies(header: &str) -> String {
    header
        .split(';')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{}=***", name.trim()),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `/callback?code=1&access_token=abc` as `/callback?code=1&access_token=***`: a query
/// parameter whose name says it is a secret (as a variable's would, see
/// [`crate::env::names_a_secret`]: `token`, `password`, `api_key`, ...) keeps its name only.
fn mask_query_secrets(path: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && names_a_secret_param(name) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}?{}", masked.join("&"))
}

fn names_a_secret_param(name: &str) -> bool {
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    // A single word such as `key` or `pass` is a secret in a query, as `KEY=` alone in an
    // environment is not (`crate::env::names_a_secret` needs two words for those).
    let word = name.to_ascii_lowercase();
    crate::env::names_a_secret(&name)
        || ["key", "pass", "pwd", "sig", "signature", "auth"].contains(&word.as_str())
}

/// `Bearer abc` as `Bearer ***`: the scheme stays.
fn mask_credentials(header: &str) -> String {
    match header.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} ***"),
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_and_authorization_values_are_masked() {
        assert_eq!(
            mask_cookies("a=1; connect.sid=s%3Aabc.def;b"),
            "a=***; connect.sid=***; ***"
        );
        assert_eq!(mask_credentials("Bearer abc.def"), "Bearer ***");
        assert_eq!(mask_credentials("abc"), "***");
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            mask_query_secrets("/cb?code=1&access_token=abc&password=pw&key=k&empty_token=&x"),
            "/cb?code=1&access_token=***&password=***&key=***&empty_token=&x"
        );
        assert_eq!(mask_query_secrets("/plain"), "/plain");
        assert_eq!(
            mask_query_secrets("/a?page=2&sort=name"),
            "/a?page=2&sort=name"
        );
    }
}
