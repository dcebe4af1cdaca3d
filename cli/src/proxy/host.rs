//! From a request to a [`Target`]: the `Host` header, the path, and the routing table.
//!
//! Owns the request checks that come before routing (one `Host`, no `CONNECT`, framing the
//! proxy can trust) and the lookup host → route → rule → target. An absolute-form request
//! target (`GET http://elsewhere/x`) is routed by `Host` and its path only, never to the host
//! it names. It never touches the network.

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};

use super::error::ProxyError;
use super::routing::{HostRoute, RoutingTable, Target};

/// The checks every request passes before it is routed. Returns the `Host` value the client
/// sent (kept for `X-Forwarded-Host`).
pub fn check_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, ProxyError> {
    if method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    // Framing is hyper's: differing `Content-Length`s are a 400 before we see the request;
    // with `Transfer-Encoding` and `Content-Length`, hyper drops the length, reads the chunked
    // body and closes the connection after the response (RFC 9112 6.3), so nothing after the
    // body can be read as a second request. Upstream framing is rebuilt from the body.
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest(
            "a request must carry exactly one `Host` header".into(),
        )),
        (Some(host), None) => {
            if host.to_str().is_err() || host.is_empty() {
                return Err(ProxyError::BadRequest(
                    "the `Host` header is not a valid host".into(),
                ));
            }
            Ok(Some(host.clone()))
        }
        // HTTP/1.0 does not require it, but without it nothing says which deployment or alias
        // is meant (listing every host in a 404 would say too much).
        (None, _) => Err(ProxyError::BadRequest(format!(
            "a request must carry a `Host` header naming a deployment or alias (this {version:?} request has none)"
        ))),
    }
}

/// An HTTP/2 request names its host in `:authority` (the URI), not in `Host`: put it there,
/// so routing and `X-Forwarded-Host` see what an HTTP/1.1 request would carry. A `Host` the
/// client sent as well wins (RFC 9113 8.3.1 says they must agree).
pub fn authority_as_host(uri: &Uri, headers: &mut HeaderMap) {
    if headers.contains_key(HOST) {
        return;
    }
    if let Some(authority) = uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(HOST, value);
        }
    }
}

/// The path (normalised as the rules match it) and the query, unchanged, as the upstream
/// will receive them.
pub fn normalized_path_and_query(uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    let path = uri.path();
    let normalized = crate::rules::normalize_path(path)
        .map_err(|error| ProxyError::BadRequest(format!("the request path is refused: {error}")))?;
    let unchanged = normalized.as_ref() == path;
    match (uri.path_and_query(), uri.query()) {
        // The common case: nothing to rebuild, no allocation.
        (Some(path_and_query), _) if unchanged && uri.authority().is_none() => {
            Ok(path_and_query.clone())
        }
        (_, Some(query)) => PathAndQuery::try_from(format!("{normalized}?{query}")),
        (_, None) => PathAndQuery::try_from(normalized.as_ref()),
    }
    .map_err(|_| ProxyError::BadRequest("the request path is not a valid absolute path".into()))
}

/// The target of a request to `host` with `method` and (normalised) `path`, and the number
/// (from 1) of the path alias rule that chose it.
pub fn resolve<'table>(
    table: &'table RoutingTable,
    host: Option<&HeaderValue>,
    method: &Method,
    path: &str,
) -> Result<(&'table Target, Option<u32>), ProxyError> {
    let host_text = host.and_then(|host| host.to_str().ok()).unwrap_or("");
    let Some(route) = table.get(host_text) else {
        return Err(ProxyError::NoRoute {
            host: host_text.to_owned(),
            hosts: table.hosts(),
        });
    };
    match route {
        HostRoute::Target(target) => Ok((target, None)),
        HostRoute::Rules(path_rules) => path_rules
            .rule_set()
            .route(method, path)
            .and_then(|index| {
                let target = path_rules.target(index)?;
                Some((target, u32::try_from(index + 1).ok()))
            })
            .ok_or_else(|| ProxyError::NoRuleMatches {
                host: host_text.to_owned(),
                method: method.clone(),
                path: path.to_owned(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, version: Version, pairs: &[(&str, &str)]) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        check_request(&method, version, &headers)
            .map(|_| ())
            .map_err(|error| error.code())
    }

    #[test]
    fn request_checks() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        assert_eq!(
            check(Method::GET, HTTP_11, &[("host", "a.localhost")]),
            Ok(())
        );
        // Without `Host` nothing names the deployment, in HTTP/1.0 too.
        assert_eq!(check(Method::GET, HTTP_10, &[]), Err("bad_request"));
        assert_eq!(check(Method::GET, HTTP_10, &[("host", "a")]), Ok(()));
        assert_eq!(check(Method::GET, HTTP_11, &[]), Err("bad_request"));
        assert_eq!(
            check(Method::GET, HTTP_11, &[("host", "a"), ("host", "b")]),
            Err("bad_request")
        );
        assert_eq!(
            check(Method::CONNECT, HTTP_11, &[("host", "a")]),
            Err("method_not_allowed")
        );
    }

    #[test]
    fn absolute_form_keeps_only_path_and_query() {
        let uri: Uri = "http://evil.example/a/b?x=1".parse().unwrap();
        assert_eq!(normalized_path_and_query(&uri).unwrap(), "/a/b?x=1");
        let uri: Uri = "/plain?q".parse().unwrap();
        assert_eq!(normalized_path_and_query(&uri).unwrap(), "/plain?q");
    }
}
