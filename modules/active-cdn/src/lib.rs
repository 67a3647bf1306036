//! ActiveCDN (the NetServ thesis, ch. 7.1): the content provider's own
//! module on the edge cache that its users are sent to. The appliance's
//! cache building block stores and serves; this module decides what only
//! the provider knows:
//!
//! - **keys**: tracking parameters (`ignore_params`) do not split the cache,
//!   on the paths it is asked to normalize (`key_prefixes`);
//! - **bypass**: paths that must always reach the origin (`bypass`, e.g. an API);
//! - **denials**: paths never served at the edge (`deny`: 403);
//! - **policy**: how long its HTML pages stay fresh at the edge (`html_ttl_secs`);
//! - **provider-specific processing**: its banner inserted into each HTML
//!   page after the `<body>` tag (`banner`), once, before the page is
//!   stored, so hits serve the processed page natively.
//!
//! Hooks cost only where declared: requests enter wasm only on the
//! prefixes above, origin answers only when HTML and a banner or TTL is set.
//!
//! This crate is plain Rust and testable natively; `guest.rs` adapts it to
//! the `http-module` WIT world when built for `wasm32-wasip2`.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

#[cfg(target_arch = "wasm32")]
mod guest;

/// The largest HTML page the module transforms; larger ones pass unchanged.
pub const TRANSFORM_MAX_BYTES: u32 = 512 * 1024;
const MAX_BANNER: usize = 4096;
const MAX_LIST: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property `{0}`: {1}")]
pub struct ConfigError(pub &'static str, pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub banner: String,
    pub html_ttl_secs: Option<u32>,
    pub bypass: Vec<String>,
    pub deny: Vec<String>,
    pub key_prefixes: Vec<String>,
    pub ignore_params: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            banner: String::new(),
            html_ttl_secs: None,
            bypass: Vec::new(),
            deny: Vec::new(),
            key_prefixes: Vec::new(),
            ignore_params: ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "fbclid", "gclid"]
                .map(String::from)
                .to_vec(),
        }
    }
}

fn prefixes(name: &'static str, v: &str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if list.len() > MAX_LIST {
        return Err(ConfigError(name, format!("at most {MAX_LIST} entries")));
    }
    if let Some(bad) = list.iter().find(|p| !p.starts_with('/')) {
        return Err(ConfigError(name, format!("`{bad}` is not a path prefix (starts with /)")));
    }
    Ok(list)
}

impl Config {
    pub fn from_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        for (k, v) in props {
            match k {
                "banner" if v.len() > MAX_BANNER => {
                    return Err(ConfigError("banner", format!("at most {MAX_BANNER} bytes")));
                }
                "banner" => c.banner = v.to_owned(),
                "html_ttl_secs" => {
                    let n: u32 =
                        v.parse().map_err(|_| ConfigError("html_ttl_secs", format!("`{v}` is not seconds")))?;
                    c.html_ttl_secs = Some(n);
                }
                "bypass" => c.bypass = prefixes("bypass", v)?,
                "deny" => c.deny = prefixes("deny", v)?,
                "key_prefixes" => c.key_prefixes = prefixes("key_prefixes", v)?,
                "ignore_params" => {
                    c.ignore_params = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                }
                other => return Err(ConfigError("properties", format!("unknown property `{other}`"))),
            }
        }
        Ok(c)
    }

    /// The request paths the module must see.
    pub fn request_prefixes(&self) -> Vec<String> {
        self.bypass.iter().chain(&self.deny).chain(&self.key_prefixes).cloned().collect()
    }

    /// The answers it must see: HTML, when it changes them.
    pub fn response_types(&self) -> Vec<String> {
        if self.banner.is_empty() && self.html_ttl_secs.is_none() { Vec::new() } else { vec!["text/html".into()] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    Cache(Option<String>),
    Bypass,
    Deny(u16),
}

/// What the module does with one request.
pub fn on_request(c: &Config, path_and_query: &str) -> RequestDecision {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    if c.deny.iter().any(|p| path.starts_with(p.as_str())) {
        return RequestDecision::Deny(403);
    }
    if c.bypass.iter().any(|p| path.starts_with(p.as_str())) {
        return RequestDecision::Bypass;
    }
    RequestDecision::Cache(normalized_key(c, path_and_query))
}

/// The key without ignored parameters; `None` when nothing changes.
fn normalized_key(c: &Config, path_and_query: &str) -> Option<String> {
    let (path, query) = path_and_query.split_once('?')?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or(p);
            !c.ignore_params.iter().any(|i| i == name)
        })
        .collect();
    let key = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    (key != path_and_query).then_some(key)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseDecision {
    pub ttl_secs: Option<u32>,
    pub body: Option<Vec<u8>>,
}

