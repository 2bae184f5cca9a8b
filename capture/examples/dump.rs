//! Dev helper: prints a capture's records, one line each.
#![allow(clippy::unwrap_used, missing_docs)]
use vgt_format::record::RecordBody;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let reader = vgt_format::file::CaptureReader::open(&path).unwrap();
    eprintln!("{:?}", reader.health());
    for r in reader.iter() {
        let (id, rec) = r.unwrap();
        let line = match &rec.body {
            RecordBody::VhostUser(m) => {
                let p = reader.read_payload(&m.payload).unwrap();
                format!(
                    "vhost {:?} req={} flags={:#x} fds={} payload={:02x?}",
                    m.direction,
                    m.request,
                    m.flags,
                    m.fd_count,
                    &p[..p.len().min(48)]
                )
            }
            RecordBody::Command(c) => {
                let p = reader.read_payload(&c.request).unwrap();
                format!(
                    "command q={} head={} wl={} ndesc={} type={:#x} len={}",
                    c.queue,
                    c.head,
                    c.writable_len,
                    c.descriptors.len(),
                    p.get(0..4)
                        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                        .unwrap_or(0),
                    p.len()
                )
            }
            RecordBody::Response(x) => {
                let p = reader.read_payload(&x.bytes).unwrap();
                format!(
                    "response cmd={} used={} type={:#x}",
                    x.command,
                    x.used_len,
                    p.get(0..4)
                        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                        .unwrap_or(0)
                )
            }
            RecordBody::GpuSocket(g) => format!(
                "gpu {:?} req={} len={}",
                g.direction,
                g.request,
                g.payload.len() + g.data.as_ref().map_or(0, |d| d.len())
            ),
            RecordBody::Frame(f) => format!(
                "frame cmd={} {}x{} rect={:?}",
                f.command, f.width, f.height, f.rect
            ),
            RecordBody::MemoryRead(m) => format!(
                "memread cmd={} res={} addr={:#x} len={}",
                m.command,
                m.resource_id,
                m.addr,
                m.data.len()
            ),
            RecordBody::Lifecycle(l) => format!(
                "lifecycle {:?} q={:?} cmd={:?} {}",
                l.kind, l.queue, l.command, l.message
            ),
            other => format!("{other:?}").chars().take(200).collect(),
        };
        println!("{id:5} {:>12} {line}", rec.ts_ns);
    }
}
