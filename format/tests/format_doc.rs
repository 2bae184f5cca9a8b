//! docs/FORMAT.md's record-kind tables must say exactly what the code writes: kind codes, names,
//! fixed lengths and every fixed field's offset, name and type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vgt_format::file::codec::{LAYOUTS, layout};
use vgt_format::record::RecordKind;

/// One `### Record 0x.... `name` (...), fixed_len N` section and its table rows.
#[derive(Debug)]
struct DocKind {
    code: u16,
    name: String,
    fixed_len: u16,
    fields: Vec<(u16, String, String)>,
}

fn parse(doc: &str) -> Vec<DocKind> {
    let mut kinds: Vec<DocKind> = Vec::new();
    let mut in_section = false;
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("### Record ") {
            let (code, rest) = rest.split_once(' ').unwrap();
            let code = u16::from_str_radix(code.trim_start_matches("0x"), 16).unwrap();
            let name = rest.split('`').nth(1).unwrap().to_string();
            let fixed_len = rest
                .rsplit("fixed_len ")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            kinds.push(DocKind {
                code,
                name,
                fixed_len,
                fields: Vec::new(),
            });
            in_section = true;
            continue;
        }
        if line.starts_with('#') {
            in_section = false;
            continue;
        }
        if !in_section || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // cells[0] is empty (before the first '|'); skip the header and separator rows.
        let Ok(offset) = cells[1].parse::<u16>() else {
            continue;
        };
        let kind = kinds.last_mut().unwrap();
        kind.fields
            .push((offset, cells[2].to_string(), cells[3].to_string()));
    }
    kinds
}

#[test]
fn format_doc_record_tables_match_layouts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let kinds = parse(&doc);
    assert_eq!(kinds.len(), LAYOUTS.len(), "one section per record kind");
    for dk in &kinds {
        let l = layout(dk.code).unwrap_or_else(|| panic!("doc kind {:#06x} unknown", dk.code));
        assert_eq!(dk.name, l.kind.name(), "name of {:#06x}", dk.code);
        assert_eq!(dk.fixed_len, l.fixed_len, "fixed_len of {}", dk.name);
        let code_fields: Vec<(u16, String, String)> = l
            .fields
            .iter()
            .map(|f| (f.offset, f.name.to_string(), f.ty.doc_name()))
            .collect();
        assert_eq!(dk.fields, code_fields, "fields of {}", dk.name);
    }
    for k in RecordKind::ALL {
        assert!(
            kinds.iter().any(|d| d.code == k.0),
            "{} is documented",
            k.name()
        );
    }
}

#[test]
fn format_doc_parser_sees_a_drifted_table() {
    // The check above must be able to fail: a changed offset is caught.
    let doc = "### Record 0x000B `marker` (Marker), fixed_len 4\n\n| offset | field | type | meaning |\n|---:|---|---|---|\n| 2 | text | string | x |\n";
    let kinds = parse(doc);
    assert_eq!(kinds.len(), 1);
    let l = layout(kinds[0].code).unwrap();
    assert_ne!(kinds[0].fields[0].0, l.fields[0].offset);
}
