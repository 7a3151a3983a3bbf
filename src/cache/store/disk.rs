//! The disk storage: one file per entry under a directory, kept across
//! restarts.
//!
//! - Files are `DIR/ab/abcdef…` (the key in hex, spread over 256
//!   subdirectories). A write goes to `DIR/tmp/` first and is renamed
//!   into place, so a reader sees the old file or the new one, never half
//!   of one; a reader that has a file open keeps reading it even if it is
//!   replaced meanwhile.
//! - Every file carries lengths and checksums (see [`crate::cache::entry`]).
//!   A file whose size does not match its header, or whose header or
//!   metadata fail their checksum, is a miss and is removed. Bodies up to
//!   [`SMALL`] bytes are checked before they are served; larger ones are
//!   streamed and checked as they go: a mismatch at the end cuts the
//!   response (the client sees an incomplete body, never a complete wrong
//!   one) and removes the file. Writes are not synced: after a crash a
//!   file may be short or garbled, which these checks turn into misses.
//! - An index in memory (rebuilt by a scan at start, in the background)
//!   holds each file's size, last use, lifetime and tags. When the total
//!   passes the bound, expired files go first, then the least recently
//!   used, down to 90% of the bound ("LRU-ish": one sort per eviction
//!   round rather than a list updated on every hit).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{Body, Loaded, StoreError};
use crate::cache::entry::{
    self, CodecError, Entry, HEADER_LEN, Header, Meta, TRAILER_LEN, unix_ms,
};
use crate::cache::flight::{Follow, FollowSender};
use crate::cache::key::KeyId;
use crate::metrics::{CACHE_CORRUPT, CACHE_EVICTIONS};

/// Bodies up to this size are read and checked whole before serving.
pub const SMALL: u64 = 1 << 20;
/// Read size when streaming a body.
const CHUNK: usize = 64 << 10;
/// Chunks read ahead of a slow client.
const READ_AHEAD: usize = 4;

/// What the index knows of a file.
#[derive(Debug, Clone)]
struct Slot {
    size: u64,
    /// The index clock when it was last read or written.
    used: u64,
    expires_at: u64,
    stored_at: u64,
    tags: Box<[Box<str>]>,
    route: Arc<str>,
}

#[derive(Debug, Default)]
struct Index {
    slots: HashMap<KeyId, Slot>,
    total: u64,
}

impl Index {
    fn insert(&mut self, key: KeyId, slot: Slot) {
        self.total += slot.size;
        if let Some(old) = self.slots.insert(key, slot) {
            self.total -= old.size;
        }
    }

