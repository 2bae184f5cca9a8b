//! Filters over the summary table: parsed once from the text the user types, then matched
//! against plain integers so that a million records filter in well under a second.
//!
//! Syntax: space-separated terms, all of which must match.
//! `type:NAME` command/response/message type (substring, any case), `kind:KIND` record kind,
//! `res:N`, `ctx:N`, `fence:N`, `code:NAME` response code (substring; matches a command by its
//! response), `err` errors and findings only, `t:A-B` time range in seconds (`t:A-` or `t:-B`
//! open-ended), `q:N` queue; any other word is free text matched (any case) against the record's
//! kind and type names and, in [`Filter::apply_decoded`], against its decoded one-line
//! description ([`crate::describe::describe`]). Descriptions are built lazily, only for records
//! that pass every structured term and whose names do not already match, and only until a time
//! budget runs out, so the filter stays within its latency target on any capture.

use std::collections::HashMap;
use std::time::Instant;

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

/// Why a filter does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// A value that must be a number is not.
    #[error("`{value}` is not a number in `{term}`")]
    NotANumber {
        /// The whole term.
        term: String,
        /// The value.
        value: String,
    },
    /// A number is too large for its field.
    #[error("`{value}` is too large for `{term}` (at most {max})")]
    TooLarge {
        /// The whole term.
        term: String,
        /// The value.
        value: String,
        /// The largest value the field holds.
        max: u64,
    },
    /// A time bound is not a non-negative number of seconds.
    #[error("`{value}` is not a time in seconds in `{term}`")]
    NotATime {
        /// The whole term.
        term: String,
        /// The value.
        value: String,
    },
    /// `kind:` names no record kind.
    #[error(
        "unknown record kind `{kind}` (session, vhost-user, command, memory-read, response, fence, gpu-socket, frame, cursor, lifecycle, marker)"
    )]
    UnknownKind {
        /// The name given.
        kind: String,
    },
    /// A `key:` this syntax does not have.
    #[error("unknown filter key `{key}:` (type kind res ctx fence code q t)")]
    UnknownKey {
        /// The key given.
        key: String,
    },
}

fn secs(term: &str, s: &str, default: u64) -> Result<u64, FilterError> {
    if s.is_empty() {
        return Ok(default);
    }
    let bad = || FilterError::NotATime {
        term: term.to_string(),
        value: s.to_string(),
    };
    let v: f64 = s.parse().map_err(|_| bad())?;
    if v.is_nan() || v < 0.0 {
        return Err(bad());
    }
    Ok((v * 1e9) as u64)
}

