//! The browser's state and the actions that change it. Drawing (see `draw`) only reads it;
//! [`App::prepare`] does all file reading for the next frame (visible rows, the selected
//! record's detail, the state for the resources view), so that drawing never touches the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use vgt_format::CaptureReader;
use vgt_format::record::{RecordBody, RecordId, RecordKind};
use vgt_format::state::DeviceState;
use vgt_format::summary::NO_RECORD;

use super::detail::{Detail, build_detail};
use super::filter::Filter;
use super::index::{Indexed, Indexer};
use crate::describe::describe;

/// How long a filter may spend building decoded descriptions for free-text words, so that a
/// filter over a million records still answers within a second.
pub const FREE_TEXT_BUDGET: std::time::Duration = std::time::Duration::from_millis(600);

/// Rows kept in the row cache before it is cleared.
const ROW_CACHE: usize = 4096;
/// Without the state index, the resources view folds at most this many records.
const UNINDEXED_STATE_LIMIT: u64 = 50_000;

/// The main views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Record list with the detail pane.
    List,
    /// Device state at the selected record.
    Resources,
    /// Queues and fence rings over time.
    Timeline,
}

/// Everything input can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the browser.
    Quit,
    /// Move the selection (or the resource cursor) up by n.
    Up(u64),
    /// Move the selection (or the resource cursor) down by n.
    Down(u64),
    /// First record.
    Top,
    /// Last record.
    Bottom,
    /// Show a view.
    Show(View),
    /// Next view in order.
    NextView,
    /// Toggle the key help overlay.
    ToggleHelp,
    /// Start typing a filter.
    StartFilter,
    /// A character typed into the filter.
    FilterChar(char),
    /// Backspace in the filter.
    FilterBackspace,
    /// Apply the typed filter.
    FilterCommit,
    /// Stop typing, keep the previous filter.
    FilterCancel,
    /// Remove the filter.
    ClearFilter,
    /// Only commands (toggle).
    ToggleCommandsOnly,
    /// Next error or finding after the selection.
    NextMark,
    /// Previous error or finding before the selection.
    PrevMark,
    /// Select a record by id.
    Jump(RecordId),
    /// Follow the selected record's link (command <-> response), or in the resources view jump
    /// to the selected resource's creation.
    Follow,
    /// In the resources view: jump to the selected resource's destruction.
    FollowDestroyed,
    /// Timeline zoom in.
    ZoomIn,
    /// Timeline zoom out.
    ZoomOut,
    /// Timeline pan left.
    PanLeft,
    /// Timeline pan right.
    PanRight,
    /// Timeline: show the whole capture.
    ZoomReset,
    /// Scroll the detail pane by this many lines (negative: up).
    ScrollDetail(i32),
    /// A click at a terminal cell.
    Click(u16, u16),
}

/// One list row, read from the file.
#[derive(Debug, Clone)]
pub struct Row {
    /// Record id.
    pub id: RecordId,
    /// Timestamp.
    pub ts_ns: u64,
    /// Record kind.
    pub kind: RecordKind,
    /// Queue for commands and responses.
    pub queue: Option<u16>,
    /// Decoded one-line description.
    pub text: String,
}

/// The areas of the screen, computed the same way by `prepare` and by drawing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Areas {
    /// Top status line.
    pub status: Rect,
    /// Main area.
    pub main: Rect,
    /// Record list (inside main, list view).
    pub list: Rect,
    /// Detail pane (inside main, list view).
    pub detail: Rect,
    /// Bottom key/filter line.
    pub footer: Rect,
}

/// Splits the terminal area.
pub fn areas(area: Rect) -> Areas {
    let h = area.height;
    let status = Rect {
        height: h.min(1),
        ..area
    };
    let footer = Rect {
        y: area.y + h.saturating_sub(1),
        height: if h >= 2 { 1 } else { 0 },
        ..area
    };
    let main = Rect {
        y: area.y + status.height,
        height: h.saturating_sub(status.height + footer.height),
        ..area
    };
    let (list, detail) = if main.width >= 160 {
        let lw = main.width / 2;
        (
            Rect { width: lw, ..main },
            Rect {
                x: main.x + lw,
                width: main.width - lw,
                ..main
            },
        )
    } else {
        let lh = (main.height * 11 / 20).max(3).min(main.height);
        (
            Rect { height: lh, ..main },
            Rect {
                y: main.y + lh,
                height: main.height - lh,
                ..main
            },
        )
    };
    Areas {
        status,
        main,
        list,
        detail,
        footer,
    }
}

