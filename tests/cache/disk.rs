//! The disk storage: entries survive a restart; a truncated or damaged
//! file is a miss and is removed, never a crash or a wrong body; a large
//! body streams from its file and is checked on the way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::semantics::stored;
use crate::cache::{Env, Store, cached_route, fetch, response, status_of, until_hit};
use crate::common::wire::{Capture, Raw};
use crate::common::*;

/// The entry files under `dir` (two-hex-digit subdirectories).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        if sub.file_name().len() != 2 {
            continue;
        }
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let env = Env::new(Store::Disk).await;
    let app =
        Capture::with(|r| response("200 OK", &["cache-control: max-age=600"], &r.line())).await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Disk, "", "");
    let gw = env.gateway(&m).await;
    assert_eq!(
        fetch(&gw, "c.test", "/kept", &[]).await.text(),
        "GET /kept HTTP/1.1"
    );
    stored(&gw).await;
    gw.shutdown().await;
    assert_eq!(files(env.disk.as_ref().unwrap().path()).len(), 1);

    let again = env.gateway(&m).await;
    let r = fetch(&again, "c.test", "/kept", &[]).await;
    assert_eq!(r.text(), "GET /kept HTTP/1.1");
    assert!(
        status_of(&r).starts_with("sluicegate; hit"),
        "{}",
        status_of(&r)
    );
    assert_eq!(
        app.count(),
        1,
        "served from the file written before the restart"
    );
    // The restarted gateway indexed the file (it counts in /routes).
    let routes: serde_json::Value =
        serde_json::from_slice(&admin_get(&again, "/routes").await.body).unwrap();
    crate::cache::eventually("the startup scan", async || {
        let routes: serde_json::Value =
            serde_json::from_slice(&admin_get(&again, "/routes").await.body).unwrap();
        routes["cache"]["disk"]["entries"] == 1
    })
    .await;
    assert!(routes["cache"]["disk"]["bound"].as_u64().is_some());
    again.shutdown().await;
}

#[tokio::test]
async fn damaged_files_are_misses_and_are_removed() {
    let env = Env::new(Store::Disk).await;
    let dir = env.disk.as_ref().unwrap().path().to_path_buf();
    // The first answer may be stored; later ones say no-store, so that a
    // removed file stays removed.
    let served = Arc::new(AtomicUsize::new(0));
    let app = {
        let served = served.clone();
        Capture::with(move |_| {
            if served.fetch_add(1, Ordering::SeqCst) == 0 {
                response(
                    "200 OK",
                    &["cache-control: max-age=600"],
                    "the original body",
                )
            } else {
                response("200 OK", &["cache-control: no-store"], "from the upstream")
            }
        })
        .await
    };
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Disk, "", "");
    let gw = env.gateway(&m).await;

    for damage in ["truncate", "flip"] {
        served.store(0, Ordering::SeqCst);
        fetch(&gw, "c.test", "/f", &[]).await;
        stored(&gw).await;
        assert_eq!(
            until_hit(&gw, "c.test", "/f", &[]).await.text(),
            "the original body"
        );
        let [file] = files(&dir).try_into().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() - 7),
            _ => {
                // A bit of the body: the lengths still add up, the
                // checksum does not.
                let at = bytes.len() - 10;
                bytes[at] ^= 0x20;
            }
        }
        std::fs::write(&file, &bytes).unwrap();
        let before = app.count();
        let r = fetch(&gw, "c.test", "/f", &[]).await;
        assert_eq!(
            r.text(),
            "from the upstream",
            "{damage}: never the damaged body"
        );
        assert_eq!(status_of(&r), "sluicegate; fwd=miss", "{damage}");
        assert_eq!(app.count(), before + 1);
        assert!(
            files(&dir).is_empty(),
            "{damage}: the damaged file was removed"
        );
    }
    let metrics = admin_get(&gw, "/metrics").await.text();
    assert!(
        metrics.contains("sluicegate_cache_corrupt_total{storage=\"disk\"}"),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn large_bodies_stream_from_disk_and_are_checked() {
    let env = Env::new(Store::Disk).await;
    let dir = env.disk.as_ref().unwrap().path().to_path_buf();
    let body: String = (0..3 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let app = {
        let body = body.clone();
        Capture::with(move |_| response("200 OK", &["cache-control: max-age=600"], &body)).await
    };
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Disk, "", "");
    let gw = env.gateway(&m).await;
    assert_eq!(
        fetch(&gw, "c.test", "/big", &[]).await.body.len(),
        body.len()
    );
    stored(&gw).await;
    let hit = until_hit(&gw, "c.test", "/big", &[]).await;
    assert_eq!(hit.text(), body);
    assert_eq!(hit.header("content-length"), Some("3145728"));
    assert_eq!(app.count(), 1);

    // A damaged byte in the middle: the response is cut before its end
    // (never a complete wrong body), and the file is removed.
    let [file] = files(&dir).try_into().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let mut c = Raw::open(gw.http()).await;
    c.send("GET /big HTTP/1.1\r\nhost: c.test\r\n\r\n").await;
    while c.fill().await {}
    let text = String::from_utf8_lossy(&c.buf).into_owned();
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        text[..head_end].contains("content-length: 3145728"),
        "{}",
        &text[..head_end]
    );
    assert!(
        c.buf.len() - head_end < body.len(),
        "the body was cut short"
    );
    crate::cache::eventually("the damaged file removed", async || files(&dir).is_empty()).await;
    let r = fetch(&gw, "c.test", "/big", &[]).await;
    assert_eq!(status_of(&r), "sluicegate; fwd=miss; stored");
    assert_eq!(r.text(), body);
    gw.shutdown().await;
}

/// Past `--cache-disk-size`, the least recently used files go (down to
/// 90% of the bound); an entry read since it was stored stays.
#[tokio::test]
async fn the_size_bound_evicts_the_least_recently_used() {
    let env = Env::new(Store::Disk).await;
    let dir = env.disk.as_ref().unwrap().path().to_path_buf();
    let body = "x".repeat(8 << 10);
    let app =
        Capture::with(move |_| response("200 OK", &["cache-control: max-age=600"], &body)).await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Disk, "", "");
    let bound: u64 = 40 << 10;
    let mut config = env.config();
    config.cache.disk = Some((dir.clone(), bound));
    let gw = TestGateway::start_with(&m, config).await;
    let size = |paths: &[PathBuf]| -> u64 {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    for n in 0..4 {
        fetch(&gw, "c.test", &format!("/{n}"), &[]).await;
        stored(&gw).await;
        crate::cache::eventually("the file written", async || files(&dir).len() == n + 1).await;
    }
    let one = size(&files(&dir)) / 4;
    assert!(
        4 * one < bound && 5 * one > bound,
        "entry files of {one} bytes"
    );
    // /0 is read again: /1 is now the least recently used.
    until_hit(&gw, "c.test", "/0", &[]).await;
    fetch(&gw, "c.test", "/4", &[]).await;
    stored(&gw).await;
    crate::cache::eventually("eviction down to 90% of the bound", async || {
        let f = files(&dir);
        size(&f) <= bound / 10 * 9 && f.len() == 4
    })
    .await;
    for n in [0, 2, 3, 4] {
        let r = fetch(&gw, "c.test", &format!("/{n}"), &[]).await;
        assert!(status_of(&r).contains("; hit"), "/{n}: {}", status_of(&r));
    }
    let r = fetch(&gw, "c.test", "/1", &[]).await;
    assert!(status_of(&r).contains("fwd=miss"), "/1: {}", status_of(&r));
    assert_eq!(r.text().len(), 8 << 10);
    gw.shutdown().await;
}
