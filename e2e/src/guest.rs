//! Processes of an end-to-end run: the `vgt-capture` binary and the test guest under QEMU
//! (`samples/guest/run-guest.sh`), with waits on the guest's serial log and cleanup that never
//! leaves a QEMU behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// The guest's workloads (kernel parameter `vgt.workload=`).
pub const WORKLOADS: [&str; 4] = ["boot", "fb", "modes", "cursor"];

/// Where `samples/guest/setup.sh` put the guest (its `paths.env`).
#[derive(Debug, Clone)]
pub struct GuestPaths {
    /// The paths.env file read.
    pub env_file: PathBuf,
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// The uncompressed guest kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
}

impl GuestPaths {
    /// The cache directory setup.sh uses: `$VGT_CACHE/guest`, else `$HOME/.cache/vgt/guest`.
    pub fn cache_dir() -> PathBuf {
        let base = std::env::var_os("VGT_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/vgt")
            });
        base.join("guest")
    }

    /// Reads paths.env and checks that QEMU, the kernel and the initramfs exist. The error
    /// says to run `samples/guest/setup.sh`.
    pub fn load() -> Result<Self> {
        let env_file = Self::cache_dir().join("paths.env");
        let hint = "run samples/guest/setup.sh (as root on a fresh machine: it installs QEMU >= 8 \
                    from bookworm-backports and fetches the guest kernel), or set VGT_SKIP_E2E=1 \
                    to skip the real-guest tests";
        let text = fs::read_to_string(&env_file).with_context(|| {
            format!(
                "no guest prepared ({} is missing): {hint}",
                env_file.display()
            )
        })?;
        let get = |key: &str| -> Result<PathBuf> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(PathBuf::from)
                .with_context(|| format!("{} has no {key}: {hint}", env_file.display()))
        };
        let paths = GuestPaths {
            qemu: get("VGT_QEMU")?,
            kernel: get("VGT_GUEST_KERNEL")?,
            initrd: get("VGT_GUEST_INITRD")?,
            env_file,
        };
        for p in [&paths.qemu, &paths.kernel, &paths.initrd] {
            if !p.exists() {
                bail!(
                    "{} (named in {}) is missing: {hint}",
                    p.display(),
                    paths.env_file.display()
                );
            }
        }
        Ok(paths)
    }
}

/// Sends `sig` to process `pid`; errors (the process is gone) are ignored.
fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory effects; a stale pid at worst signals nothing.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The vgt-capture arguments the harness uses (docs/CAPTURE.md shows the same ones).
pub fn capture_args(socket: &Path, output: &Path, scanouts: u32) -> Vec<std::ffi::OsString> {
    vec![
        "--socket".into(),
        socket.into(),
        "-o".into(),
        output.into(),
        "--scanouts".into(),
        scanouts.to_string().into(),
    ]
}

