//! [`DnsServer`]: an authoritative DNS server (tests/support/dns_server.py) serving MX/A/TXT records for test domains; records can be changed while it runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::process::{SupportProcess, TestDir, write_atomic};

/// The authoritative test DNS server on 127.0.0.1 (UDP and TCP on one port).
///
/// Records are `{"name", "type", "value", "ttl"?}` with type A, AAAA, MX (`"10 mx.a.test"`),
/// TXT (a string, split into 255-byte strings when longer, or a list of strings), CNAME, NS,
/// PTR, SRV. Names under a known zone (the last two labels of any record name, or an explicit
/// `"zones"` list) that have no records answer NXDOMAIN; TTLs default to 0.
pub struct DnsServer {
    process: SupportProcess,
    zone_file: PathBuf,
    _dir: TestDir,
}

impl DnsServer {
    /// Starts the server with `records`: a JSON array of records, or a whole zone object
    /// `{"zones": [...], "records": [...]}`. Panics if it cannot start; call
    /// [`require_python_module`]`("dnslib")` first to skip when the venv is missing.
    pub fn start(records: Value) -> DnsServer {
        let dir = TestDir::new("mailmux-dns");
        let zone_file = dir.path().join("zone.json");
        write_atomic(&zone_file, zone_json(records).to_string().as_bytes());
        let process = SupportProcess::spawn(
            "dns_server.py",
            "dns_server.py",
            &["--zone".into(), zone_file.display().to_string()],
        );
        DnsServer {
            process,
            zone_file,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `127.0.0.1:<port>`, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The value for `MAILMUX_DELIVERY__DNS_SERVERS`: `["127.0.0.1:<port>"]`.
    pub fn dns_servers_env(&self) -> String {
        json!([self.addr().to_string()]).to_string()
    }

    /// Replaces the zone (same forms as [`DnsServer::start`]). The file is replaced atomically
    /// (a new inode, so the server sees the change even within one mtime tick); the next query
    /// is answered from the new data.
    pub fn set_records(&self, records: Value) {
        write_atomic(&self.zone_file, zone_json(records).to_string().as_bytes());
    }
}

fn zone_json(records: Value) -> Value {
    match records {
        Value::Array(_) => json!({ "records": records }),
        Value::Object(_) => records,
        other => panic!("DNS records must be an array or a zone object, got {other}"),
    }
}
