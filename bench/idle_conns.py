#!/usr/bin/env python3
"""Idle client connections against a running proxy: what they cost in
resident memory, and whether the proxy's timeouts close them.

Opens COUNT connections of each KIND to HOST:PORT and leaves them idle:
  h1-fresh   connected, nothing sent (the header read timeout applies)
  h1-kept    one request answered, then idle (the keep-alive timeout)
  h2-fresh   the HTTP/2 preface and SETTINGS, then idle
  h2-kept    the preface and SETTINGS, one GET answered, then idle
  tls-h1-kept, tls-h2-fresh, tls-h2-kept
             the same over TLS to TLS_PORT (ALPN http/1.1 or h2; the
             certificate is not verified)
Then reads the proxy's RSS from /proc/PID/status (before, and SETTLE
seconds after the last one opened, while all of them are idle), and waits
up to WAIT seconds for the proxy to close them, counting how many it
closed. The settling time lets the proxy give back what the opening burst
freed (its allocator purges pages a second or two after they fall free);
it must stay below the proxy's idle timeouts.

Usage: idle_conns.py --pid PID --port PORT [--tls-port TLS_PORT]
                     [--host 127.0.0.1] [--count 10000]
                     [--kinds h1-fresh,h1-kept,h2-fresh]
                     [--request-host bench.local] [--request-path /]
                     [--wait 120] [--settle 5]
Prints one JSON object. Needs a file-descriptor limit above COUNT.
"""

import argparse
import asyncio
import json
import resource
import ssl
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


TLS_CONTEXTS = {}


def tls_context(alpn):
    # One per protocol: building a context loads the system's CA store.
    if alpn not in TLS_CONTEXTS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols([alpn])
        TLS_CONTEXTS[alpn] = ctx
    return TLS_CONTEXTS[alpn]


# "Mozilla/5.0 (X11; Linux x86_64) idle-memory-test", Huffman-coded
# (RFC 7541 Appendix B), as browsers send their header values.
USER_AGENT_HUFFMAN = bytes.fromhex(
    "d07f66a281b0dae053fafc087ed4ce6aadf2a7979c89c6bfb50d25055a92d27b3d2c92a13f"
)


def h2_get(authority, path):
    """A HEADERS frame on stream 1: GET PATH for AUTHORITY, ending the
    stream. HPACK: the static table's :method GET and :scheme http, :path
    as a literal without indexing, :authority as a literal to be indexed
    (each shorter than 127 bytes) and a Huffman-coded user-agent (static
    name 58) to be indexed, as browsers send them."""
    block = b"\x82\x86"
    for index, value in ((4, path.encode()), (0x40 | 1, authority.encode())):
        block += bytes([index, len(value)]) + value
    block += bytes([0x40 | 58, 0x80 | len(USER_AGENT_HUFFMAN)]) + USER_AGENT_HUFFMAN
    head = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big")
    return head + block


async def h2_answered(reader):
    """Reads frames until stream 1 ends (END_STREAM on HEADERS or DATA)."""
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await reader.readexactly(length)
        if stream == 1 and kind in (0, 1) and flags & 1:
            return


async def open_one(host, port, kind, request_host, request_path, tls_port=None):
    if kind.startswith("tls-"):
        kind = kind[len("tls-"):]
        alpn = "h2" if kind.startswith("h2") else "http/1.1"
        reader, writer = await asyncio.open_connection(
            host, tls_port, ssl=tls_context(alpn), server_hostname=request_host
        )
    else:
        reader, writer = await asyncio.open_connection(host, port)
    if kind == "h1-kept":
        writer.write(
            f"GET {request_path} HTTP/1.1\r\nHost: {request_host}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
    elif kind == "h2-fresh":
        writer.write(PREFACE + SETTINGS)
        await writer.drain()
        # The server's SETTINGS frame header.
        await reader.readexactly(9)
    elif kind == "h2-kept":
        writer.write(PREFACE + SETTINGS + h2_get(request_host, request_path))
        await writer.drain()
        await h2_answered(reader)
    return reader, writer


async def closed_within(reader, deadline):
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            data = await asyncio.wait_for(reader.read(65536), left)
            if not data:
                return True
    except (asyncio.TimeoutError, TimeoutError):
        return False
    except (ConnectionError, OSError):
        return True


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--kinds", default="h1-fresh,h1-kept,h2-fresh")
    p.add_argument("--request-host", default="bench.local")
    p.add_argument("--request-path", default="/")
    p.add_argument("--wait", type=float, default=120)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--settle", type=float, default=5)
    a = p.parse_args()
    if "tls-" in a.kinds and a.tls_port is None:
        p.error("the tls- kinds need --tls-port")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    results = {}
    for kind in a.kinds.split(","):
        before = rss_kb(a.pid)
        conns = []
        start = time.monotonic()
        for i in range(0, a.count, a.batch):
            n = min(a.batch, a.count - i)
            conns += await asyncio.gather(
                *(
                    open_one(
                        a.host, a.port, kind, a.request_host, a.request_path, a.tls_port
                    )
                    for _ in range(n)
                )
            )
        opened = time.monotonic() - start
        await asyncio.sleep(a.settle)
        with_them = rss_kb(a.pid)
        deadline = time.monotonic() + a.wait
        closed = await asyncio.gather(*(closed_within(r, deadline) for r, _ in conns))
        took = time.monotonic() - start
        for _, w in conns:
            w.close()
        await asyncio.sleep(1)
        results[kind] = {
            "connections": a.count,
            "open_s": round(opened, 2),
            "rss_before_mb": round(before / 1024, 1),
            "rss_with_them_mb": round(with_them / 1024, 1),
            "kb_per_connection": round((with_them - before) / a.count, 2),
            "closed_by_proxy": sum(closed),
            "all_closed_after_s": round(took, 1),
            "rss_after_mb": round(rss_kb(a.pid) / 1024, 1),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
