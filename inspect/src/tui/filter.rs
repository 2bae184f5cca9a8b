//! Filters over the summary table: parsed once from the text the user types, then matched
//! against plain integers so that a million records filter in well under a second.
//!
//! Syntax: space-separated terms, all of which must match.
//! `type:NAME` command/response/message type (substring, any case), `kind:KIND` record kind,
//! `res:N`, `ctx:N`, `fence:N`, `code:NAME` response code (substring; matches a command by its
//! response), `err` errors and findings only, `t:A-B` time range in seconds (`t:A-` or `t:-B`
//! open-ended), `q:N` queue; any other word is free text matched against the record's kind and
//! type names.

use std::collections::HashMap;

use vgt_format::record::{LifecycleKind, RecordId, RecordKind};
use vgt_format::summary::RecordSummary;
use vgt_format::wire::{CommandType, ResponseType, VhostUserRequest, gpu_socket::GpuSocketRequest};

/// One parsed term.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Type(String),
    Kind(RecordKind),
    Resource(u32),
    Ctx(u32),
    Fence(u64),
    Code(String),
    Errors,
    Time(u64, u64),
    Queue(u16),
    Text(String),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    terms: Vec<Term>,
    /// The text it was parsed from.
    pub text: String,
}

fn secs(s: &str, default: u64) -> Result<u64, String> {
    if s.is_empty() {
        return Ok(default);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a time in seconds"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("`{s}` is not a time in seconds"));
    }
    Ok((v * 1e9) as u64)
}

impl Filter {
    /// Parses the filter syntax (see the module docs).
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for word in text.split_whitespace() {
            let (key, value) = word.split_once(':').unwrap_or(("", word));
            let num = |v: &str| -> Result<u64, String> {
                let v = v.trim_start_matches('#');
                if let Some(h) = v.strip_prefix("0x") {
                    u64::from_str_radix(h, 16)
                } else {
                    v.parse()
                }
                .map_err(|_| format!("`{v}` is not a number in `{word}`"))
            };
            let small = |v: &str| -> Result<u32, String> {
                u32::try_from(num(v)?).map_err(|_| format!("`{v}` is too large in `{word}`"))
            };
            terms.push(match key.to_ascii_lowercase().as_str() {
                "type" => Term::Type(value.to_ascii_uppercase()),
                "kind" => Term::Kind(RecordKind::from_name(value).ok_or_else(|| {
                    format!("unknown record kind `{value}` (command, response, memory-read, fence, frame …)")
                })?),
                "res" | "resource" => Term::Resource(small(value)?),
                "ctx" => Term::Ctx(small(value)?),
                "fence" => Term::Fence(num(value)?),
                "code" => Term::Code(value.to_ascii_uppercase()),
                "q" | "queue" => Term::Queue(
                    u16::try_from(num(value)?).map_err(|_| format!("queue `{value}` too large"))?,
                ),
                "t" | "time" => {
                    let (a, b) = value.split_once('-').unwrap_or((value, value));
                    let (a, b) = (secs(a, 0)?, secs(b, u64::MAX)?);
                    Term::Time(a, if b == u64::MAX { b } else { b.max(a) })
                }
                "" if value.eq_ignore_ascii_case("err") || value.eq_ignore_ascii_case("error") => {
                    Term::Errors
                }
                "" => Term::Text(value.to_ascii_uppercase()),
                other => return Err(format!("unknown filter key `{other}:`")),
            });
        }
        Ok(Filter {
            terms,
            text: text.to_string(),
        })
    }

    /// Ids of the matching records. `marks` are the records to keep for `err` (errors and
    /// findings, sorted).
    pub fn apply(&self, table: &[RecordSummary], marks: &[RecordId]) -> Vec<RecordId> {
        // Name matches depend only on (kind, code): decide each pair once.
        let mut names: HashMap<(u16, u32, usize), bool> = HashMap::new();
        let mut out = Vec::new();
        for (i, s) in table.iter().enumerate() {
            let id = i as RecordId;
            let ok = self.terms.iter().enumerate().all(|(t, term)| match term {
                Term::Type(n) => *names
                    .entry((s.kind.0, s.code, t))
                    .or_insert_with(|| code_name(s.kind, s.code).contains(n.as_str())),
                Term::Kind(k) => s.kind == *k,
                Term::Resource(r) => s.resource == *r,
                Term::Ctx(c) => s.ctx == *c,
                Term::Fence(f) => {
                    s.fence == *f
                        && (s.flags & vgt_format::summary::FLAG_FENCED != 0
                            || s.kind == RecordKind::FENCE)
                }
                Term::Code(n) => {
                    let code = if s.kind == RecordKind::COMMAND {
                        s.response_code
                    } else if s.kind == RecordKind::RESPONSE {
                        s.code
                    } else {
                        return false;
                    };
                    *names
                        .entry((RecordKind::RESPONSE.0, code, t))
                        .or_insert_with(|| ResponseType(code).to_string().contains(n.as_str()))
                }
                Term::Errors => s.is_error() || marks.binary_search(&id).is_ok(),
                Term::Time(a, b) => (*a..=*b).contains(&s.ts_ns),
                Term::Queue(q) => {
                    (s.kind == RecordKind::COMMAND || s.kind == RecordKind::RESPONSE)
                        && s.queue == *q
                }
                Term::Text(w) => *names.entry((s.kind.0, s.code, t)).or_insert_with(|| {
                    code_name(s.kind, s.code).contains(w.as_str())
                        || s.kind.name().to_ascii_uppercase().contains(w.as_str())
                }),
            });
            if ok {
                out.push(id);
            }
        }
        out
    }
}

