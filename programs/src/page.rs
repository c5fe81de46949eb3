//! `GET /` of `muster-master --http`: the group as a live page for people, who would rather
//! look than read `curl | jq`.
//!
//! Why it is three embedded files and no framework: the page must work wherever the master
//! runs, offline and without a build chain, so its HTML, script and stylesheet are compiled
//! into the binary (`include_str!`) and it uses nothing but the API every other client
//! uses: a `/v1/members` snapshot continued by `/v1/events` (EventSource, which reconnects
//! and resumes by itself with `Last-Event-ID`), and `/healthz` for the banner. The script
//! and the stylesheet are separate routes (`/page.js`, `/page.css`) because the page is
//! sent with a strict Content-Security-Policy that allows no inline script or style: names
//! and labels come from etcd, which anyone with write access to the prefix can fill, so
//! the page writes them as text only and the policy forbids running anything else.
//! `cache-control: no-cache` makes a browser revalidate, so a new master binary's page is
//! never mixed with an old script.
//!
//! The markup's ids and data attributes (`#health[data-healthy]`, `#filter`,
//! `tr[data-name][data-state]`, `#count-alive`, `#feed li[data-kind]`) are stable: the
//! browser test (`tests/programs/page.rs`) and any scraper may rely on them.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page, with `{{prefix}}` where the group's prefix goes.
const HTML: &str = include_str!("page.html");
/// Its script, served at [`SCRIPT_PATH`].
const SCRIPT: &str = include_str!("page.js");
/// Its stylesheet, served at [`STYLE_PATH`].
const STYLE: &str = include_str!("page.css");

/// Where the page's script is served.
pub const SCRIPT_PATH: &str = "/page.js";
/// Where the page's stylesheet is served.
pub const STYLE_PATH: &str = "/page.css";

/// Same-origin script, style, fetches and event streams only; no inline code, no plugins,
/// no framing, no forms, no `<base>`. `data:` images for the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page for the group under `prefix`.
pub fn page(prefix: &str) -> Response {
    let html = HTML.replace("{{prefix}}", &escape(prefix));
    asset("text/html; charset=utf-8", html)
}

/// `GET /page.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.to_owned())
}

/// `GET /page.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE.to_owned())
}

fn asset(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `text` safe inside HTML text and double-quoted attributes. A prefix is any etcd key
/// (`--prefix` is the operator's, but it is still no markup).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_text_never_markup() {
        assert_eq!(
            escape(r#"/a/<script>"x"&'y'/"#),
            "/a/&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;/"
        );
        let html = HTML.replace("{{prefix}}", &escape("/g<b>/"));
        assert!(html.contains("/g&lt;b&gt;/") && !html.contains("<b>"));
        assert!(!html.contains("{{"), "every placeholder is filled");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy would block them: everything lives in /page.js and /page.css.
        assert!(!HTML.contains("<style"));
        assert!(!HTML.contains(" style="));
        let handler = HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "no inline event handlers (onclick=...)");
        let scripts: Vec<&str> = HTML.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1);
        assert!(scripts[0].starts_with(&format!(r#" src="{SCRIPT_PATH}""#)));
        assert!(HTML.contains(&format!(r#"href="{STYLE_PATH}""#)));
    }
}
