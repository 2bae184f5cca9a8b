//! Drawing: turns an [`App`] into a frame. Reads the state only; every file read happened in
//! `App::prepare`.

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use vgt_format::record::RecordKind;
use vgt_format::summary::{FLAG_CONTEXT_RING, FLAG_FENCED, NO_RECORD, RecordSummary};
use vgt_format::wire::ResponseType;

use super::app::{App, View, areas, resource_rows};
use crate::describe::format_ts;

/// The key help, one line per key.
pub const HELP: &[(&str, &str)] = &[
    (
        "Up/Down j/k",
        "move the selection (resources view: the resource cursor)",
    ),
    ("PgUp/PgDn Space", "move by 20"),
    ("Home/End g/G", "first / last record"),
    ("Tab 1 2 3", "list / resources (r) / timeline (t)"),
    (
        "Enter",
        "follow command <-> response; resources: go to creation",
    ),
    ("d", "resources: go to the destruction record"),
    (
        "/",
        "filter: type: kind: res: ctx: fence: code: t: q: err text",
    ),
    ("Esc", "clear the filter"),
    ("[ ]", "scroll the detail pane"),
    ("c", "commands only (toggle)"),
    ("n / N", "next / previous error or check finding"),
    ("+ - Left Right 0", "timeline zoom, pan, whole capture"),
    ("mouse", "wheel scrolls, click selects a row"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
];

fn kind_short(k: RecordKind) -> &'static str {
    match k {
        RecordKind::SESSION_START => "sess",
        RecordKind::VHOST_USER => "vhost",
        RecordKind::COMMAND => "cmd",
        RecordKind::MEMORY_READ => "mem",
        RecordKind::RESPONSE => "resp",
        RecordKind::FENCE => "fence",
        RecordKind::GPU_SOCKET => "gpu",
        RecordKind::FRAME => "frame",
        RecordKind::CURSOR => "curs",
        RecordKind::LIFECYCLE => "life",
        RecordKind::MARKER => "mark",
        _ => "?",
    }
}

/// Nanoseconds as a short duration.
pub fn short_duration(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 10_000_000 {
        format!("{}us", ns / 1_000)
    } else if ns < 10_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}s", ns / 1_000_000_000)
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let a = areas(frame.area());
    draw_status(frame, app, a.status);
    match app.view {
        View::List => {
            draw_list(frame, app, a.list);
            draw_detail(frame, app, a.detail);
        }
        View::Resources => draw_resources(frame, app, a.main),
        View::Timeline => draw_timeline(frame, app, a.main),
    }
    draw_footer(frame, app, a.footer);
    if app.help {
        draw_help(frame, a.main);
    }
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let index = match (app.index_progress(), &app.index) {
        (Some(p), _) => format!(
            "indexing {}%",
            (p * 100).checked_div(app.len).unwrap_or(100)
        ),
        (None, Some(ix)) => format!("{} marks", ix.marks.len()),
        (None, None) => "not indexed".to_string(),
    };
    let view = match app.view {
        View::List => "list",
        View::Resources => "resources",
        View::Timeline => "timeline",
    };
    let filter = match &app.filter {
        Some((f, ids)) => format!(" | {} of {}: {}", ids.len(), app.len, f.text),
        None => String::new(),
    };
    let text = format!(
        " {} | {} records | {index} | {view}{filter}",
        app.name, app.len
    );
    frame.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn summary_of(app: &App, id: u64) -> Option<&RecordSummary> {
    app.index.as_ref()?.table.get(id as usize)
}