    fn remove(&mut self, key: &KeyId) -> Option<Slot> {
        let old = self.slots.remove(key)?;
        self.total -= old.size;
        Some(old)
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tmp: PathBuf,
    bound: u64,
    index: Mutex<Index>,
    clock: AtomicU64,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Disk {
    inner: Arc<Inner>,
}

/// What the index records of an entry being written.
pub struct SlotInfo {
    pub expires_at: u64,
    pub stored_at: u64,
    pub tags: Box<[Box<str>]>,
    pub route: Arc<str>,
}

impl Disk {
    /// Opens (or creates) the storage in `dir`, at most `bound` bytes.
    /// Files already there are indexed by a background scan; until it
    /// ends they are served, but not yet counted against the bound.
    pub fn open(dir: PathBuf, bound: u64) -> io::Result<Disk> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        // Leftovers of writes a crash interrupted.
        for e in std::fs::read_dir(&tmp)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let disk = Disk {
            inner: Arc::new(Inner {
                dir,
                tmp,
                bound,
                index: Mutex::new(Index::default()),
                clock: AtomicU64::new(1),
            }),
        };
        let inner = disk.inner.clone();
        std::thread::Builder::new()
            .name("sluicegate-cache-scan".into())
            .spawn(move || inner.scan())?;
        Ok(disk)
    }

    /// Reads the entry under `key`.
    pub async fn get(&self, key: &KeyId) -> Result<Option<Loaded>, StoreError> {
        let inner = self.inner.clone();
        let key = *key;
        tokio::task::spawn_blocking(move || inner.read(&key))
            .await
            .map_err(|_| StoreError::Gone)?
    }

    /// Writes `encoded` under `key`, replacing what was there.
    pub async fn put(
        &self,
        key: KeyId,
        encoded: Vec<u8>,
        info: SlotInfo,
    ) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write(&key, &encoded, info))
            .await
            .map_err(|_| StoreError::Gone)?
            .map_err(StoreError::Io)
    }

    /// Replaces the metadata of the file under `key`, keeping its body.
    pub async fn rewrite_meta(&self, key: KeyId, meta: Meta) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.rewrite_meta(&key, &meta))
            .await
            .map_err(|_| StoreError::Gone)?
            .map_err(StoreError::Io)
    }

    pub async fn remove(&self, key: &KeyId) -> bool {
        let inner = self.inner.clone();
        let key = *key;
        tokio::task::spawn_blocking(move || inner.remove(&key))
            .await
            .unwrap_or(false)
    }

    /// Removes the files tagged with any of `tags` and stored at or before
    /// `at` (Unix ms). Returns how many.
    pub fn purge_tags(&self, tags: &[String], at: u64) -> usize {
        let keys: Vec<KeyId> = self
            .inner
            .lock()
            .slots
            .iter()
            .filter(|(_, s)| {
                s.stored_at <= at && s.tags.iter().any(|t| tags.iter().any(|p| **t == **p))
            })
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter(|k| self.inner.remove(k)).count()
    }

    /// Files indexed, and their bytes.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.inner.lock();
        (index.slots.len() as u64, index.total)
    }

    pub fn bound(&self) -> u64 {
        self.inner.bound
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, key: &KeyId) -> PathBuf {
        let hex = key.hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn read(self: &Arc<Self>, key: &KeyId) -> Result<Option<Loaded>, StoreError> {
        let path = self.path(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io(e)),
        };
        match self.read_open(key, &mut file) {
            Ok(Some(Opened::Vary(v))) => Ok(Some(Loaded::Vary(v))),
            Ok(Some(Opened::Small(meta, body))) => {
                self.touch(key);
                let len = body.len() as u64;
                Ok(Some(Loaded::Entry(
                    Arc::new(Entry::new(meta, len)),
                    Body::Full(body),
                )))
            }
            Ok(Some(Opened::Large(meta, header))) => {
                self.touch(key);
                let body = FileBody {
                    start: Some((file, header.body_len, self.clone(), *key)),
                    follow: None,
                    len: header.body_len,
                };
                Ok(Some(Loaded::Entry(
                    Arc::new(Entry::new(meta, header.body_len)),
                    Body::File(body),
                )))
            }
            Ok(None) => {
                self.remove(key);
                Ok(None)
            }
            Err(why) => {
                debug!(file = %path.display(), %why, "cache file unusable; removed");
                metrics::counter!(
                    CACHE_CORRUPT,
                    crate::metrics::labels(&[("storage", "disk")])
                )
                .increment(1);
                self.remove(key);
                Ok(None)
            }
        }
    }

    /// Reads and checks a file's header and metadata; small bodies too.
    /// `None`: expired.
    fn read_open(&self, key: &KeyId, file: &mut File) -> Result<Option<Opened>, CodecError> {
        let size = file
            .metadata()
            .map_err(|_| CodecError::Truncated("stat"))?
            .len();
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(|_| CodecError::Truncated("header"))?;
        let header = Header::parse(&head)?;
        if header.total_len() != size {
            return Err(CodecError::Truncated("file size"));
        }
        let mut meta = vec![0u8; header.meta_len as usize];
        file.read_exact(&mut meta)
            .map_err(|_| CodecError::Truncated("metadata"))?;
        header.check_meta(&head, &meta)?;
        let now = unix_ms(std::time::SystemTime::now());
        if header.vary {
            let v = entry::decode_vary(&meta)?;
            return Ok((v.expires_at > now).then_some(Opened::Vary(v)));
        }
        let meta = entry::decode_meta(&meta)?;
        if meta.key != *key {
            return Err(CodecError::Malformed("key"));
        }
        if meta.expires_at <= now {
            return Ok(None);
        }
        if header.body_len > SMALL {
            return Ok(Some(Opened::Large(meta, header)));
        }
        let mut rest = vec![0u8; header.body_len as usize + TRAILER_LEN];
        file.read_exact(&mut rest)
            .map_err(|_| CodecError::Truncated("body"))?;
        let body_len = header.body_len as usize;
        let want = u32::from_le_bytes(
            rest[body_len..]
                .try_into()
                .map_err(|_| CodecError::Truncated("trailer"))?,
        );
        if crc32fast::hash(&rest[..body_len]) != want {
            return Err(CodecError::Checksum("body"));
        }
        rest.truncate(body_len);
        Ok(Some(Opened::Small(meta, Bytes::from(rest))))
    }

    fn touch(&self, key: &KeyId) {
        let now = self.tick();
        if let Some(slot) = self.lock().slots.get_mut(key) {
            slot.used = now;
        }
    }

    fn write(&self, key: &KeyId, encoded: &[u8], info: SlotInfo) -> io::Result<()> {
        let size = encoded.len() as u64;
        if size > self.bound {
            return Ok(());
        }
        let tmp = self
            .tmp
            .join(format!("{}.{:016x}", key.hex(), fastrand::u64(..)));
        let written = (|| {
            let mut f = File::create_new(&tmp)?;
            f.write_all(encoded)?;
            drop(f);
            let path = self.path(key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let used = self.tick();
        let over = {
            let mut index = self.lock();
            index.insert(
                *key,
                Slot {
                    size,
                    used,
                    expires_at: info.expires_at,
                    stored_at: info.stored_at,
                    tags: info.tags,
                    route: info.route,
                },
            );
            index.total > self.bound
        };
        if over {
            self.evict();
        }
        Ok(())
    }

    fn rewrite_meta(&self, key: &KeyId, meta: &Meta) -> io::Result<()> {
        let path = self.path(key);
        let mut old = File::open(&path)?;
        let mut head = [0u8; HEADER_LEN];
        old.read_exact(&mut head)?;
        let header = Header::parse(&head).map_err(io::Error::other)?;
        // The new head and metadata, then the old body and its checksum.
        let encoded = entry::encode_entry_head(meta, header.body_len, 0);
        let body_at = HEADER_LEN as u64 + u64::from(header.meta_len);
        old.seek(SeekFrom::Start(body_at))?;
        let tmp = self
            .tmp
            .join(format!("{}.{:016x}", key.hex(), fastrand::u64(..)));
        let done = (|| {
            let mut f = File::create_new(&tmp)?;
            f.write_all(&encoded)?;
            io::copy(&mut old, &mut f)?;
            drop(f);
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let size = std::fs::metadata(&path)?.len();
        let used = self.tick();
        let mut index = self.lock();
        index.insert(
            *key,
            Slot {
                size,
                used,
                expires_at: meta.expires_at,
                stored_at: meta.stored_at,
                tags: meta.tags.clone(),
                route: meta.route.clone(),
            },
        );
        Ok(())
    }

    fn remove(&self, key: &KeyId) -> bool {
        let removed = std::fs::remove_file(self.path(key)).is_ok();
        self.lock().remove(key);
        removed
    }

    /// Removes expired files, then the least recently used, until the
    /// total is at most 90% of the bound.
    fn evict(&self) {
        let target = self.bound / 10 * 9;
        let now = unix_ms(std::time::SystemTime::now());
        let mut order: Vec<(bool, u64, KeyId)> = self
            .lock()
            .slots
            .iter()
            .map(|(k, s)| (s.expires_at > now, s.used, *k))
            .collect();
        order.sort_unstable();
        for (_, _, key) in order {
            let route = {
                let mut index = self.lock();
                if index.total <= target {
                    return;
                }
                match index.remove(&key) {
                    Some(slot) => slot.route,
                    None => continue,
                }
            };
            let _ = std::fs::remove_file(self.path(&key));
            metrics::counter!(
                CACHE_EVICTIONS,
                crate::metrics::labels(&[("route", &route), ("storage", "disk")])
            )
            .increment(1);
        }
    }

    /// Indexes the files already in the directory; unusable ones are
    /// removed.
    fn scan(&self) {
        let started = std::time::Instant::now();
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut found = 0usize;
        for sub in dirs.flatten() {
            let name = sub.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 {
                continue;
            }
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let key = f.file_name().to_str().and_then(KeyId::from_hex);
                let Some(key) = key else {
                    let _ = std::fs::remove_file(&path);
                    continue;
                };
                match self.scan_file(&key, &path) {
                    Some(slot) => {
                        found += 1;
                        let mut index = self.lock();
                        if !index.slots.contains_key(&key) {
                            index.insert(key, slot);
                        }
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        info!(
            entries = found,
            elapsed_ms = started.elapsed().as_millis() as u64,
            dir = %self.dir.display(),
            "disk cache indexed"
        );
        if self.lock().total > self.bound {
            self.evict();
        }
    }

    fn scan_file(&self, key: &KeyId, path: &Path) -> Option<Slot> {
        let mut file = File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).ok()?;
        let header = Header::parse(&head).ok()?;
        if header.total_len() != size {
            return None;
        }
        let mut meta = vec![0u8; header.meta_len as usize];
        file.read_exact(&mut meta).ok()?;
        header.check_meta(&head, &meta).ok()?;
        let now = unix_ms(std::time::SystemTime::now());
        let used = self.tick();
        if header.vary {
            let v = entry::decode_vary(&meta).ok()?;
            return (v.expires_at > now).then(|| Slot {
                size,
                used,
                expires_at: v.expires_at,
                stored_at: 0,
                tags: Box::new([]),
                route: "".into(),
            });
        }
        let meta = entry::decode_meta(&meta).ok()?;
        (meta.key == *key && meta.expires_at > now).then_some(Slot {
            size,
            used,
            expires_at: meta.expires_at,
            stored_at: meta.stored_at,
            tags: meta.tags,
            route: meta.route,
        })
    }
}

enum Opened {
    Vary(entry::VaryIndex),
    Small(Meta, Bytes),
    Large(Meta, Header),
}

/// A large entry's body, read from its file in the background once the
/// client starts reading, and checked against its checksum at the end.
#[derive(Debug)]
pub struct FileBody {
    start: Option<(File, u64, Arc<Inner>, KeyId)>,
    follow: Option<Follow>,
    len: u64,
}

impl FileBody {
    /// The same entry's body, without the file: for a background refresh,
    /// which answers no client but must know the body stays on disk.
    pub fn detached(&self) -> FileBody {
        FileBody {
            start: None,
            follow: None,
            len: self.len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_end(&self) -> bool {
        self.follow.as_ref().is_some_and(Follow::is_end)
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, io::Error>>> {
        if let Some((file, len, inner, key)) = self.start.take() {
            let (tx, follow) = Follow::bounded(READ_AHEAD);
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return Poll::Ready(Some(Err(io::Error::other("no runtime to read the file"))));
            };
            rt.spawn_blocking(move || stream(file, len, tx, &inner, &key));
            self.follow = Some(follow);
        }
        match &mut self.follow {
            None => Poll::Ready(None),
            Some(f) => f
                .poll_next(cx)
                .map(|o| o.map(|r| r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))),
        }
    }
}

/// Sends the body of `file` (positioned at its start) in chunks, then
/// checks it. The last chunk is held back until the checksum matches, so
/// a damaged body never reaches a client whole: it fails (cutting the
/// response short) and its file is removed.
fn stream(mut file: File, len: u64, tx: FollowSender, inner: &Inner, key: &KeyId) {
    let mut crc = crc32fast::Hasher::new();
    let mut left = len;
    let mut held: Option<Bytes> = None;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        let mut buf = vec![0u8; n];
        if file.read_exact(&mut buf).is_err() {
            warn!(key = ?key, "cache file shrank while read; removed");
            inner.remove(key);
            tx.fail();
            return;
        }
        crc.update(&buf);
        left -= n as u64;
        if let Some(previous) = held.replace(Bytes::from(buf))
            && !tx.data_blocking(previous)
        {
            return;
        }
    }
    let mut trailer = [0u8; TRAILER_LEN];
    if file.read_exact(&mut trailer).is_err() || u32::from_le_bytes(trailer) != crc.finalize() {
        warn!(key = ?key, "cache file body does not match its checksum; removed");
        metrics::counter!(
            CACHE_CORRUPT,
            crate::metrics::labels(&[("storage", "disk")])
        )
        .increment(1);
        inner.remove(key);
        tx.fail();
        return;
    }
    if let Some(last) = held
        && !tx.data_blocking(last)
    {
        return;
    }
    tx.end();
}
