//! A connection against peers that misbehave on the wire: a fake broker on loopback answers
//! ApiVersions (the only request these tests send) rightly, slowly, out of step or not at all.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use super::connection::{Connection, WireError};
use super::security::Security;

/// How the fake broker answers the second request of a connection (the first, the
/// ApiVersions that opens it, is always answered rightly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Right,
    /// One byte every 100 ms.
    Trickle,
    /// A frame size of -1.
    NegativeSize,
    /// A frame size above the client's limit.
    HugeSize,
    /// The answer to another request.
    WrongCorrelationId,
    /// Closes the connection instead.
    Close,
}

/// A fake broker; `second_answers[i]` is how connection `i` answers its second request
/// (connections past the list answer rightly). Returns its address and a count of the
/// connections it accepted.
pub(super) fn fake_broker(second_answers: Vec<Answer>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let second = second_answers.get(i).copied().unwrap_or(Answer::Right);
            thread::spawn(move || serve(stream, second));
        }
    });
    (addr, accepted)
}

fn serve(mut stream: TcpStream, second: Answer) {
    for n in 0.. {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            return;
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let how = if n == 1 { second } else { Answer::Right };
        let frame = |id: i32| api_versions_answer(id);
        let _ = match how {
            Answer::Right => stream.write_all(&frame(correlation_id)),
            Answer::Trickle => {
                for b in frame(correlation_id) {
                    thread::sleep(Duration::from_millis(100));
                    if stream.write_all(&[b]).is_err() {
                        return;
                    }
                }
                Ok(())
            }
            Answer::NegativeSize => stream.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Answer::HugeSize => stream.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Answer::WrongCorrelationId => stream.write_all(&frame(correlation_id + 1)),
            Answer::Close => return,
        };
    }
}

/// A framed ApiVersions v3 answer listing many API keys (a long answer, ~700 bytes, which a
/// trickle at 10 bytes a second would stretch over a minute).
fn api_versions_answer(correlation_id: i32) -> Vec<u8> {
    let keys = (0..70)
        .map(|k| {
            ApiVersion::default()
                .with_api_key(k)
                .with_min_version(0)
                .with_max_version(if k == 18 { 3 } else { 1 })
        })
        .collect();
    let response = ApiVersionsResponse::default().with_api_keys(keys);
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut body, 0)
        .unwrap();
    response.encode(&mut body, 3).unwrap();
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
}

#[test]
fn a_right_answer_is_read() {
    let (addr, _) = fake_broker(vec![]);
    let mut c = Connection::open(&addr, &Security::plaintext()).unwrap();
    let answer = c.call(&request(), Duration::from_secs(5)).unwrap();
    assert_eq!(answer.api_keys.len(), 70);
}

#[test]
fn a_peer_trickling_a_byte_every_100_ms_meets_the_deadline_of_the_call() {
    let (addr, _) = fake_broker(vec![Answer::Trickle]);
    let mut c = Connection::open(&addr, &Security::plaintext()).unwrap();
    let started = Instant::now();
    let e = c.call(&request(), Duration::from_secs(1)).unwrap_err();
    let took = started.elapsed();
    eprintln!("a call with a 1 s timeout to a peer trickling a byte every 100 ms failed after {took:?}: {e}");
    // Checked only when a read timed out, the deadline never came: each 100 ms brought a byte
    // before the 200 ms read timeout, and the call took the whole answer's 70 s.
    assert!(took < Duration::from_secs(3), "{took:?}: {e}");
    assert!(e.breaks_connection(), "{e:?}");
    assert!(e.to_string().contains("request timeout"), "{e}");
}

#[test]
fn a_bad_frame_size_or_another_requests_answer_breaks_the_connection() {
    for fault in [
        Answer::NegativeSize,
        Answer::HugeSize,
        Answer::WrongCorrelationId,
    ] {
        let (addr, _) = fake_broker(vec![fault]);
        let mut c = Connection::open(&addr, &Security::plaintext()).unwrap();
        let e = c.call(&request(), Duration::from_secs(5)).unwrap_err();
        // Io: every caller drops the connection, so no later call reads what is left of the
        // stream.
        assert!(matches!(e, WireError::Io(_)), "{fault:?}: {e:?}");
        assert!(e.breaks_connection());
    }
}

#[test]
fn a_fresh_connection_the_peer_closes_is_not_called_again() {
    let (addr, accepted) = fake_broker(vec![Answer::Close]);
    let mut c = Connection::open(&addr, &Security::plaintext()).unwrap();
    // The connection never answered a call: the close is the broker's answer, not a socket
    // that went stale while idle.
    let e = c.call(&request(), Duration::from_secs(5)).unwrap_err();
    assert!(matches!(e, WireError::Closed(_)), "{e:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_connection_that_answered_before_and_then_finds_the_peer_gone_retries_once() {
    // Connection 0 answers its second request, closes on its third; connection 1 answers all.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                for n in 0.. {
                    let mut size = [0u8; 4];
                    if stream.read_exact(&mut size).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
                    if stream.read_exact(&mut body).is_err() {
                        return;
                    }
                    if i == 0 && n == 2 {
                        return;
                    }
                    let id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    if stream.write_all(&api_versions_answer(id)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut c = Connection::open(&addr, &Security::plaintext()).unwrap();
    c.call(&request(), Duration::from_secs(5)).unwrap();
    let again = c.call(&request(), Duration::from_secs(5));
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one fresh connection");
    // The fresh connection is the one kept.
    c.call(&request(), Duration::from_secs(5)).unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