impl Filter {
    /// Parses the filter syntax (see the module docs).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut terms = Vec::new();
        for word in text.split_whitespace() {
            let (key, value) = word.split_once(':').unwrap_or(("", word));
            let num = |v: &str| -> Result<u64, FilterError> {
                let digits = v.trim_start_matches('#');
                if let Some(h) = digits.strip_prefix("0x") {
                    u64::from_str_radix(h, 16)
                } else {
                    digits.parse()
                }
                .map_err(|_| FilterError::NotANumber {
                    term: word.to_string(),
                    value: v.to_string(),
                })
            };
            let too_large = |v: &str, max: u64| FilterError::TooLarge {
                term: word.to_string(),
                value: v.to_string(),
                max,
            };
            let small = |v: &str| -> Result<u32, FilterError> {
                u32::try_from(num(v)?).map_err(|_| too_large(v, u64::from(u32::MAX)))
            };
            terms.push(match key.to_ascii_lowercase().as_str() {
                "type" => Term::Type(value.to_ascii_uppercase()),
                "kind" => Term::Kind(RecordKind::from_name(value).ok_or_else(|| {
                    FilterError::UnknownKind {
                        kind: value.to_string(),
                    }
                })?),
                "res" | "resource" => Term::Resource(small(value)?),
                "ctx" => Term::Ctx(small(value)?),
                "fence" => Term::Fence(num(value)?),
                "code" => Term::Code(value.to_ascii_uppercase()),
                "q" | "queue" => Term::Queue(
                    u16::try_from(num(value)?)
                        .map_err(|_| too_large(value, u64::from(u16::MAX)))?,
                ),
                "t" | "time" => {
                    let (a, b) = value.split_once('-').unwrap_or((value, value));
                    let (a, b) = (secs(word, a, 0)?, secs(word, b, u64::MAX)?);
                    Term::Time(a, if b == u64::MAX { b } else { b.max(a) })
                }
                "" if value.eq_ignore_ascii_case("err") || value.eq_ignore_ascii_case("error") => {
                    Term::Errors
                }
                "" => Term::Text(value.to_ascii_uppercase()),
                other => {
                    return Err(FilterError::UnknownKey {
                        key: other.to_string(),
                    });
                }
            });
        }
        Ok(Filter {
            terms,
            text: text.to_string(),
        })
    }

    /// Ids of the matching records, free text matching kind and type names only. `marks` are
    /// the records to keep for `err` (errors and findings, sorted).
    pub fn apply(&self, table: &[RecordSummary], marks: &[RecordId]) -> Vec<RecordId> {
        self.apply_decoded(table, marks, &mut |_| None, Instant::now())
            .matches
    }

    /// Ids of the matching records, free text also matching the decoded description that
    /// `decode` gives for a record id (`None`: not decodable, names only). `decode` is called
    /// at most once per record, only for records that pass every structured term and whose
    /// names miss some free-text word, and only until `deadline`; after it, free text matches
    /// names only and [`Applied::decoded_until`] says where decoding stopped.
    pub fn apply_decoded(
        &self,
        table: &[RecordSummary],
        marks: &[RecordId],
        decode: &mut dyn FnMut(RecordId) -> Option<String>,
        deadline: Instant,
    ) -> Applied {
        let texts: Vec<&str> = self
            .terms
            .iter()
            .filter_map(|t| match t {
                Term::Text(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        let mut decoded_until = None;
        let structured = self.structured(table, marks);
        if texts.is_empty() {
            return Applied {
                matches: structured.into_iter().map(|(id, _)| id).collect(),
                decoded_until,
            };
        }
        let mut matches = Vec::new();
        for (n, (id, names_ok)) in structured.into_iter().enumerate() {
            if names_ok {
                matches.push(id);
                continue;
            }
            if decoded_until.is_some() {
                continue;
            }
            // Checking the clock every 256 decodes keeps its cost out of the loop.
            if n % 256 == 0 && Instant::now() >= deadline {
                decoded_until = Some(id);
                continue;
            }
            let Some(text) = decode(id) else {
                continue;
            };
            let text = text.to_ascii_uppercase();
            let kind_names = table.get(id as usize).map(|s| {
                (
                    code_name(s.kind, s.code),
                    s.kind.name().to_ascii_uppercase(),
                )
            });
            let all = texts.iter().all(|w| {
                text.contains(w)
                    || kind_names
                        .as_ref()
                        .is_some_and(|(c, k)| c.contains(w) || k.contains(w))
            });
            if all {
                matches.push(id);
            }
        }
        Applied {
            matches,
            decoded_until,
        }
    }

    /// Records passing every structured term, each with whether every free-text word matches
    /// its names.
    fn structured(&self, table: &[RecordSummary], marks: &[RecordId]) -> Vec<(RecordId, bool)> {
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
                Term::Text(_) => true,
            });
            if ok {
                let names_ok = self.terms.iter().enumerate().all(|(t, term)| match term {
                    Term::Text(w) => *names.entry((s.kind.0, s.code, t)).or_insert_with(|| {
                        code_name(s.kind, s.code).contains(w.as_str())
                            || s.kind.name().to_ascii_uppercase().contains(w.as_str())
                    }),
                    _ => true,
                });
                out.push((id, names_ok));
            }
        }
        out
    }
}