/// The browser state.
pub struct App {
    /// The capture.
    pub reader: Arc<CaptureReader>,
    /// Name shown in the status line.
    pub name: String,
    /// Records in the capture.
    pub len: u64,
    /// Current view.
    pub view: View,
    /// Help overlay shown.
    pub help: bool,
    /// Position of the selection in the (filtered) list.
    pub selected: u64,
    /// Position of the first visible row.
    pub top: u64,
    /// The applied filter and its matches.
    pub filter: Option<(Filter, Vec<RecordId>)>,
    /// A filter waiting for the index.
    pub pending_filter: Option<Filter>,
    /// Text being typed after `/`.
    pub input: Option<String>,
    /// One-line message (errors, hints).
    pub message: Option<String>,
    /// Rows read so far.
    pub rows: HashMap<RecordId, Row>,
    /// Detail of the selected record.
    pub detail: Option<Detail>,
    /// Scroll offset in the detail pane.
    pub detail_scroll: u16,
    /// Index (once the background pass finished).
    pub index: Option<Indexed>,
    indexer: Option<Indexer>,
    /// State at a record, for the resources view.
    pub state: Option<(RecordId, Result<DeviceState, String>)>,
    /// Cursor in the resources view.
    pub resource_cursor: usize,
    /// Timeline window start (ns).
    pub tl_start: u64,
    /// Timeline window length (ns); 0 = whole capture.
    pub tl_span: u64,
    /// Terminal size at the last prepare.
    pub size: Rect,
    /// Set by Quit.
    pub quit: bool,
}

impl App {
    /// A browser on `reader`. With `index`, a background thread builds the summary table,
    /// state checkpoints and findings.
    pub fn new(reader: Arc<CaptureReader>, name: &str, index: bool) -> App {
        let len = reader.len();
        let indexer = index.then(|| Indexer::spawn(reader.clone()));
        App {
            reader,
            name: name.to_string(),
            len,
            view: View::List,
            help: false,
            selected: 0,
            top: 0,
            filter: None,
            pending_filter: None,
            input: None,
            message: None,
            rows: HashMap::new(),
            detail: None,
            detail_scroll: 0,
            index: None,
            indexer,
            state: None,
            resource_cursor: 0,
            tl_start: 0,
            tl_span: 0,
            size: Rect::default(),
            quit: false,
        }
    }

    /// Blocks until the background index is ready (tests, benchmarks).
    pub fn wait_index(&mut self) {
        if let Some(ix) = self.indexer.take()
            && let Some(done) = ix.wait()
        {
            self.install(done);
        }
    }

    /// Records indexed so far, when indexing.
    pub fn index_progress(&self) -> Option<u64> {
        self.indexer
            .as_ref()
            .map(|i| i.progress.load(Ordering::Relaxed))
    }

    fn install(&mut self, done: Indexed) {
        self.index = Some(done);
        self.indexer = None;
        if let Some(f) = self.pending_filter.take() {
            self.apply_filter(f);
        }
        self.detail = None;
    }

    /// Number of rows in the (filtered) list.
    pub fn count(&self) -> u64 {
        match &self.filter {
            Some((_, ids)) => ids.len() as u64,
            None => self.len,
        }
    }

    /// Record id at list position `pos`.
    pub fn id_at(&self, pos: u64) -> Option<RecordId> {
        match &self.filter {
            Some((_, ids)) => ids.get(pos as usize).copied(),
            None => (pos < self.len).then_some(pos),
        }
    }

    /// The selected record.
    pub fn selected_id(&self) -> Option<RecordId> {
        self.id_at(self.selected)
    }

    fn position_of(&self, id: RecordId) -> Option<u64> {
        match &self.filter {
            Some((_, ids)) => ids.binary_search(&id).ok().map(|p| p as u64),
            None => (id < self.len).then_some(id),
        }
    }

    fn select(&mut self, pos: u64) {
        let n = self.count();
        self.selected = if n == 0 { 0 } else { pos.min(n - 1) };
        self.detail_scroll = 0;
    }

