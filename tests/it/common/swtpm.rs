//! One swtpm per test: a TPM 2.0 simulator on free loopback ports with its own state directory,
//! killed when the fixture drops.
//!
//! # Drop order
//!
//! `Drop for Swtpm` kills and reaps the process first; only then do the fields drop, the state
//! directory last (it is declared last), so swtpm never sees its state vanish while it runs.
//! A [`custodian::backend::tpm::TpmDevice`] connected to it should be dropped before the fixture
//! (declare the fixture first in a test, so it drops last); if it is not, the device just sees
//! a closed connection.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use custodian::backend::tpm::TpmConfig;

/// How long swtpm may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running (or stopped) swtpm.
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state: tempfile::TempDir,
}

impl Swtpm {
    /// Starts swtpm on a fresh state directory and two free consecutive ports (server P, control
    /// P+1), retrying with new ports if another process takes them first.
    pub fn start() -> anyhow::Result<Self> {
        let state = tempfile::tempdir().context("swtpm state dir")?;
        let mut last_error = None;
        for _ in 0..10 {
            let port = free_port_pair()?;
            match spawn(state.path(), port) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        state,
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A device configuration for this simulator (no owner auth, transient primary).
    pub fn config(&self) -> TpmConfig {
        TpmConfig {
            tcti: self.tcti(),
            owner_auth: None,
            primary_persistent_handle: None,
        }
    }

    /// The running simulator's process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills swtpm (SIGKILL, like a crash) and waits for it; the state directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills swtpm and starts it again on the same state directory and ports (retrying while the
    /// old sockets are released).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match spawn(self.state.path(), self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port P such that P and P+1 are both free on 127.0.0.1 right now.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        let port = first.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, next)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free ports")
}

/// Starts swtpm and waits until both ports accept; fails if it exits first (e.g. port taken).
fn spawn(state: &Path, port: u16) -> anyhow::Result<Child> {
    let log = state.join("swtpm.log");
    let mut child = Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .arg("--log")
        .arg(format!("file={},level=1", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn swtpm (apt install swtpm swtpm-tools)")?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("swtpm exited with {status} before accepting on port {port}");
        }
        // Probe the control port only: the server port serves one client at a time.
        let ctrl = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port + 1);
        if TcpStream::connect_timeout(&ctrl.into(), Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("swtpm did not accept on port {} in time", port + 1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