/// The upper-case name of a record's code (command, response, message or lifecycle name).
pub fn code_name(kind: RecordKind, code: u32) -> String {
    match kind {
        RecordKind::COMMAND => CommandType(code).to_string(),
        RecordKind::RESPONSE => ResponseType(code).to_string(),
        RecordKind::VHOST_USER => VhostUserRequest(code).to_string(),
        RecordKind::GPU_SOCKET => GpuSocketRequest(code).to_string(),
        RecordKind::LIFECYCLE => lifecycle_code_name(code).to_ascii_uppercase(),
        other => other.name().to_ascii_uppercase(),
    }
}

fn lifecycle_code_name(code: u32) -> &'static str {
    const ALL: [LifecycleKind; 12] = [
        LifecycleKind::Connect,
        LifecycleKind::Disconnect,
        LifecycleKind::Reset,
        LifecycleKind::QueueReset,
        LifecycleKind::QueueStart,
        LifecycleKind::QueueStop,
        LifecycleKind::DriverOk,
        LifecycleKind::ConfigChange,
        LifecycleKind::ValidationError,
        LifecycleKind::Error,
        LifecycleKind::Crash,
        LifecycleKind::End,
    ];
    ALL.iter()
        .find(|k| **k as u32 == code)
        .map_or("other", |k| crate::describe::lifecycle_name(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_are_rejected_with_the_reason() {
        assert!(
            Filter::parse("res:abc")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            Filter::parse("kind:nope")
                .unwrap_err()
                .contains("unknown record kind")
        );
        assert!(
            Filter::parse("zz:1")
                .unwrap_err()
                .contains("unknown filter key")
        );
        assert!(Filter::parse("t:x-1").unwrap_err().contains("not a time"));
    }

    #[test]
    fn time_ranges_parse_in_seconds() {
        let f = Filter::parse("t:1.5-2").unwrap();
        assert_eq!(f.terms, vec![Term::Time(1_500_000_000, 2_000_000_000)]);
        let f = Filter::parse("t:3-").unwrap();
        assert_eq!(f.terms, vec![Term::Time(3_000_000_000, u64::MAX)]);
    }
}
