//! RFC 9111 and RFC 5861 rules on a clock the tests control: every
//! decision takes `now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Method, StatusCode, header};

use super::*;
use crate::cache::entry::{Entry, Meta, unix_ms};
use crate::cache::key::KeyId;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

fn settings() -> Settings {
    Settings {
        statuses: Box::new([200, 301, 302, 404]),
        default_ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        store_set_cookie: false,
    }
}

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(), // ok: test code (a #[cfg(test)] module of freshness.rs)
            v.parse().unwrap(), // ok: test code (a #[cfg(test)] module of freshness.rs)
        );
    }
    m
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// A response of `status` with `headers` (plus `Date: t0`), received at
/// t0 for a GET with `request` headers.
fn store(
    s: &Settings,
    status: u16,
    headers: &[(&str, &str)],
    request: &[(&str, &str)],
) -> Result<(Storable, Entry), NotStored> {
    let mut resp = h(headers);
    if !resp.contains_key(header::DATE) {
        resp.insert(header::DATE, date(t0()).parse().unwrap()); // ok: test code (a #[cfg(test)] module of freshness.rs)
    }
    let req = h(request);
    let st = StatusCode::from_u16(status).unwrap(); // ok: test code (a #[cfg(test)] module of freshness.rs)
    let storable = storable(s, &Method::GET, &req, true, st, &resp, t0())?;
    let meta = Meta {
        status: st,
        method: Method::GET,
        headers: storable.headers.clone(),
        request: storable.request.clone(),
        response_time: unix_ms(t0()),
        stored_at: unix_ms(t0()),
        expires_at: unix_ms(t0() + storable.retention),
        default_ttl: storable.default_ttl,
        key: KeyId([0; 16]),
        route: "r".into(),
        tags: Box::new([]),
    };
    Ok((storable, Entry::new(meta, 0)))
}

fn entry(headers: &[(&str, &str)]) -> Entry {
    store(&settings(), 200, headers, &[]).unwrap().1 // ok: test code (a #[cfg(test)] module of freshness.rs)
}

fn verdict(e: &Entry, request: &[(&str, &str)], now: SystemTime) -> Verdict {
    decide(e, &settings(), &h(request), true, now)
}

fn is_fresh(v: &Verdict) -> bool {
    matches!(v, Verdict::Fresh { .. })
}

#[test]
fn max_age_decides_freshness() {
    let e = entry(&[("cache-control", "max-age=60")]);
    assert_eq!(
        verdict(&e, &[], at(0)),
        Verdict::Fresh {
            ttl: Duration::from_secs(60)
        }
    );
    assert!(is_fresh(&verdict(&e, &[], at(59))));
    assert!(!is_fresh(&verdict(&e, &[], at(60))));
    assert!(!is_fresh(&verdict(&e, &[], at(61))));
}

#[test]
fn s_maxage_wins_over_max_age_which_wins_over_expires() {
    let e = entry(&[
        ("cache-control", "max-age=100, s-maxage=10"),
        ("expires", &date(at(1000))),
    ]);
    assert!(is_fresh(&verdict(&e, &[], at(9))));
    assert!(!is_fresh(&verdict(&e, &[], at(11))));
    let e = entry(&[("cache-control", "max-age=100"), ("expires", &date(at(10)))]);
    assert!(is_fresh(&verdict(&e, &[], at(99))));
    let e = entry(&[("expires", &date(at(30)))]);
    assert!(is_fresh(&verdict(&e, &[], at(29))));
    assert!(!is_fresh(&verdict(&e, &[], at(31))));
}

#[test]
fn age_from_upstream_counts() {
    let e = entry(&[("cache-control", "max-age=60"), ("age", "50")]);
    assert!(is_fresh(&verdict(&e, &[], at(9))));
    assert!(!is_fresh(&verdict(&e, &[], at(11))));
    assert_eq!(age(&e, at(5)), Duration::from_secs(55));
}

