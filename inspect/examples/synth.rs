//! Writes a synthetic boot capture (`synth OUT [UPDATES]`) for trying the browser by hand.

use vgt_format::record::LifecycleKind;
use vgt_format::testing::CaptureBuilder;
use vgt_format::{CaptureWriter, WriterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: synth OUT [UPDATES]")?;
    let updates: u32 = args.next().map_or(Ok(20), |s| s.parse())?;
    let writer = CaptureWriter::create(&out, WriterOptions::default())?;
    let mut b = CaptureBuilder::new(writer, 1)?;
    b.linux_boot(64, 32, updates)?;
    b.lifecycle(LifecycleKind::End, "capture finished")?;
    b.finish()?;
    Ok(())
}