fn draw_list(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let block = Block::bordered().title(" records ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let marks = app.index.as_ref().map(|ix| &ix.findings_by_record);
    let mut lines = Vec::new();
    for pos in app.top..(app.top + u64::from(inner.height)).min(app.count()) {
        let Some(id) = app.id_at(pos) else { break };
        let Some(row) = app.rows.get(&id) else {
            lines.push(Line::from(format!("{id:>7} …")));
            continue;
        };
        let summary = summary_of(app, id);
        let text = if row.kind == RecordKind::COMMAND {
            // "q0 head=N TYPE args": show queue, type, the answer and latency, then the args.
            let mut parts = row.text.splitn(3, ' ');
            let queue = parts.next().unwrap_or("");
            let _head = parts.next();
            let rest = parts.next().unwrap_or("");
            let (ty, args) = rest.split_once(' ').unwrap_or((rest, ""));
            let (code, lat) = match summary {
                Some(s) if s.link != NO_RECORD => (
                    short_code(ResponseType(s.response_code)),
                    summary_of(app, s.link)
                        .map(|r| short_duration(r.ts_ns.saturating_sub(s.ts_ns)))
                        .unwrap_or_default(),
                ),
                Some(_) => ("-".to_string(), String::new()),
                None => (String::new(), String::new()),
            };
            format!(
                "{id:>7} {:>11} {queue:<2} {ty:<23} {code:<7} {lat:>6} {args}",
                format_ts(row.ts_ns)
            )
        } else {
            format!(
                "{id:>7} {:>11} {:<5} {}",
                format_ts(row.ts_ns),
                kind_short(row.kind),
                row.text
            )
        };
        let mut style = Style::default();
        if summary.is_some_and(RecordSummary::is_error) {
            style = style.fg(Color::Red);
        } else if marks.is_some_and(|m| m.contains_key(&id)) {
            style = style.fg(Color::Yellow);
        }
        if pos == app.selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(Span::styled(text, style)));
    }
    if app.count() == 0 {
        lines.push(Line::from("(no record matches)"));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn short_code(t: ResponseType) -> String {
    let s = t.to_string();
    s.strip_prefix("OK_").map_or(s.clone(), str::to_string)
}

fn draw_detail(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let block = Block::bordered().title(" detail (Enter: follow link) ");
    let lines = app
        .detail
        .as_ref()
        .map(|d| d.lines.clone())
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.detail_scroll, 0)),
        area,
    );
}

