//! The capture file container: chunk framing, writer, reader, blobs and index.
