//! EDID generator checks.

use crate::wire::edid::*;

#[test]
fn edid_checksum_header_and_version() {
    for (w, h, hz) in [
        (1024, 768, 60),
        (1920, 1080, 60),
        (640, 480, 75),
        (3840, 2160, 30),
    ] {
        let e = edid_for_mode(w, h, hz, 0x1234_5678);
        assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_eq!(&e[..8], &HEADER);
        assert_eq!((e[18], e[19]), (1, 4));
        assert_eq!(
            u32::from_le_bytes([e[12], e[13], e[14], e[15]]),
            0x1234_5678
        );
        // "VGT" packed as three 5-bit letters, big-endian.
        let id = u16::from_be_bytes([e[8], e[9]]);
        let letters: String = [10u16, 5, 0]
            .iter()
            .map(|s| (b'A' - 1 + ((id >> s) & 0x1f) as u8) as char)
            .collect();
        assert_eq!(letters, "VGT");
        assert_eq!(e[126], 0);
    }
}

#[test]
fn edid_dtd_decodes_back_to_mode() {
    for (w, h, hz) in [
        (1024, 768, 60),
        (1920, 1080, 60),
        (1280, 800, 75),
        (3840, 2160, 30),
    ] {
        let e = edid_for_mode(w, h, hz, 0);
        let t = parse_detailed_timing(&e[DTD_OFFSET..DTD_OFFSET + 18]).unwrap();
        assert_eq!((t.h_active, t.v_active), (w, h));
        assert!(t.h_front + t.h_sync < t.h_blank);
        assert!(t.v_front + t.v_sync < t.v_blank);
        let refresh = t.refresh_millihz();
        assert!(
            refresh.abs_diff(u64::from(hz) * 1000) < 500,
            "{w}x{h}@{hz}: {refresh} mHz"
        );
        assert_eq!(t, timing_for_mode(w, h, hz));
    }
}

#[test]
fn edid_has_monitor_name_descriptor_vgt() {
    let e = edid_for_mode(800, 600, 60, 0);
    let names: Vec<&[u8]> = (0..4)
        .map(|i| &e[54 + 18 * i..72 + 18 * i])
        .filter(|d| d[..3] == [0, 0, 0] && d[3] == 0xfc)
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(&names[0][5..9], b"vgt\n");
}

#[test]
fn edid_out_of_range_mode_is_clamped_not_panicking() {
    for (w, h, hz) in [(0, 0, 0), (u32::MAX, u32::MAX, u32::MAX), (8192, 8192, 144)] {
        let e = edid_for_mode(w, h, hz, 1);
        assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        let t = parse_detailed_timing(&e[54..72]).unwrap();
        assert_eq!(t.h_active, w.clamp(1, MAX_ACTIVE));
        assert_eq!(t.v_active, h.clamp(1, MAX_ACTIVE));
    }
}
