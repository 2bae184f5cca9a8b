//! Writes a synthetic boot capture of about RECORDS records (`synth OUT [RECORDS]`), for
//! benchmarks and for trying the browser by hand.

use vgt_format::record::LifecycleKind;
use vgt_format::testing::CaptureBuilder;
use vgt_format::{CaptureWriter, WriterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: synth OUT [RECORDS]")?;
    let records: u64 = args.next().map_or(Ok(150), |s| s.parse())?;
    let writer = CaptureWriter::create(&out, WriterOptions::default())?;
    let mut b = CaptureBuilder::new(writer, 1)?;
    // A boot is 9 records, then 7 per update (transfer, 2 memory reads, flush, frame, 2 responses).
    let updates = u32::try_from(records.saturating_sub(10) / 7)?;
    b.linux_boot(8, 8, updates)?;
    b.lifecycle(LifecycleKind::End, "capture finished")?;
    let stats = b.finish()?;
    println!(
        "{out}: {} records, {} bytes",
        stats.records, stats.file_bytes
    );
    Ok(())
}