    fn apply_filter(&mut self, f: Filter) {
        let Some(ix) = &self.index else {
            self.message = Some("filter waits for the index (see the status line)".to_string());
            self.pending_filter = Some(f);
            return;
        };
        let keep = self.selected_id();
        let reader = self.reader.clone();
        let mut decode = |id: RecordId| {
            reader
                .record(id)
                .ok()
                .map(|r| describe(&r, reader.as_ref()))
        };
        let deadline = std::time::Instant::now() + FREE_TEXT_BUDGET;
        let applied = f.apply_decoded(&ix.table, &ix.marks, &mut decode, deadline);
        let ids = applied.matches;
        self.message = Some(match applied.decoded_until {
            None => format!("{} records match `{}`", ids.len(), f.text),
            Some(at) => format!(
                "{} records match `{}` (decoded text searched before #{at} only; later records by name)",
                ids.len(),
                f.text
            ),
        });
        self.filter = Some((f, ids));
        let pos = keep
            .and_then(|id| {
                self.filter
                    .as_ref()
                    .map(|(_, ids)| ids.partition_point(|x| *x < id) as u64)
            })
            .unwrap_or(0);
        self.select(pos);
    }

    /// Applies an action.
    pub fn apply(&mut self, action: Action) {
        if !matches!(action, Action::Up(_) | Action::Down(_)) {
            self.message = None;
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Up(n) if self.view == View::Resources => {
                self.resource_cursor = self.resource_cursor.saturating_sub(n as usize);
            }
            Action::Down(n) if self.view == View::Resources => {
                let last = self.resource_count().saturating_sub(1);
                self.resource_cursor = self.resource_cursor.saturating_add(n as usize).min(last);
            }
            Action::Up(n) => self.select(self.selected.saturating_sub(n)),
            Action::Down(n) => self.select(self.selected.saturating_add(n)),
            Action::Top => self.select(0),
            Action::Bottom => self.select(u64::MAX),
            Action::Show(v) => self.view = v,
            Action::NextView => {
                self.view = match self.view {
                    View::List => View::Resources,
                    View::Resources => View::Timeline,
                    View::Timeline => View::List,
                }
            }
            Action::ToggleHelp => self.help = !self.help,
            Action::StartFilter => {
                self.input = Some(
                    self.filter
                        .as_ref()
                        .map(|(f, _)| f.text.clone())
                        .unwrap_or_default(),
                );
            }
            Action::FilterChar(c) => {
                if let Some(s) = &mut self.input {
                    s.push(c);
                }
            }
            Action::FilterBackspace => {
                if let Some(s) = &mut self.input {
                    s.pop();
                }
            }
            Action::FilterCancel => self.input = None,
            Action::FilterCommit => {
                let text = self.input.take().unwrap_or_default();
                if text.trim().is_empty() {
                    self.apply(Action::ClearFilter);
                } else {
                    match Filter::parse(&text) {
                        Ok(f) => self.apply_filter(f),
                        Err(e) => self.message = Some(format!("filter: {e}")),
                    }
                }
            }
            Action::ClearFilter => {
                let keep = self.selected_id();
                self.filter = None;
                self.pending_filter = None;
                self.select(keep.unwrap_or(0));
            }
            Action::ToggleCommandsOnly => {
                let commands_only = self
                    .filter
                    .as_ref()
                    .is_some_and(|(f, _)| f.text == "kind:command");
                if commands_only {
                    self.apply(Action::ClearFilter);
                } else if let Ok(f) = Filter::parse("kind:command") {
                    self.apply_filter(f);
                }
            }
            Action::NextMark | Action::PrevMark => self.jump_mark(action == Action::NextMark),
            Action::Jump(id) => self.jump(id),
            Action::Follow => self.follow(),
            Action::FollowDestroyed => {
                if let Some(at) = self.selected_resource().and_then(|r| r.1) {
                    self.jump(at);
                }
            }
            Action::ZoomIn | Action::ZoomOut | Action::PanLeft | Action::PanRight => {
                self.timeline_move(&action);
            }
            Action::ZoomReset => {
                self.tl_start = 0;
                self.tl_span = 0;
            }
            Action::ScrollDetail(n) => {
                let max = self
                    .detail
                    .as_ref()
                    .map_or(0, |d| d.lines.len().saturating_sub(1));
                let to = (i64::from(self.detail_scroll) + i64::from(n)).clamp(0, max as i64);
                self.detail_scroll = u16::try_from(to).unwrap_or(u16::MAX);
            }
            Action::Click(col, row) => self.click(col, row),
        }
    }

    /// Selects record `id`, clearing the filter when it hides it, and shows the list.
    pub fn jump(&mut self, id: RecordId) {
        if id >= self.len {
            return;
        }
        if self.position_of(id).is_none() {
            self.filter = None;
        }
        if let Some(p) = self.position_of(id) {
            self.select(p);
        }
        self.view = View::List;
    }