/// A running `vgt-capture`; killed (SIGKILL) when dropped while still running.
pub struct CaptureProcess {
    /// The child.
    pub child: Child,
    /// Its vhost-user socket.
    pub socket: PathBuf,
    /// Its capture file.
    pub output: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl CaptureProcess {
    /// Starts `bin --socket SOCKET -o OUTPUT --scanouts N --quiet EXTRA...` and waits until the
    /// socket exists.
    pub fn spawn(bin: &Path, dir: &Path, scanouts: u32, extra: &[&str]) -> Result<Self> {
        let socket = dir.join("gpu.sock");
        let output = dir.join("capture.vgt");
        let log = dir.join("vgt-capture.log");
        let child = Command::new(bin)
            .args(capture_args(&socket, &output, scanouts))
            .arg("--quiet")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut me = CaptureProcess {
            child,
            socket,
            output,
            log,
        };
        let start = Instant::now();
        while !me.socket.exists() {
            if let Some(s) = me.child.try_wait()? {
                bail!("vgt-capture exited {s} before listening: {}", me.log_text());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "vgt-capture did not create {} within 20 s",
                    me.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    /// What it printed on stderr.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        kill(self.child.id() as i32, libc::SIGKILL);
        Ok(self.child.wait()?)
    }
}

impl Drop for CaptureProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id() as i32, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// `boot`, `fb`, `modes` or `cursor`.
    pub workload: String,
    /// Scanouts (`max_outputs`).
    pub outputs: u32,
    /// Seconds the guest waits after VGT-WORKLOAD-DONE before powering off.
    pub hold: u32,
    /// With a QMP socket.
    pub qmp: bool,
    /// run-guest.sh's --timeout.
    pub timeout_s: u32,
    /// Extra kernel parameters.
    pub append: Vec<String>,
    /// A guest reset reboots the guest (run-guest.sh --reboot) instead of ending QEMU.
    pub reboot: bool,
}

/// The guest under QEMU (run-guest.sh). Dropping it kills QEMU (its pid file) and the script.
pub struct GuestRun {
    child: Child,
    /// The serial console log.
    pub serial: PathBuf,
    /// The QMP socket, when asked for.
    pub qmp: Option<PathBuf>,
    /// QEMU's stderr (and run-guest.sh's).
    pub log: PathBuf,
    pidfile: PathBuf,
    workload: String,
}

impl GuestRun {
    /// Boots `opts.workload` against the vhost-user socket `socket`; files go to `dir`.
    pub fn boot(socket: &Path, dir: &Path, opts: &BootOptions) -> Result<Self> {
        let script = workspace_root().join("samples/guest/run-guest.sh");
        let serial = dir.join("serial.log");
        let log = dir.join("qemu.log");
        let pidfile = dir.join("qemu.pid");
        let qmp = opts.qmp.then(|| dir.join("qmp.sock"));
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("--socket")
            .arg(socket)
            .args(["--workload", &opts.workload])
            .args(["--outputs", &opts.outputs.to_string()])
            .args(["--hold", &opts.hold.to_string()])
            .args(["--timeout", &opts.timeout_s.to_string()])
            .arg("--serial-log")
            .arg(&serial)
            .arg("--pidfile")
            .arg(&pidfile);
        if let Some(q) = &qmp {
            cmd.arg("--qmp").arg(q);
        }
        for a in &opts.append {
            cmd.arg("--append").arg(a);
        }
        if opts.reboot {
            cmd.arg("--reboot");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("run-guest.out"))?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", script.display()))?;
        Ok(GuestRun {
            child,
            serial,
            qmp,
            log,
            pidfile,
            workload: opts.workload.clone(),
        })
    }

    /// The serial log so far, carriage returns removed.
    pub fn serial_text(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    /// QEMU's stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the serial log has `VGT-WORKLOAD-DONE <workload>`; an error when the
    /// workload failed, QEMU exited first, or `limit` passed.
    pub fn wait_done(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let done = format!("VGT-WORKLOAD-DONE {}", self.workload);
        loop {
            let text = self.serial_text();
            if text.lines().any(|l| l == done) {
                return Ok(());
            }
            if let Some(l) = text.lines().find(|l| l.starts_with("VGT-WORKLOAD-FAILED")) {
                bail!("the guest says {l:?}; serial log:\n{text}");
            }
            if let Some(s) = self.child.try_wait()? {
                bail!(
                    "QEMU ended ({s}) before {done:?}: {}\nserial log:\n{text}",
                    self.log_text().trim()
                );
            }
            if start.elapsed() > limit {
                bail!("no {done:?} within {limit:?}; serial log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the serial log has `VGT-WORKLOAD-DONE <workload>` `times` times (a guest
    /// that rebooted runs its workload again); an error after `limit`.
    pub fn wait_done_times(&mut self, times: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let done = format!("VGT-WORKLOAD-DONE {}", self.workload);
        loop {
            let text = self.serial_text();
            if text.lines().filter(|l| *l == done).count() >= times {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("{done:?} not {times} times within {limit:?}; serial log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `limit` for run-guest.sh (and so QEMU) to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        wait_timeout(&mut self.child, limit)
    }

    fn qemu_pid(&self) -> Option<i32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    /// Kills QEMU (SIGKILL through its pid file) and the script.
    pub fn kill(&mut self) {
        if let Some(pid) = self.qemu_pid() {
            kill(pid, libc::SIGKILL);
        }
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        let qemu_alive = self.qemu_pid().is_some_and(|pid| {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) == 0 }
        });
        if running || qemu_alive {
            self.kill();
        }
    }
}