#[test]
fn heuristic_freshness_only_for_heuristically_cacheable_statuses() {
    let ten_days_ago = date(t0() - Duration::from_secs(10 * 86400));
    let e = store(&settings(), 200, &[("last-modified", &ten_days_ago)], &[])
        .unwrap()
        .1;
    // 10% of the time since the last modification.
    assert!(is_fresh(&verdict(&e, &[], at(86400 - 1))));
    assert!(!is_fresh(&verdict(&e, &[], at(86400 + 1))));
    // 302 has no heuristic freshness, and nothing else to store it for.
    assert!(store(&settings(), 302, &[("last-modified", &ten_days_ago)], &[]).is_err());
    // With explicit freshness it is stored.
    assert!(store(&settings(), 302, &[("cache-control", "max-age=5")], &[]).is_ok());
}

#[test]
fn default_ttl_applies_only_without_freshness() {
    let s = Settings {
        default_ttl: Some(Duration::from_secs(300)),
        ..settings()
    };
    let (st, e) = store(&s, 200, &[], &[]).unwrap();
    assert_eq!(st.default_ttl, 300);
    assert!(is_fresh(&decide(&e, &s, &HeaderMap::new(), true, at(299))));
    assert!(!is_fresh(&decide(&e, &s, &HeaderMap::new(), true, at(301))));
    // The synthetic directive never reaches clients.
    assert!(!e.meta.headers.contains_key(header::CACHE_CONTROL));
    // The response's own freshness wins.
    let (st, _) = store(&s, 200, &[("cache-control", "max-age=5")], &[]).unwrap();
    assert_eq!((st.default_ttl, st.freshness), (0, Duration::from_secs(5)));
    // no-cache is not "no freshness information".
    assert_eq!(
        store(&s, 200, &[("cache-control", "no-cache")], &[]).unwrap_err(),
        NotStored::Useless
    );
    // Not a heuristic status.
    assert!(store(&s, 302, &[], &[]).is_err());
    // Without defaultTtl, a response saying nothing is not stored.
    assert_eq!(
        store(&settings(), 200, &[], &[]).unwrap_err(),
        NotStored::Useless
    );
}

#[test]
fn what_a_shared_cache_must_not_store() {
    let s = settings();
    let no = |headers: &[(&str, &str)], request: &[(&str, &str)]| {
        store(&s, 200, headers, request).is_err()
    };
    assert!(no(&[("cache-control", "max-age=60, no-store")], &[]));
    assert!(no(
        &[("cache-control", "max-age=60")],
        &[("cache-control", "no-store")]
    ));
    assert!(no(&[("cache-control", "private, max-age=60")], &[]));
    // Credentials: only public, s-maxage or must-revalidate allow it.
    assert!(no(
        &[("cache-control", "max-age=60")],
        &[("authorization", "Bearer x")]
    ));
    for allowed in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        assert!(
            !no(
                &[("cache-control", allowed)],
                &[("authorization", "Bearer x")]
            ),
            "{allowed}"
        );
    }
    // Vary: * never matches, so it is never stored.
    assert_eq!(
        store(
            &s,
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            &[]
        )
        .unwrap_err(),
        NotStored::VaryStar
    );
    // Statuses outside the route's list.
    assert_eq!(
        store(&s, 500, &[("cache-control", "max-age=60")], &[]).unwrap_err(),
        NotStored::Status
    );
}

#[test]
fn set_cookie_is_stored_only_when_configured_and_never_replayed() {
    let cookie = [
        ("cache-control", "max-age=60"),
        ("set-cookie", "session=abc"),
    ];
    assert_eq!(
        store(&settings(), 200, &cookie, &[]).unwrap_err(),
        NotStored::SetCookie
    );
    let s = Settings {
        store_set_cookie: true,
        ..settings()
    };
    let (st, e) = store(&s, 200, &cookie, &[]).unwrap();
    assert!(!st.headers.contains_key(header::SET_COOKIE));
    assert!(is_fresh(&decide(&e, &s, &HeaderMap::new(), true, at(30))));
}