    fn jump_mark(&mut self, forward: bool) {
        let Some(ix) = &self.index else {
            self.message = Some("errors and findings are known once indexing ends".to_string());
            return;
        };
        let cur = self.selected_id().unwrap_or(0);
        let target = if forward {
            ix.marks.iter().find(|m| **m > cur).copied()
        } else {
            ix.marks.iter().rev().find(|m| **m < cur).copied()
        };
        match target {
            Some(t) => self.jump(t),
            None => {
                self.message = Some(format!(
                    "no {} error or finding",
                    if forward { "later" } else { "earlier" }
                ));
            }
        }
    }

    fn follow(&mut self) {
        if self.view == View::Resources {
            if let Some((created, _)) = self.selected_resource() {
                self.jump(created);
            }
            return;
        }
        let Some(id) = self.selected_id() else {
            return;
        };
        let link = match &self.index {
            Some(ix) => ix.table.get(id as usize).map(|s| s.link),
            None => self.detail.as_ref().and_then(|d| d.link),
        };
        match link {
            Some(l) if l != NO_RECORD => self.jump(l),
            _ => self.message = Some("this record links to no other".to_string()),
        }
    }

    /// (created at, destroyed at) of the resource under the resources-view cursor.
    pub fn selected_resource(&self) -> Option<(RecordId, Option<RecordId>)> {
        let (_, Ok(state)) = self.state.as_ref()? else {
            return None;
        };
        resource_rows(state)
            .get(self.resource_cursor)
            .map(|r| (r.created_at, r.destroyed_at))
    }

    /// Rows in the resources view for the current state.
    fn resource_count(&self) -> usize {
        match &self.state {
            Some((_, Ok(state))) => state.resources.len() + state.retired_resources.len(),
            _ => 0,
        }
    }

    fn timeline_move(&mut self, action: &Action) {
        let (start, span) = self.timeline_window();
        let (start, span) = match action {
            Action::ZoomIn => {
                let s = (span / 2).max(1_000);
                (start + (span - s) / 2, s)
            }
            Action::ZoomOut => {
                let s = span.saturating_mul(2);
                (start.saturating_sub((s - span) / 2), s)
            }
            Action::PanLeft => (start.saturating_sub(span / 4), span),
            Action::PanRight => (start.saturating_add(span / 4), span),
            _ => (start, span),
        };
        self.tl_start = start;
        self.tl_span = span;
    }

    /// The timeline window (start, span) in ns.
    pub fn timeline_window(&self) -> (u64, u64) {
        if self.tl_span > 0 {
            return (self.tl_start, self.tl_span);
        }
        let Some(ix) = &self.index else {
            return (0, 1_000);
        };
        // The whole capture, from its first command (setup before the driver starts is idle).
        let end = ix.table.last().map_or(0, |s| s.ts_ns);
        let start = ix
            .table
            .iter()
            .find(|s| s.kind == RecordKind::COMMAND)
            .map_or(0, |s| s.ts_ns)
            .min(end);
        (start, (end - start).max(1_000))
    }

    fn click(&mut self, col: u16, row: u16) {
        let a = areas(self.size);
        if self.view == View::List
            && a.list
                .contains(ratatui::layout::Position { x: col, y: row })
            && row > a.list.y
        {
            let pos = self.top + u64::from(row - a.list.y - 1);
            if pos < self.count() {
                self.select(pos);
            }
        }
    }

    /// Pulls the index if ready, keeps the selection visible and reads everything the next
    /// frame shows. Call before every draw with the terminal size.
    pub fn prepare(&mut self, size: Rect) {
        self.size = size;
        if let Some(done) = self.indexer.as_ref().and_then(Indexer::try_take) {
            self.install(done);
        }
        let a = areas(size);
        let visible = u64::from(a.list.height.saturating_sub(2)).max(1);
        if self.selected < self.top {
            self.top = self.selected;
        } else if self.selected >= self.top + visible {
            self.top = self.selected + 1 - visible;
        }
        // No blank rows below the end of a shortened (filtered) list.
        self.top = self.top.min(self.count().saturating_sub(visible));
        if self.rows.len() > ROW_CACHE {
            self.rows.clear();
        }
        for pos in self.top..(self.top + visible).min(self.count()) {
            if let Some(id) = self.id_at(pos)
                && !self.rows.contains_key(&id)
            {
                let row = self.read_row(id);
                self.rows.insert(id, row);
            }
        }
        let sel = self.selected_id();
        if self.detail.as_ref().map(|d| d.id) != sel {
            self.detail = sel.map(|id| build_detail(&self.reader, id, self.index.as_ref()));
        }
        if self.view == View::Resources
            && let Some(id) = sel
            && self.state.as_ref().map(|s| s.0) != Some(id)
        {
            let st = self.state_at(id);
            self.state = Some((id, st));
            self.resource_cursor = self
                .resource_cursor
                .min(self.resource_count().saturating_sub(1));
        }
    }

