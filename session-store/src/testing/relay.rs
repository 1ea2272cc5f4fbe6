//! A pass-through TCP relay that counts round trips, for tests that check how many a store
//! operation costs on a real server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Relays every connection made to [`Relay::port`] to a server on `127.0.0.1`, counting
/// round trips: a burst of client bytes after the server has answered (or at the start)
/// is one.
///
/// [`Relay::filtered`] leaves some out: connections whose first client bytes contain a
/// needle (e.g. an application name in a PostgreSQL start-up message), and bursts that a
/// test does not count as the operation's (e.g. a driver's check of a connection it
/// returns to its pool).
#[derive(Debug)]
pub struct Relay {
    /// The port to connect to instead of the server's.
    pub port: u16,
    round_trips: Arc<AtomicUsize>,
}

impl Relay {
    /// Relays to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        Self::filtered(target, None, |_| true)
    }

    /// Relays to `127.0.0.1:target`, not counting the connections whose first client bytes
    /// contain `needle`, nor the round trips whose first client bytes `counts` refuses.
    pub fn filtered(target: u16, needle: Option<Vec<u8>>, counts: fn(&[u8]) -> bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        let round_trips = Arc::new(AtomicUsize::new(0));
        let counter = round_trips.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let count = Count {
                    total: counter.clone(),
                    needle: needle.clone(),
                    counts,
                };
                relay(client, server, count);
            }
        });
        Self { port, round_trips }
    }

    /// Round trips counted so far.
    pub fn count(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }
}

/// What a relayed connection counts, and where.
struct Count {
    total: Arc<AtomicUsize>,
    needle: Option<Vec<u8>>,
    counts: fn(&[u8]) -> bool,
}

/// Copies both ways between `client` and `server` on two threads.
fn relay(client: TcpStream, server: TcpStream, count: Count) {
    let (Ok(mut c_in), Ok(mut s_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut c_out, mut s_out) = (client, server);
    // Whether the last bytes on this connection came from the server: the next client
    // bytes then start a new round trip.
    let server_spoke = Arc::new(Mutex::new(true));
    let flag = server_spoke.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // Undecided until the first bytes are seen.
        let mut counted = None;
        while let Ok(n @ 1..) = c_in.read(&mut buf) {
            let bytes = &buf[..n];
            let counted = *counted.get_or_insert_with(|| match &count.needle {
                Some(needle) => !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                None => true,
            });
            {
                let mut spoke = flag.lock().unwrap_or_else(|e| e.into_inner());
                if *spoke {
                    *spoke = false;
                    if counted && (count.counts)(bytes) {
                        count.total.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            if s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = s_in.read(&mut buf) {
            // Recorded before the client can see the answer and send again.
            *server_spoke.lock().unwrap_or_else(|e| e.into_inner()) = true;
            if c_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
    });
}