#[test]
fn vary_names_are_kept_and_checked() {
    let (st, e) = store(
        &settings(),
        200,
        &[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Encoding, accept-language"),
        ],
        &[
            ("accept-encoding", "gzip"),
            ("accept-language", "de"),
            ("user-agent", "x"),
        ],
    )
    .unwrap();
    let names: Vec<&str> = st.vary.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["accept-encoding", "accept-language"]);
    // The request view keeps what the policy reads, and nothing else.
    assert!(st.request.contains_key("accept-language"));
    assert!(!st.request.contains_key("user-agent"));
    let same = [
        ("accept-encoding", "gzip"),
        ("accept-language", "de"),
        ("cache-control", "max-stale=0"),
    ];
    assert!(is_fresh(&verdict(&e, &same, at(1))));
    // A request with other values is not served this variant.
    let other = [
        ("accept-encoding", "br"),
        ("accept-language", "de"),
        ("cache-control", "max-stale=0"),
    ];
    assert!(matches!(
        verdict(&e, &other, at(1)),
        Verdict::Revalidate { ref validators, .. } if validators.is_empty()
    ));
}

#[test]
fn no_cache_and_must_revalidate_revalidate_with_validators() {
    let e = store(
        &settings(),
        200,
        &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
        &[],
    )
    .unwrap()
    .1;
    match verdict(&e, &[], at(0)) {
        Verdict::Revalidate {
            validators,
            stale_if_error_until,
            by_request,
        } => {
            assert_eq!(
                validators,
                [(header::IF_NONE_MATCH, "\"v1\"".parse().unwrap())]
            );
            assert_eq!(stale_if_error_until, None);
            assert!(!by_request);
        }
        v => panic!("{v:?}"),
    }
    let lm = date(t0() - Duration::from_secs(3600));
    let e = entry(&[
        ("cache-control", "max-age=10, must-revalidate"),
        ("last-modified", &lm),
    ]);
    assert!(is_fresh(&verdict(&e, &[], at(5))));
    match verdict(&e, &[], at(11)) {
        Verdict::Revalidate {
            validators,
            stale_if_error_until,
            ..
        } => {
            assert_eq!(
                validators,
                [(header::IF_MODIFIED_SINCE, lm.parse().unwrap())]
            );
            // must-revalidate forbids serving it stale, even on errors.
            assert_eq!(stale_if_error_until, None);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn request_directives_send_fresh_entries_upstream() {
    let e = entry(&[("cache-control", "max-age=60"), ("etag", "\"v\"")]);
    for req in [
        [("cache-control", "no-cache")],
        [("cache-control", "max-age=0")],
        [("pragma", "no-cache")],
    ] {
        match verdict(&e, &req, at(5)) {
            Verdict::Revalidate { by_request, .. } => assert!(by_request, "{req:?}"),
            v => panic!("{req:?}: {v:?}"),
        }
    }
    // max-stale lets a client accept a stale entry.
    assert!(is_fresh(&verdict(
        &e,
        &[("cache-control", "max-stale=100")],
        at(90)
    )));
}

#[test]
fn a_304_freshens_the_entry_when_its_validator_matches() {
    let s = settings();
    let e = entry(&[
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("content-type", "text/plain"),
        ("x-old", "1"),
    ]);
    assert!(!is_fresh(&verdict(&e, &[], at(20))));
    let not_modified = h(&[
        ("cache-control", "max-age=100"),
        ("etag", "\"v1\""),
        ("x-old", "2"),
        ("set-cookie", "a=b"),
    ]);
    let meta = freshened(&e, &s, &not_modified, at(20)).expect("same validator");
    assert_eq!(meta.headers["x-old"], "2");
    assert_eq!(meta.headers["content-type"], "text/plain");
    assert!(!meta.headers.contains_key(header::SET_COOKIE));
    let fresh = Entry::new(meta, 0);
    assert!(is_fresh(&verdict(&fresh, &[], at(119))));
    assert!(!is_fresh(&verdict(&fresh, &[], at(121))));
    // A 304 about another representation does not touch the entry.
    let other = h(&[("cache-control", "max-age=100"), ("etag", "\"v2\"")]);
    assert!(freshened(&e, &s, &other, at(20)).is_none());
}

#[test]
fn stale_while_revalidate_from_the_response_or_the_route() {
    let e = entry(&[("cache-control", "max-age=10, stale-while-revalidate=30")]);
    assert!(is_fresh(&verdict(&e, &[], at(5))));
    assert_eq!(
        verdict(&e, &[], at(15)),
        Verdict::StaleWhileRevalidate {
            stale_for: Duration::from_secs(5),
            validators: Vec::new()
        }
    );
    assert!(matches!(
        verdict(&e, &[], at(41)),
        Verdict::Revalidate { .. }
    ));
    // The route's setting applies when the response says nothing...
    let s = Settings {
        stale_while_revalidate: Some(Duration::from_secs(20)),
        ..settings()
    };
    let (st, e) = store(&s, 200, &[("cache-control", "max-age=10")], &[]).unwrap();
    assert_eq!(st.retention, Duration::from_secs(30));
    assert!(matches!(
        decide(&e, &s, &HeaderMap::new(), true, at(25)),
        Verdict::StaleWhileRevalidate { .. }
    ));
    // ...but never against must-revalidate or s-maxage.
    for cc in [
        "max-age=10, must-revalidate",
        "s-maxage=10",
        "max-age=10, proxy-revalidate",
    ] {
        let e = store(&s, 200, &[("cache-control", cc), ("etag", "\"x\"")], &[])
            .unwrap()
            .1;
        assert!(
            matches!(
                decide(&e, &s, &HeaderMap::new(), true, at(15)),
                Verdict::Revalidate { .. }
            ),
            "{cc}"
        );
    }
    // A client asking for validation is not served stale.
    let e = entry(&[("cache-control", "max-age=10, stale-while-revalidate=30")]);
    assert!(matches!(
        verdict(&e, &[("cache-control", "no-cache")], at(15)),
        Verdict::Revalidate { .. }
    ));
}

#[test]
fn stale_if_error_window() {
    let e = entry(&[("cache-control", "max-age=10, stale-if-error=60")]);
    match verdict(&e, &[], at(30)) {
        Verdict::Revalidate {
            stale_if_error_until,
            ..
        } => assert_eq!(stale_if_error_until, Some(at(70))),
        v => panic!("{v:?}"),
    }
    let s = Settings {
        stale_if_error: Some(Duration::from_secs(300)),
        ..settings()
    };
    let (st, e) = store(&s, 200, &[("cache-control", "max-age=10")], &[]).unwrap();
    assert_eq!(st.retention, Duration::from_secs(310));
    match decide(&e, &s, &HeaderMap::new(), true, at(30)) {
        Verdict::Revalidate {
            stale_if_error_until,
            ..
        } => assert_eq!(stale_if_error_until, Some(at(310))),
        v => panic!("{v:?}"),
    }
}

#[test]
fn retention_keeps_entries_with_validators_for_revalidation() {
    let (st, _) = store(&settings(), 200, &[("cache-control", "max-age=10")], &[]).unwrap();
    assert_eq!(st.retention, Duration::from_secs(10));
    let (st, _) = store(
        &settings(),
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"x\"")],
        &[],
    )
    .unwrap();
    assert_eq!(st.retention, Duration::from_secs(70));
    let (st, _) = store(
        &settings(),
        200,
        &[("cache-control", "max-age=31536000")],
        &[],
    )
    .unwrap();
    assert_eq!(st.retention, MAX_RETENTION);
}