    fn read_row(&self, id: RecordId) -> Row {
        match self.reader.record(id) {
            Ok(r) => Row {
                id,
                ts_ns: r.ts_ns,
                kind: r.body.kind(),
                queue: match &r.body {
                    RecordBody::Command(c) => Some(c.queue),
                    RecordBody::Response(c) => Some(c.queue),
                    _ => None,
                },
                text: describe(&r, self.reader.as_ref()),
            },
            Err(e) => Row {
                id,
                ts_ns: 0,
                kind: RecordKind(0),
                queue: None,
                text: format!("<unreadable: {e}>"),
            },
        }
    }

    fn state_at(&self, id: RecordId) -> Result<DeviceState, String> {
        if let Some(ix) = &self.index {
            return ix
                .states
                .state_at(&self.reader, id)
                .ok_or_else(|| format!("record {id} is not indexed"));
        }
        if id > UNINDEXED_STATE_LIMIT {
            return Err("the device state appears once indexing ends".to_string());
        }
        let mut s = DeviceState::new();
        for (rid, r) in self.reader.iter_range(0..id + 1).flatten() {
            s.apply(rid, &r, self.reader.as_ref());
        }
        Ok(s)
    }
}

/// A resource row in the resources view: live resources, then retired ones.
#[derive(Debug, Clone)]
pub struct ResourceRow<'a> {
    /// The resource.
    pub resource: &'a vgt_format::state::Resource,
    /// Created at.
    pub created_at: RecordId,
    /// Destroyed at (retired resources).
    pub destroyed_at: Option<RecordId>,
}

/// The rows the resources view lists, in order.
pub fn resource_rows(state: &DeviceState) -> Vec<ResourceRow<'_>> {
    state
        .resources
        .values()
        .chain(state.retired_resources.iter().rev())
        .map(|r| ResourceRow {
            resource: r,
            created_at: r.created_at,
            destroyed_at: r.destroyed_at,
        })
        .collect()
}

/// Maps a key to an action (`typing` while a filter is being entered).
pub fn key_action(key: KeyEvent, typing: bool) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if typing {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterCommit),
            KeyCode::Esc => Some(Action::FilterCancel),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Char(c) => Some(Action::FilterChar(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => Action::ToggleHelp,
        KeyCode::Up | KeyCode::Char('k') => Action::Up(1),
        KeyCode::Down | KeyCode::Char('j') => Action::Down(1),
        KeyCode::PageUp => Action::Up(20),
        KeyCode::PageDown | KeyCode::Char(' ') => Action::Down(20),
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Tab => Action::NextView,
        KeyCode::Char('1') => Action::Show(View::List),
        KeyCode::Char('2') | KeyCode::Char('r') => Action::Show(View::Resources),
        KeyCode::Char('3') | KeyCode::Char('t') => Action::Show(View::Timeline),
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Esc => Action::ClearFilter,
        KeyCode::Char('c') => Action::ToggleCommandsOnly,
        KeyCode::Char('n') => Action::NextMark,
        KeyCode::Char('N') => Action::PrevMark,
        KeyCode::Enter => Action::Follow,
        KeyCode::Char('d') => Action::FollowDestroyed,
        KeyCode::Char('+') | KeyCode::Char('=') => Action::ZoomIn,
        KeyCode::Char('-') => Action::ZoomOut,
        KeyCode::Left | KeyCode::Char('h') => Action::PanLeft,
        KeyCode::Right | KeyCode::Char('l') => Action::PanRight,
        KeyCode::Char('0') => Action::ZoomReset,
        KeyCode::Char(']') => Action::ScrollDetail(5),
        KeyCode::Char('[') => Action::ScrollDetail(-5),
        _ => return None,
    })
}

/// Maps a mouse event to an action.
pub fn mouse_action(m: MouseEvent) -> Option<Action> {
    match m.kind {
        MouseEventKind::ScrollUp => Some(Action::Up(3)),
        MouseEventKind::ScrollDown => Some(Action::Down(3)),
        MouseEventKind::Down(MouseButton::Left) => Some(Action::Click(m.column, m.row)),
        _ => None,
    }
}
