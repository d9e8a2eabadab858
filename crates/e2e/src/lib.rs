//! Shared pieces of container-factory's end-to-end suite (`tests/e2e`) and
//! benchmark (`examples/bench.rs`), which both drive the real local stack.

use std::collections::HashMap;

/// Parses the `export K=V` lines `scripts/stack.sh` writes (values quoted
/// by bash's `printf %q`).
pub fn parse_env(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((key, raw)) = line.split_once('=') {
            vars.insert(key.trim().to_owned(), unquote(raw.trim()));
        }
    }
    vars
}

fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let raw = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or('\\')
        } else {
            c
        });
    }
    out
}
