//! The auditor's page (`/ui/`): plain HTML, CSS and JavaScript checked into `ui/` and embedded
//! in the binary, so nothing is fetched from elsewhere and there is no build step. Public, like
//! the OpenAPI document: the files carry no data, and every value the page shows comes from an
//! API call made with the token typed into it (held in the page's memory only).
//!
//! Every file is served with a Content-Security-Policy that allows scripts, styles and API
//! calls from this origin only, no inline script or style, no plugins, no framing, no form
//! posts and no `<base>`; `nosniff`, no referrer, and no caching of the page by shared caches.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const VERIFIER: &str = include_str!("../../ui/verify.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// The page's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn file(media: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /ui/`
pub async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`
pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/verify.js`
pub async fn verifier() -> Response {
    file("text/javascript; charset=utf-8", VERIFIER)
}

/// `GET /ui/style.css`
pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}
