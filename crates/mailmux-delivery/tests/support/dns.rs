//! A tiny authoritative DNS server on loopback (UDP and TCP on one port), answering from a
//! fixed table: what `delivery.dns_servers` points at in these tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, SOA};
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The records served. Names are written without the trailing dot.
#[derive(Default, Clone)]
pub struct Zone {
    records: Vec<(String, RData)>,
    servfail: Vec<String>,
    truncate_udp: bool,
}

impl Zone {
    pub fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            Name::from_ascii(format!("{exchange}.")).unwrap()
        };
        self.records
            .push((domain.to_string(), RData::MX(MX::new(preference, exchange))));
        self
    }

    pub fn a(mut self, name: &str, ip: &str) -> Zone {
        self.records
            .push((name.to_string(), RData::A(A(ip.parse().unwrap()))));
        self
    }

    /// Every query for `name` gets SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Zone {
        self.servfail.push(name.to_string());
        self
    }

    /// Every UDP answer comes back truncated (TC, no records): only TCP gets the records.
    pub fn truncate_udp(mut self) -> Zone {
        self.truncate_udp = true;
        self
    }

    fn answer(&self, request: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let query = request.queries.first()?.clone();
        let qname = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_query(query.clone());
        if udp && self.truncate_udp {
            response.metadata.truncation = true;
            return response.to_vec().ok();
        }
        if self.servfail.contains(&qname) {
            response.metadata.response_code = ResponseCode::ServFail;
            return response.to_vec().ok();
        }
        let answers: Vec<Record> = self
            .records
            .iter()
            .filter(|(name, data)| *name == qname && data.record_type() == query.query_type())
            .map(|(_, data)| Record::from_rdata(query.name().clone(), 1, data.clone()))
            .collect();
        if answers.is_empty() {
            if !self.records.iter().any(|(name, _)| *name == qname) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            // The SOA lets the resolver cache the negative answer as a real one.
            let soa = SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("hostmaster.test.").unwrap(),
                1,
                60,
                60,
                60,
                1,
            );
            response.add_authority(Record::from_rdata(
                Name::from_ascii("test.").unwrap(),
                1,
                RData::SOA(soa),
            ));
        } else {
            response.add_answers(answers);
        }
        response.to_vec().ok()
    }
}

pub struct DnsServer {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

impl DnsServer {
    /// Serves `zone` on 127.0.0.1, UDP and TCP on the same port.
    pub async fn start(zone: Zone) -> DnsServer {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let zone = Arc::new(zone);
        let queries = Arc::new(AtomicUsize::new(0));
        {
            let zone = zone.clone();
            let queries = queries.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                        return;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = zone.answer(&buf[..len], true) {
                        let _ = udp.send_to(&reply, from).await;
                    }
                }
            });
        }
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        {
            let zone = zone.clone();
            let queries = tcp_queries.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        return;
                    };
                    let zone = zone.clone();
                    let queries = queries.clone();
                    tokio::spawn(async move {
                        loop {
                            let Ok(len) = stream.read_u16().await else {
                                return;
                            };
                            let mut request = vec![0u8; len as usize];
                            if stream.read_exact(&mut request).await.is_err() {
                                return;
                            }
                            queries.fetch_add(1, Ordering::Relaxed);
                            let Some(reply) = zone.answer(&request, false) else {
                                return;
                            };
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if stream.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        DnsServer {
            addr,
            queries,
            tcp_queries,
        }
    }

    /// Queries answered, over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed) + self.tcp_queries()
    }

    pub fn tcp_queries(&self) -> usize {
        self.tcp_queries.load(Ordering::Relaxed)
    }
}
