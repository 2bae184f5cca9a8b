//! A minimal QMP client: connect, negotiate capabilities, run commands (`screendump`, `quit`).
//!
//! QMP is one JSON object per line over the unix socket QEMU got with
//! `-qmp unix:SOCK,server=on,wait=off`: QEMU greets with `{"QMP": {...}}`, the client sends
//! `{"execute": "qmp_capabilities"}`, then commands; each answer is `{"return": ...}` or
//! `{"error": {"class", "desc"}}`, and asynchronous `{"event": ...}` objects may come between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A QMP connection in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `path` (retrying until `wait` has passed: the socket appears a moment after
    /// QEMU starts), reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path, wait: Duration) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < wait => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot connect to QMP {}", path.display()));
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("unexpected QMP greeting {greeting}");
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?;
        if n == 0 {
            bail!("QMP connection closed by QEMU");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent invalid JSON {line:?}"))
    }

    /// Runs `command` with `arguments` and returns its `return` value; a QMP error becomes an
    /// `Err` with QEMU's class and description. Events are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .with_context(|| format!("sending QMP {command}"))?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!(
                    "QMP {command} failed: {} ({})",
                    e.get("desc").and_then(Value::as_str).unwrap_or("?"),
                    e.get("class").and_then(Value::as_str).unwrap_or("?")
                );
            }
            bail!("unexpected QMP answer to {command}: {v}");
        }
    }

    /// Has QEMU write head `head` of display device `device` (a PCI device id such as `gpu0`)
    /// as a binary PPM to `path` (absolute: QEMU itself writes it).
    pub fn screendump(&mut self, path: &Path, device: &str, head: u32) -> Result<()> {
        let file = std::path::absolute(path)?;
        self.execute(
            "screendump",
            Some(json!({
                "filename": file.to_string_lossy(),
                "device": device,
                "head": head,
                "format": "ppm",
            })),
        )?;
        Ok(())
    }

    /// Asks QEMU to exit (it answers, then closes the connection).
    pub fn quit(&mut self) -> Result<()> {
        self.execute("quit", None)?;
        Ok(())
    }
}