/// What the module does with an HTML answer (`body` when small enough).
pub fn on_response(c: &Config, status: u16, body: Option<&[u8]>) -> ResponseDecision {
    if status != 200 {
        return ResponseDecision::default();
    }
    let body = body.filter(|_| !c.banner.is_empty()).map(|b| with_banner(b, c.banner.as_bytes()));
    ResponseDecision { ttl_secs: c.html_ttl_secs, body }
}

/// `page` with `banner` right after its `<body ...>` tag (matched without
/// regard to case), or at its start when it has none.
pub fn with_banner(page: &[u8], banner: &[u8]) -> Vec<u8> {
    let at = find_body_open(page).unwrap_or(0);
    let mut out = Vec::with_capacity(page.len() + banner.len());
    out.extend_from_slice(page.get(..at).unwrap_or_default());
    out.extend_from_slice(banner);
    out.extend_from_slice(page.get(at..).unwrap_or_default());
    out
}

/// The offset just past the `>` of the first `<body` tag.
fn find_body_open(page: &[u8]) -> Option<usize> {
    let start = page.windows(5).position(|w| w.eq_ignore_ascii_case(b"<body"))?;
    // `<body>` or `<body ...>`, not `<bodyguard>`.
    let next = *page.get(start + 5)?;
    if !(next == b'>' || next.is_ascii_whitespace()) {
        return None;
    }
    let close = page.get(start..)?.iter().position(|&b| b == b'>')?;
    Some(start + close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(props: &[(&str, &str)]) -> Config {
        Config::from_properties(props.iter().copied()).expect("valid properties")
    }

    #[test]
    fn the_banner_goes_after_the_body_tag() {
        let b = b"<!--B-->";
        assert_eq!(with_banner(b"<html><BODY class=x>hi</body>", b), b"<html><BODY class=x><!--B-->hi</body>");
        assert_eq!(with_banner(b"<body>", b), b"<body><!--B-->");
        assert_eq!(with_banner(b"no tag", b), b"<!--B-->no tag");
        assert_eq!(with_banner(b"<bodyguard>x", b), b"<!--B--><bodyguard>x");
        assert_eq!(with_banner(b"<body", b), b"<!--B--><body", "an unclosed tag: at the start");
        assert_eq!(with_banner(b"", b), b"<!--B-->");
    }

    #[test]
    fn requests_deny_bypass_and_keys() {
        let c = cfg(&[("bypass", "/api/"), ("deny", "/admin"), ("key_prefixes", "/")]);
        assert_eq!(on_request(&c, "/admin/x"), RequestDecision::Deny(403));
        assert_eq!(on_request(&c, "/api/v1?x=1"), RequestDecision::Bypass);
        assert_eq!(on_request(&c, "/a?utm_source=x&id=3&gclid=y"), RequestDecision::Cache(Some("/a?id=3".into())));
        assert_eq!(on_request(&c, "/a?utm_source=x"), RequestDecision::Cache(Some("/a".into())));
        assert_eq!(on_request(&c, "/a?id=3"), RequestDecision::Cache(None));
        assert_eq!(on_request(&c, "/a"), RequestDecision::Cache(None));
        assert_eq!(c.request_prefixes(), ["/api/", "/admin", "/"]);
    }

    #[test]
    fn responses_get_the_banner_and_ttl_only_when_ok() {
        let c = cfg(&[("banner", "<p>edge</p>"), ("html_ttl_secs", "120")]);
        let d = on_response(&c, 200, Some(b"<body>x"));
        assert_eq!(d, ResponseDecision { ttl_secs: Some(120), body: Some(b"<body><p>edge</p>x".to_vec()) });
        assert_eq!(on_response(&c, 200, None), ResponseDecision { ttl_secs: Some(120), body: None });
        assert_eq!(on_response(&c, 404, Some(b"<body>")), ResponseDecision::default());
        assert_eq!(c.response_types(), ["text/html"]);
        assert!(Config::default().response_types().is_empty(), "nothing to change: no answer enters wasm");
    }

    #[test]
    fn bad_properties_name_themselves() {
        let err = |p: &[(&str, &str)]| Config::from_properties(p.iter().copied()).expect_err("refused").0;
        assert_eq!(err(&[("html_ttl_secs", "soon")]), "html_ttl_secs");
        assert_eq!(err(&[("bypass", "api")]), "bypass");
        assert_eq!(err(&[("colour", "red")]), "properties");
        assert_eq!(err(&[("banner", &"x".repeat(MAX_BANNER + 1))]), "banner");
    }

    proptest::proptest! {
        #[test]
        fn the_banner_is_inserted_once_and_nothing_is_lost(page in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let out = with_banner(&page, b"@@BANNER@@");
            proptest::prop_assert_eq!(out.len(), page.len() + 10);
            let at = out.windows(10).position(|w| w == b"@@BANNER@@").expect("inserted");
            let mut back = out.clone();
            back.drain(at..at + 10);
            proptest::prop_assert_eq!(back, page);
        }
    }
}