/// What [`Filter::apply_decoded`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Ids of the matching records, ascending.
    pub matches: Vec<RecordId>,
    /// The first record whose description was not searched because the time budget ran out
    /// (from there on free text matched names only); `None` when every needed one was.
    pub decoded_until: Option<RecordId>,
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
    u16::try_from(code)
        .map(LifecycleKind::from_code)
        .map_or("other", crate::describe::lifecycle_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lifecycle_kind_has_its_name_for_the_filter() {
        for k in LifecycleKind::ALL {
            let name = code_name(RecordKind::LIFECYCLE, k as u32);
            assert_eq!(
                name,
                crate::describe::lifecycle_name(k).to_ascii_uppercase()
            );
            assert_ne!(name, "OTHER", "{k:?}");
        }
        assert_eq!(code_name(RecordKind::LIFECYCLE, 13), "IN-FLIGHT-WRITE");
        assert_eq!(code_name(RecordKind::LIFECYCLE, 15), "BACKEND-STDERR");
        assert_eq!(code_name(RecordKind::LIFECYCLE, 0x1_0000), "OTHER");
    }

    #[test]
    fn bad_filters_are_rejected_with_the_reason() {
        let check = |text: &str, want: FilterError| assert_eq!(Filter::parse(text), Err(want));
        check(
            "type:x res:abc",
            FilterError::NotANumber {
                term: "res:abc".into(),
                value: "abc".into(),
            },
        );
        check(
            "q:70000",
            FilterError::TooLarge {
                term: "q:70000".into(),
                value: "70000".into(),
                max: 65535,
            },
        );
        check(
            "kind:nope",
            FilterError::UnknownKind {
                kind: "nope".into(),
            },
        );
        check("zz:1", FilterError::UnknownKey { key: "zz".into() });
        check(
            "t:x-1",
            FilterError::NotATime {
                term: "t:x-1".into(),
                value: "x".into(),
            },
        );
        let text = Filter::parse("res:abc").unwrap_err().to_string();
        assert_eq!(text, "`abc` is not a number in `res:abc`");
    }

    fn summary(kind: RecordKind, code: u32) -> RecordSummary {
        RecordSummary {
            ts_ns: 0,
            link: 0,
            fence: 0,
            code,
            response_code: 0,
            resource: 0,
            ctx: 0,
            kind,
            queue: 0,
            flags: 0,
            ring: 0,
        }
    }

    #[test]
    fn free_text_decodes_lazily_and_stops_at_the_deadline() {
        let table = vec![
            summary(RecordKind::COMMAND, CommandType::RESOURCE_FLUSH.0),
            summary(RecordKind::FENCE, 0),
            summary(RecordKind::COMMAND, CommandType::RESOURCE_FLUSH.0),
            summary(RecordKind::FENCE, 0),
        ];
        let f = Filter::parse("kind:fence size=64x32").unwrap();
        let mut asked = Vec::new();
        let mut decode = |id: RecordId| {
            asked.push(id);
            (id == 3).then(|| "fence 9 size=64x32".to_string())
        };
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let a = f.apply_decoded(&table, &[], &mut decode, far);
        assert_eq!(a.matches, vec![3]);
        assert_eq!(a.decoded_until, None);
        // Only records passing `kind:fence` were decoded.
        assert_eq!(asked, vec![1, 3]);
        // A deadline already passed: nothing decoded, the first record left is reported.
        let a = f.apply_decoded(
            &table,
            &[],
            &mut |_| Some("size=64x32".into()),
            Instant::now(),
        );
        assert_eq!(a.matches, Vec::<RecordId>::new());
        assert_eq!(a.decoded_until, Some(1));
    }

    #[test]
    fn time_ranges_parse_in_seconds() {
        let f = Filter::parse("t:1.5-2").unwrap();
        assert_eq!(f.terms, vec![Term::Time(1_500_000_000, 2_000_000_000)]);
        let f = Filter::parse("t:3-").unwrap();
        assert_eq!(f.terms, vec![Term::Time(3_000_000_000, u64::MAX)]);
    }
}
