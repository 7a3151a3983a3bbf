//! The dashboard page: one HTML document with its style and script
//! inline, so that it works offline and behind any proxy, served with a
//! Content-Security-Policy that allows exactly those two inline blocks
//! (by hash) and requests to the admin port itself.
//!
//! The sources stay three files (`ui/index.html`, `ui/app.css`,
//! `ui/app.js`) for editing; they are joined once, on first use.

use std::sync::OnceLock;

use base64::Engine as _;
use ring::digest;

const HTML: &str = include_str!("ui/index.html");
const CSS: &str = include_str!("ui/app.css");
const JS: &str = include_str!("ui/app.js");

/// The page and its Content-Security-Policy.
pub struct Page {
    pub html: String,
    pub csp: String,
}

fn hash(text: &str) -> String {
    let d = digest::digest(&digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

pub fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: HTML.replacen("/*CSS*/", CSS, 1).replacen("/*JS*/", JS, 1),
        csp: format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(JS),
            hash(CSS)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_its_assets_and_loads_nothing_else() {
        let p = page();
        assert!(p.html.contains(&format!("<style>{CSS}</style>")));
        assert!(p.html.contains(&format!("<script>{JS}</script>")));
        // No external scripts, styles, fonts or images.
        for needle in [
            "src=\"http",
            "href=\"http",
            "@import",
            "url(",
            "<script src",
        ] {
            assert!(!p.html.contains(needle), "{needle}");
        }
        assert!(p.csp.contains("script-src 'sha256-"));
        assert!(!p.csp.contains("unsafe-inline"));
    }
}
