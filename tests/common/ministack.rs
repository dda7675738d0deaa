//! [`Ministack`]: the ministack SES v2 emulator (PyPI), started by
//! tests/support/ministack_run.py on 127.0.0.1 (GATEWAY_PORT, BIND_HOST) and ready once
//! `/_ministack/health` answers. One per test binary, shared: a test takes [`Ministack::get`],
//! which holds it for that test alone and resets it (`POST /_ministack/reset`) first, so tests
//! neither see each other's resources nor run into each other. The emulator stops when the
//! test binary exits (its wrapper exits when its stdin closes).

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::http::http;
use super::process::{SupportProcess, TestDir};

pub struct Ministack {
    process: SupportProcess,
    _dir: TestDir,
}

impl Ministack {
    /// The shared emulator, reset, for the calling test alone (until the guard drops).
    pub fn get() -> MutexGuard<'static, Ministack> {
        static SHARED: OnceLock<Mutex<Ministack>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| Mutex::new(Ministack::start()));
        // A test that failed while holding it poisons the lock; the reset below makes the
        // emulator usable again all the same.
        let guard = shared.lock().unwrap_or_else(|e| e.into_inner());
        guard.reset();
        guard
    }

    fn start() -> Ministack {
        let dir = TestDir::new("mailmux-ministack");
        let log = dir.path().join("ministack.log");
        let args = ["--log".to_string(), log.display().to_string()];
        Ministack {
            process: SupportProcess::spawn("ministack", "ministack_run.py", &args),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.process.port))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Forgets every resource.
    pub fn reset(&self) {
        let (status, body) = http(self.addr(), "POST", "/_ministack/reset", None, None);
        assert_eq!(status, 200, "ministack reset: {body}");
    }
}
