//! One front-end connection from accept to a finished capture file: the session start record,
//! the vhost-user relay threads, the vhost-user-backend daemon that serves the queues, and an
//! orderly shutdown (disconnect, signal, device crash) that always finishes the file.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use vgt_device::{Device, DeviceConfig};
use vgt_format::record::{CaptureMode, LifecycleKind, RecordBody, SessionStart};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::backend::{self, CaptureBackend};
use crate::gpu_socket::GpuSlot;
use crate::recorder::{RecordError, Recorder};
use crate::relay;
use crate::{CaptureError, RENDERER};

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

/// Flags a session's threads raise for the main loop, plus an eventfd that wakes it.
pub struct SessionSignal {
    stopping: AtomicBool,
    crashed: AtomicBool,
    record_failed: AtomicBool,
    disconnected: AtomicBool,
    wake: EventFd,
}

impl SessionSignal {
    /// Fresh flags.
    pub fn new() -> std::io::Result<Self> {
        Ok(SessionSignal {
            stopping: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            record_failed: AtomicBool::new(false),
            disconnected: AtomicBool::new(false),
            wake: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
    }

    /// The session is ending: the queue worker takes no further chains.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once [`SessionSignal::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The device panicked.
    pub fn crashed(&self) {
        self.raise(&self.crashed);
    }

    /// A record could not be written.
    pub fn record_failed(&self) {
        self.raise(&self.record_failed);
    }

    /// The front-end went away.
    pub fn disconnected(&self) {
        self.raise(&self.disconnected);
    }

    /// The eventfd that becomes readable when a flag is raised.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// Why the session should end, if it should.
    pub fn end_reason(&self) -> Option<EndReason> {
        let _ = self.wake.read();
        if self.crashed.load(Ordering::SeqCst) {
            Some(EndReason::Crash)
        } else if self.record_failed.load(Ordering::SeqCst) {
            Some(EndReason::RecordFailed)
        } else if self.disconnected.load(Ordering::SeqCst) {
            Some(EndReason::Disconnect)
        } else {
            None
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The front-end closed the connection.
    Disconnect,
    /// SIGINT or SIGTERM.
    Signal,
    /// The device panicked.
    Crash,
    /// The capture file could not be written.
    RecordFailed,
}

/// Settings for one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Device configuration.
    pub device: DeviceConfig,
}

/// A live session.
pub struct Session {
    recorder: Arc<Recorder>,
    signal: Arc<SessionSignal>,
    daemon: VhostUserDaemon<Arc<RwLock<CaptureBackend>>>,
    front: UnixStream,
    back: UnixStream,
    relays: Vec<JoinHandle<()>>,
    exit_descriptors: Arc<backend::HandedOut>,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Session {
    /// Starts serving `front` (an accepted front-end connection), recording into `recorder`.
    pub fn start(
        front: UnixStream,
        recorder: Arc<Recorder>,
        config: &SessionConfig,
    ) -> Result<Session, CaptureError> {
        let device = Device::new(config.device.clone()).map_err(|e| CaptureError::Device {
            detail: e.to_string(),
        })?;
        Self::start_with_device(front, recorder, device)
    }

    /// Like [`Session::start`] with a device built by the caller (another renderer).
    pub fn start_with_device(
        front: UnixStream,
        recorder: Arc<Recorder>,
        device: Device,
    ) -> Result<Session, CaptureError> {
        let features = CaptureBackend::offered_features(&device);
        let config_space = device.config_space();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let device_config = recorder.store(&config_space)?;
        recorder.append(RecordBody::SessionStart(SessionStart {
            wall_clock_unix_ns: wall,
            tool: "vgt-capture".to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: CaptureMode::BuiltIn,
            renderer: RENDERER.to_owned(),
            features_offered: features,
            features_acked: 0,
            protocol_features: backend::protocol_features().bits(),
            num_queues: backend::NUM_QUEUES as u16,
            queue_sizes: vec![backend::MAX_QUEUE_SIZE as u16; backend::NUM_QUEUES],
            device_config,
        }))?;
        recorder.lifecycle(LifecycleKind::Connect, None, None, "front-end connected")?;

        let signal = Arc::new(SessionSignal::new().map_err(|e| CaptureError::io("eventfd", e))?);
        let gpu_slot = Arc::new(GpuSlot::default());
        let backend =
            CaptureBackend::new(device, recorder.clone(), signal.clone(), gpu_slot.clone())
                .map_err(|e| CaptureError::io("exit event", e))?;
        let exit_descriptors = backend.exit_descriptors();
        let backend = Arc::new(RwLock::new(backend));
        let device = backend.clone();
        let mut daemon = VhostUserDaemon::new(
            "vgt-capture".to_owned(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(|e| CaptureError::Daemon {
            detail: e.to_string(),
        })?;

        // A private socket between the relay and the daemon, in the abstract namespace so
        // nothing appears in the file system.
        let name = format!(
            "vgt-capture-{}-{}",
            std::process::id(),
            SESSION_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| CaptureError::io("internal socket address", e))?;
        let listener =
            UnixListener::bind_addr(&addr).map_err(|e| CaptureError::io("internal socket", e))?;
        let back = UnixStream::connect_addr(&addr)
            .map_err(|e| CaptureError::io("internal socket connect", e))?;
        let mut listener = Listener::from(listener);
        daemon
            .start(&mut listener)
            .map_err(|e| CaptureError::Daemon {
                detail: e.to_string(),
            })?;

        let mut relays = Vec::new();
        let order = Arc::new(relay::FrontOrder::default());
        let restarts = Arc::new(relay::RingRestarts::default());
        {
            let reset = move || {
                device
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .reset_device();
            };
            let rs = restarts.clone();
            let (f, b, r, s, g, o) = (
                front
                    .try_clone()
                    .map_err(|e| CaptureError::io("socket clone", e))?,
                back.try_clone()
                    .map_err(|e| CaptureError::io("socket clone", e))?,
                recorder.clone(),
                signal.clone(),
                gpu_slot,
                order.clone(),
            );
            relays.push(
                std::thread::Builder::new()
                    .name("vgt-relay-in".to_owned())
                    .spawn(move || {
                        let why = match relay::front_to_back(&f, &b, &r, &g, &o, &rs, &reset) {
                            _ if s.is_stopping() => {
                                "vgt-capture closed the connection (session ending)".to_owned()
                            }
                            Ok(()) => "front-end closed the connection".to_owned(),
                            Err(e) => format!("front-end connection failed: {e}"),
                        };
                        let _ = r.lifecycle(LifecycleKind::Disconnect, None, None, why);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                        s.disconnected();
                    })
                    .map_err(|e| CaptureError::io("relay thread", e))?,
            );
        }
        {
            let (f, b, r, s, o) = (
                front
                    .try_clone()
                    .map_err(|e| CaptureError::io("socket clone", e))?,
                back.try_clone()
                    .map_err(|e| CaptureError::io("socket clone", e))?,
                recorder.clone(),
                signal.clone(),
                order,
            );
            relays.push(
                std::thread::Builder::new()
                    .name("vgt-relay-out".to_owned())
                    .spawn(move || {
                        if let Err(e) = relay::back_to_front(&b, &f, &r, &o, &restarts) {
                            let _ = r.lifecycle(
                                LifecycleKind::Error,
                                None,
                                None,
                                format!("relaying a reply to the front-end: {e}"),
                            );
                        }
                        // The daemon closed its end (it does so after a request it refused):
                        // the front-end connection cannot continue either.
                        let _ = f.shutdown(std::net::Shutdown::Both);
                        s.disconnected();
                    })
                    .map_err(|e| CaptureError::io("relay thread", e))?,
            );
        }
        Ok(Session {
            recorder,
            signal,
            daemon,
            front,
            back,
            relays,
            exit_descriptors,
        })
    }

    /// The session's signal flags (poll `wake_fd`).
    pub fn signal(&self) -> &Arc<SessionSignal> {
        &self.signal
    }

    /// The session's recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Stops serving and finishes the capture file.
    pub fn end(mut self, reason: EndReason) -> Result<(), RecordError> {
        self.signal.stop();
        if reason != EndReason::Disconnect {
            // Cut the front-end off. On a disconnect the relays end by themselves once they
            // have read (and recorded) everything the front-end sent before it closed.
            let _ = self.front.shutdown(std::net::Shutdown::Both);
            let _ = self.back.shutdown(std::net::Shutdown::Both);
        }
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
        if let Err(e) = self.daemon.wait()
            && reason == EndReason::Disconnect
            && !matches!(
                e,
                vhost_user_backend::Error::HandleRequest(
                    vhost::vhost_user::Error::Disconnected
                        | vhost::vhost_user::Error::PartialMessage
                        | vhost::vhost_user::Error::SocketBroken(_)
                )
            )
        {
            {
                // The daemon refused a request or the connection broke mid-message.
                let detail = format!("vhost-user daemon stopped: {e}");
                eprintln!("vgt-capture: {detail}");
                let _ = self
                    .recorder
                    .lifecycle(LifecycleKind::Error, None, None, detail);
            }
        }
        // Dropping the daemon fires the exit event and joins the queue worker; then nothing
        // uses the exit descriptors vhost-user-backend would leave open.
        drop(self.daemon);
        self.exit_descriptors.close_all();
        let message = match reason {
            EndReason::Disconnect => "front-end disconnected",
            EndReason::Signal => "stopped by signal",
            EndReason::Crash => "device crashed",
            EndReason::RecordFailed => "capture file write failed",
        };
        self.recorder.finish(message)
    }
}
