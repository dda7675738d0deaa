//! The cost of DKIM signing one message, as delivery pays it per attempt: choosing the signing
//! domain (From: parsed with mail-parser), then the signature (header scan, relaxed
//! canonicalization, SHA-256 of the body, RSA-2048 or Ed25519 over the header hash) with a
//! signer built once, as the delivery cache holds it.
//!
//! ```text
//! cargo bench --bench dkim_sign [-- --size 10240 --iterations 2000]
//! ```
//! Prints one JSON object per key type on stdout: per-message mean, p50 and p99 in
//! microseconds, and the messages per second one core signs.

use std::time::Instant;

use mailmux_admin::dkim::{KeyType, generate};
use mailmux_delivery::dkim::{DomainSigner, candidate_domains};

/// A message of `size` bytes shaped like application mail: the usual headers, a text body of
/// 76-character lines.
fn message(size: usize) -> Vec<u8> {
    let mut out = b"Received: from app (app [127.0.0.1]) by relay.test with ESMTPSA id 1;\r\n\
        \tMon, 23 Nov 2026 12:00:00 +0000\r\n\
        From: App <app@bench.test>\r\nTo: <user@sink.test>\r\nSubject: bench message\r\n\
        Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@bench.test>\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    let line = format!("{}\r\n", "x".repeat(76));
    while out.len() + line.len() <= size {
        out.extend_from_slice(line.as_bytes());
    }
    out.resize(size - 2, b'y');
    out.extend_from_slice(b"\r\n");
    out
}

fn option(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = option(&args, "--size", 10 * 1024);
    let iterations = option(&args, "--iterations", 2000).max(10);
    let message = message(size);
    for key_type in [KeyType::Rsa, KeyType::Ed25519] {
        let key = generate(key_type).expect("key generation");
        let signer = DomainSigner::new(
            "bench.test",
            "mm202607",
            key_type.as_str(),
            &key.private_pkcs8,
            &key.public_key,
        )
        .expect("the generated key loads");
        // Warm-up: the signer for this header set is built, caches are hot.
        for _ in 0..20 {
            signer.sign(&message).unwrap();
        }
        let mut samples = Vec::with_capacity(iterations);
        let started = Instant::now();
        for _ in 0..iterations {
            let t = Instant::now();
            let domains = candidate_domains(&message, "app@bench.test");
            assert_eq!(domains[0], "bench.test");
            let header = signer.sign(&message).unwrap();
            std::hint::black_box(header);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let total = started.elapsed().as_secs_f64();
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        println!(
            "{}",
            serde_json::json!({
                "key_type": key_type.as_str(),
                "message_bytes": message.len(),
                "iterations": iterations,
                "mean_us": (mean * 10.0).round() / 10.0,
                "p50_us": (pct(0.50) * 10.0).round() / 10.0,
                "p99_us": (pct(0.99) * 10.0).round() / 10.0,
                "signed_per_s_one_core": (iterations as f64 / total).round(),
            })
        );
    }
}
