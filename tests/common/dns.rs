//! A tiny DNS server on loopback UDP for resolver tests: answers A queries
//! for one name with a configurable address and TTL, answers other types
//! for that name with no records, other names with NXDOMAIN, and can stop
//! answering altogether.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;

#[derive(Debug)]
struct Answer {
    addr: Ipv4Addr,
    ttl: u32,
    answering: bool,
}

/// The server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    name: String,
    answer: Arc<Mutex<Answer>>,
    a_queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    /// Serves `name` (without trailing dot) as `addr` with `ttl` seconds.
    pub async fn start(name: &str, addr: Ipv4Addr, ttl: u32) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer {
            addr,
            ttl,
            answering: true,
        }));
        let a_queries = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (name, answer, a_queries) =
                (name.to_ascii_lowercase(), answer.clone(), a_queries.clone());
            async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let Some(q) = parse_query(&buf[..n]) else {
                        continue;
                    };
                    if q.qtype == TYPE_A && q.name == name {
                        a_queries.fetch_add(1, Ordering::SeqCst);
                    }
                    let (addr, ttl, answering) = {
                        let a = answer.lock().unwrap();
                        (a.addr, a.ttl, a.answering)
                    };
                    if !answering {
                        continue;
                    }
                    let reply = respond(&buf[..n], &q, &name, addr, ttl);
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        TestDns {
            addr: local,
            name: name.to_owned(),
            answer,
            a_queries,
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A queries received for the name so far (answered or not).
    pub fn a_queries(&self) -> usize {
        self.a_queries.load(Ordering::SeqCst)
    }

    pub fn set_addr(&self, addr: Ipv4Addr) {
        self.answer.lock().unwrap().addr = addr;
    }

    /// Stops or resumes answering (queries are still counted).
    pub fn set_answering(&self, on: bool) {
        self.answer.lock().unwrap().answering = on;
    }
}

struct Query {
    /// Lower case, dot-separated, without the trailing dot.
    name: String,
    qtype: u16,
    /// Where the question section ends.
    end: usize,
}

fn parse_query(msg: &[u8]) -> Option<Query> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some(Query {
        name: labels.join("."),
        qtype,
        end: i + 4,
    })
}

fn respond(msg: &[u8], q: &Query, name: &str, addr: Ipv4Addr, ttl: u32) -> Vec<u8> {
    let known = q.name == name;
    let answers: u16 = if known && q.qtype == TYPE_A { 1 } else { 0 };
    let rcode = if known { 0 } else { 3 };
    let mut out = Vec::with_capacity(q.end + 16);
    out.extend_from_slice(&msg[..2]); // id
    // QR, the query's opcode and RD, AA; RA and the response code.
    out.push(0x80 | (msg[2] & 0x79) | 0x04);
    out.push(0x80 | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    out.extend_from_slice(&msg[12..q.end]);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}
