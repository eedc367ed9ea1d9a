//! `rcni-echo`: the traffic end points of the port-mapping tests (std only).
//!
//! ```text
//! rcni-echo serve --id NAME [--tcp PORT]... [--udp PORT]...   # prints "ready" once listening
//! rcni-echo tcp ADDR:PORT [--timeout-ms N]                     # prints the server's line
//! rcni-echo udp ADDR:PORT [--sport N] [--timeout-ms N]
//! ```
//!
//! The server answers every TCP connection and UDP datagram with `NAME PEER-IP`, so a test
//! sees which pod answered and which source address (masqueraded or not) it saw. It listens
//! on `[::]` (both families). Clients exit 1 with the reason on stderr when nothing answers;
//! a refused connection fails at once (no waiting for a timeout).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn fail(msg: String) -> ! {
    eprintln!("rcni-echo: {msg}");
    std::process::exit(1)
}

fn serve(id: String, tcp: Vec<u16>, udp: Vec<u16>) {
    let any = |port| SocketAddr::from(([0u16; 8], port));
    let mut threads = Vec::new();
    for port in tcp {
        let l =
            TcpListener::bind(any(port)).unwrap_or_else(|e| fail(format!("bind tcp {port}: {e}")));
        let id = id.clone();
        threads.push(std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let peer = s
                    .peer_addr()
                    .map(|a| canonical(a.ip()).to_string())
                    .unwrap_or_default();
                let _ = writeln!(s, "{id} {peer}");
            }
        }));
    }
    for port in udp {
        let s =
            UdpSocket::bind(any(port)).unwrap_or_else(|e| fail(format!("bind udp {port}: {e}")));
        let id = id.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(format!("{id} {}\n", canonical(from.ip())).as_bytes(), from);
            }
        }));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
}

fn tcp(to: SocketAddr, timeout: Duration) {
    let s = TcpStream::connect_timeout(&to, timeout)
        .unwrap_or_else(|e| fail(format!("connect {to}: {e}")));
    let _ = s.set_read_timeout(Some(timeout));
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(n) if n > 0 => print!("{line}"),
        Ok(_) => fail(format!("{to} closed without answering")),
        Err(e) => fail(format!("read from {to}: {e}")),
    }
}

fn udp(to: SocketAddr, sport: u16, timeout: Duration) {
    let local = if to.is_ipv6() {
        SocketAddr::from(([0u16; 8], sport))
    } else {
        SocketAddr::from(([0u8; 4], sport))
    };
    let s = UdpSocket::bind(local).unwrap_or_else(|e| fail(format!("bind {local}: {e}")));
    // Connected: an ICMP port unreachable comes back as ECONNREFUSED at once.
    s.connect(to)
        .unwrap_or_else(|e| fail(format!("connect {to}: {e}")));
    let _ = s.set_read_timeout(Some(timeout));
    s.send(b"hello")
        .unwrap_or_else(|e| fail(format!("send to {to}: {e}")));
    let mut buf = [0u8; 512];
    match s.recv(&mut buf) {
        Ok(n) => print!("{}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => fail(format!("no answer from {to}: {e}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    };
    let num = |flag: &str, default: u64| -> u64 {
        value(flag).first().map_or(default, |v| {
            v.parse().unwrap_or_else(|_| fail(format!("bad {flag}")))
        })
    };
    let ports = |flag: &str| -> Vec<u16> {
        value(flag)
            .iter()
            .map(|v| v.parse().unwrap_or_else(|_| fail(format!("bad port {v}"))))
            .collect()
    };
    let timeout = Duration::from_millis(num("--timeout-ms", 2000));
    let target = || -> SocketAddr {
        args.get(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| fail("expected ADDR:PORT".into()))
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let id = value("--id").pop().unwrap_or_else(|| "echo".into());
            serve(id, ports("--tcp"), ports("--udp"));
        }
        Some("tcp") => tcp(target(), timeout),
        Some("udp") => udp(
            target(),
            u16::try_from(num("--sport", 0)).unwrap_or(0),
            timeout,
        ),
        _ => fail("usage: rcni-echo serve|tcp|udp ...".into()),
    }
}