fn draw_resources(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match app.state.as_ref().map(|s| s.0) {
        Some(id) => format!(" device state after #{id} (Enter: created, d: destroyed) "),
        None => " device state ".to_string(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let state = match &app.state {
        Some((_, Ok(s))) => s,
        Some((_, Err(e))) => {
            frame.render_widget(Paragraph::new(e.as_str()), inner);
            return;
        }
        None => return,
    };
    let mut lines = vec![Line::from(format!(
        "{} live resources, {} retired, {} contexts, {} fences pending, {} errors so far",
        state.resources.len(),
        state.retired_resources.len(),
        state.contexts.len(),
        state.pending_fences.len(),
        state.error_responses
    ))];
    let scanouts: Vec<String> = state
        .scanouts
        .iter()
        .enumerate()
        .filter(|(_, s)| s.resource_id != 0)
        .map(|(i, s)| format!("{i}:res {} {}", s.resource_id, s.rect))
        .collect();
    lines.push(Line::from(format!(
        "scanouts: {}",
        if scanouts.is_empty() {
            "none".to_string()
        } else {
            scanouts.join("  ")
        }
    )));
    if !state.contexts.is_empty() {
        let ctxs: Vec<String> = state
            .contexts
            .values()
            .map(|c| format!("{} \"{}\" ({} res)", c.id, c.name, c.resources.len()))
            .collect();
        lines.push(Line::from(format!("contexts: {}", ctxs.join("  "))));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "{:>6} {:<5} {:<14} {:>9} {:>10} {:<8} {:>8} {:>8}",
            "res", "kind", "format", "size", "backing", "scanout", "created", "gone"
        ),
        Style::default().add_modifier(Modifier::BOLD),
    )));
    let rows = resource_rows(state);
    let room = usize::from(inner.height).saturating_sub(lines.len());
    let cursor = app.resource_cursor.min(rows.len().saturating_sub(1));
    let first = cursor.saturating_sub(room.saturating_sub(1));
    for (i, r) in rows.iter().enumerate().skip(first).take(room) {
        let res = r.resource;
        let kind = match res.kind {
            vgt_format::state::ResourceKind::TwoD => "2d",
            vgt_format::state::ResourceKind::ThreeD { .. } => "3d",
            vgt_format::state::ResourceKind::Blob { .. } => "blob",
        };
        let format = res
            .format
            .map_or_else(|| "-".to_string(), |f| f.to_string());
        let scanouts: Vec<String> = res.scanouts.iter().map(u32::to_string).collect();
        let text = format!(
            "{:>6} {:<5} {:<14} {:>9} {:>10} {:<8} {:>8} {:>8}",
            res.id,
            kind,
            format,
            format!("{}x{}", res.width, res.height),
            res.backing_bytes(),
            if scanouts.is_empty() {
                "-".to_string()
            } else {
                scanouts.join(",")
            },
            format!("#{}", r.created_at),
            r.destroyed_at
                .map_or_else(|| "-".to_string(), |d| format!("#{d}")),
        );
        let mut style = Style::default();
        if r.destroyed_at.is_some() {
            style = style.add_modifier(Modifier::DIM);
        }
        if i == cursor {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(Span::styled(text, style)));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// A timeline track: cells counting commands in flight.
#[derive(Debug, Default)]
struct Track {
    cells: Vec<u32>,
    errors: Vec<bool>,
}

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn draw_timeline(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let (start, span) = app.timeline_window();
    let block = Block::bordered().title(format!(
        " timeline {} s .. {} s (+/- zoom, Left/Right pan, 0 all) ",
        format_ts(start),
        format_ts(start.saturating_add(span))
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(ix) = &app.index else {
        frame.render_widget(
            Paragraph::new("the timeline appears once indexing ends"),
            inner,
        );
        return;
    };
    const LABEL: u16 = 14;
    let cols = inner.width.saturating_sub(LABEL).max(1) as usize;
    let end = start.saturating_add(span);
    let col_of = |ts: u64| -> usize {
        let rel = ts.saturating_sub(start) as u128 * cols as u128 / u128::from(span.max(1));
        (rel as usize).min(cols - 1)
    };
    let mut tracks: BTreeMap<String, Track> = BTreeMap::new();
    let mut add = |name: String, from: u64, to: u64, error: bool| {
        if to < start || from > end {
            return;
        }
        let t = tracks.entry(name).or_insert_with(|| Track {
            cells: vec![0; cols],
            errors: vec![false; cols],
        });
        for c in col_of(from.max(start))..=col_of(to.min(end)) {
            t.cells[c] += 1;
            t.errors[c] |= error;
        }
    };
    // Commands submitted in the window (binary search on the monotonic timestamps).
    let first = ix.table.partition_point(|s| s.ts_ns < start);
    for s in ix.table[first..].iter().take_while(|s| s.ts_ns <= end) {
        if s.kind != RecordKind::COMMAND {
            continue;
        }
        let done = if s.link != NO_RECORD {
            ix.table.get(s.link as usize).map_or(s.ts_ns, |r| r.ts_ns)
        } else {
            s.ts_ns
        };
        let q = match s.queue {
            0 => "controlq".to_string(),
            1 => "cursorq".to_string(),
            n => format!("queue {n}"),
        };
        add(format!("1 {q}"), s.ts_ns, done, s.is_error());
        if s.flags & FLAG_FENCED != 0 {
            let ring = if s.flags & FLAG_CONTEXT_RING != 0 {
                format!("c{} r{} fences", s.ctx, s.ring)
            } else {
                "fences".to_string()
            };
            add(format!("2 {ring}"), s.ts_ns, done, s.is_error());
        }
    }
    let mut lines = Vec::new();
    let sel_col = app
        .selected_id()
        .and_then(|id| ix.table.get(id as usize))
        .filter(|s| (start..=end).contains(&s.ts_ns))
        .map(|s| col_of(s.ts_ns));
    let mut marker = " ".repeat(usize::from(LABEL));
    if let Some(c) = sel_col {
        if c + 10 <= cols {
            marker.push_str(&" ".repeat(c));
            marker.push_str("▼ selected");
        } else {
            marker.push_str(&" ".repeat(c.saturating_sub(9)));
            marker.push_str("selected ▼");
        }
    }
    lines.push(Line::from(marker));
    if tracks.is_empty() {
        lines.push(Line::from("(no command in this window)"));
    }
    for (name, t) in &tracks {
        let label = format!(
            "{:<w$}",
            name.get(2..).unwrap_or(""),
            w = usize::from(LABEL)
        );
        let mut spans = vec![Span::raw(label)];
        for (n, err) in t.cells.iter().zip(&t.errors) {
            let ch = if *n == 0 {
                '·'
            } else {
                LEVELS[(*n as usize - 1).min(LEVELS.len() - 1)]
            };
            let style = if *err {
                Style::default().fg(Color::Red)
            } else {
                Style::default().fg(Color::Cyan)
            };
            spans.push(Span::styled(ch.to_string(), style));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(format!(
        "{:<w$}{}{:>r$}",
        "",
        format_ts(start),
        format_ts(end),
        w = usize::from(LABEL),
        r = cols.saturating_sub(format_ts(start).len()),
    )));
    lines.push(Line::from(
        "bar height: commands in flight per column; · gap; red: an error in the column",
    ));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let text = if let Some(input) = &app.input {
        format!("/{input}█  (Enter apply, Esc cancel)")
    } else if let Some(m) = &app.message {
        m.clone()
    } else {
        "?:help /:filter n:next error Tab:view Enter:follow c:commands q:quit".to_string()
    };
    frame.render_widget(Paragraph::new(text), area);
}

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let w = area.width.min(78);
    let h = area.height.min(HELP.len() as u16 + 2);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, r);
    let lines: Vec<Line<'static>> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<17}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(v.to_string()),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(" keys (? closes) "))
            .wrap(Wrap { trim: false }),
        r,
    );
}
