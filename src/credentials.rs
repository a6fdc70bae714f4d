//! What a request carries to prove who sent it, read in one place: cookies, a bearer token
//! (`Authorization: Bearer`), the platform's account JWT in a cookie or header. Reading only:
//! whether any of it verifies is decided elsewhere.

use pingora::http::RequestHeader;

/// Every `(name, value)` pair of the request's `Cookie` headers.
pub fn all_cookies(req: &RequestHeader) -> impl Iterator<Item = (&str, &str)> + '_ {
    req.headers
        .get_all(http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
}

/// Every value of cookie `name` in the request's `Cookie` headers.
pub fn cookies<'a, 'n>(req: &'a RequestHeader, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
where
    'a: 'n,
{
    all_cookies(req).filter_map(move |(k, v)| (k == name).then_some(v))
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer(req: &RequestHeader) -> Option<&str> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A header value with its `Bearer ` scheme (any case) taken off, if it has one.
pub fn without_bearer_scheme(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, value: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(name.to_string(), value).unwrap();
        req
    }

    #[test]
    fn bearer_tokens_are_read_with_any_case_of_the_scheme() {
        assert_eq!(bearer(&request("authorization", "Bearer abc")), Some("abc"));
        assert_eq!(
            bearer(&request("authorization", "bearer  abc ")),
            Some("abc")
        );
        assert_eq!(bearer(&request("authorization", "Basic abc")), None);
        assert_eq!(bearer(&request("authorization", "Bearer ")), None);
        assert_eq!(without_bearer_scheme(" BEARER x "), "x");
        assert_eq!(without_bearer_scheme("x"), "x");
    }

    #[test]
    fn cookies_are_found_by_name_in_every_header() {
        let mut req = request("cookie", "a=1; b=\"2\"");
        req.append_header("cookie", "a=3").unwrap();
        assert_eq!(cookies(&req, "a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(cookies(&req, "b").collect::<Vec<_>>(), ["2"]);
        assert_eq!(all_cookies(&req).count(), 3);
    }
}
