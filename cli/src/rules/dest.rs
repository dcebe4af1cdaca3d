//! A rule's `dest`: which of RULES.md's forms it has. Only the form is decided here; whether a
//! service, deployment or alias of that name exists is for the running stack to say.

use std::fmt;

use http::uri::{Authority, Scheme};

/// Where a rule sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A bare name or a `*.localhost` host: a service, a deployment id or another alias,
    /// resolved against the running stack (the supervisor does that). Kept as written.
    Local(String),
    /// `<service>-<id>.now.sh` from an old file: falls back to the service before the last `-`.
    NowSh { host: String, service: String },
    /// A URL or host:port outside the stack, proxied as is.
    External {
        scheme: Scheme,
        authority: Authority,
    },
}

impl Dest {
    /// Reads a non-empty `dest` string; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Dest, String> {
        if text.contains("://") {
            return parse_url(text);
        }
        if text.contains(':') {
            let authority: Authority = text
                .parse()
                .map_err(|_| "is not a valid host:port".to_string())?;
            if authority.port_u16().is_none() || text.contains('@') {
                return Err("is not a valid host:port".into());
            }
            return Ok(Dest::External {
                scheme: Scheme::HTTP,
                authority,
            });
        }
        check_host(text)?;
        let lower = text.to_ascii_lowercase();
        if let Some(label) = lower.strip_suffix(".now.sh") {
            if label.contains('.') {
                return Err("is a now.sh host with more than one label before `.now.sh`".into());
            }
            let service = label.rsplit_once('-').map_or(label, |(service, _)| service);
            return Ok(Dest::NowSh {
                host: lower.clone(),
                service: service.to_string(),
            });
        }
        Ok(Dest::Local(text.to_string()))
    }

    /// How the form reads in `stack route` and `stack alias ls`.
    pub fn describe(&self) -> String {
        match self {
            Dest::Local(name) => format!(
                "`{name}`: a service, deployment or alias of this stack (resolved by `stack up`)"
            ),
            Dest::NowSh { host, service } => format!(
                "`{host}`: a now.sh deployment; falls back to the service `{service}` when no local deployment has that id"
            ),
            Dest::External { scheme, authority } => {
                format!("`{scheme}://{authority}`: outside the stack, proxied as is")
            }
        }
    }
}

impl fmt::Display for Dest {
    /// The text a rules file uses for this dest; it parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Local(name) => f.write_str(name),
            Dest::NowSh { host, .. } => f.write_str(host),
            Dest::External { scheme, authority } => write!(f, "{scheme}://{authority}"),
        }
    }
}

fn parse_url(text: &str) -> Result<Dest, String> {
    let uri: http::Uri = text.parse().map_err(|_| "is not a valid URL".to_string())?;
    let scheme = uri.scheme().cloned().ok_or("is not a valid URL")?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "has the scheme `{scheme}`; only `http` and `https` are proxied"
        ));
    }
    let authority = uri.authority().cloned().ok_or("is a URL without a host")?;
    if authority.as_str().contains('@') {
        return Err("is a URL with credentials; they cannot go in a rules file".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "is a URL with a path or query; stack forwards the request path unchanged, so a dest is only scheme://host[:port]"
                .into(),
        );
    }
    Ok(Dest::External { scheme, authority })
}

/// A DNS name: dot-separated labels of letters, digits and `-`, not starting or ending with `-`.
pub(crate) fn check_host(text: &str) -> Result<(), String> {
    if text.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in text.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(
                "is not a service, deployment id, host name or URL (names use letters, digits, `-` and `.`)"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(text: &str) -> Dest {
        let uri: http::Uri = text.parse().unwrap();
        Dest::External {
            scheme: uri.scheme().unwrap().clone(),
            authority: uri.authority().unwrap().clone(),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(Dest::parse("writer"), Ok(Dest::Local("writer".into())));
        assert_eq!(
            Dest::parse("writer-gkdldldejq.localhost"),
            Ok(Dest::Local("writer-gkdldldejq.localhost".into()))
        );
        assert_eq!(
            Dest::parse("my-writer-gkdldldejq.now.sh"),
            Ok(Dest::NowSh {
                host: "my-writer-gkdldldejq.now.sh".into(),
                service: "my-writer".into()
            })
        );
        assert_eq!(
            Dest::parse("http://127.0.0.1:9000"),
            Ok(external("http://127.0.0.1:9000"))
        );
        assert_eq!(
            Dest::parse("https://example.com/"),
            Ok(external("https://example.com"))
        );
        assert_eq!(
            Dest::parse("127.0.0.1:9000"),
            Ok(external("http://127.0.0.1:9000"))
        );
        for bad in [
            "http://x/api",
            "ftp://x",
            "http://u:p@x",
            "a b",
            "-x",
            "x..y",
            "x:",
            "x_y",
        ] {
            assert!(Dest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_parses_back() {
        for text in ["writer", "a.localhost", "w-abc.now.sh", "http://h:1", "h:2"] {
            let dest = Dest::parse(text).unwrap();
            assert_eq!(Dest::parse(&dest.to_string()), Ok(dest));
        }
    }
}
