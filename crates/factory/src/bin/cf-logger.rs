//! Log driver for containerd's `binary://` stdio URIs.
//!
//! containerd's runc v2 shim (1.6) starts this program once per task with
//! the container's stdout pipe on fd 3, its stderr pipe on fd 4 and a
//! "ready" pipe on fd 5, plus `CONTAINER_ID` and `CONTAINER_NAMESPACE` in
//! an otherwise empty environment. The URI's query becomes argv as
//! key/value pairs, so `binary:///usr/bin/cf-logger?--file=/var/log/x`
//! arrives as `--file /var/log/x` (a plain `file` key works too). The
//! shim blocks on fd 5 until a byte arrives or the pipe closes, and at
//! task delete it closes its pipe ends and sends SIGTERM, escalating to
//! SIGKILL after 12 s.
//!
//! Output is Docker's json-file format, one object per line:
//! `{"log":"hi\n","stream":"stdout","time":"2026-12-04T16:09:27.123456789Z"}`.
//! A line longer than 16 KiB is split into entries without a trailing
//! newline, as Docker does. The program exits once both pipes reach EOF.
//!
//! The fds are reopened through `/proc/self/fd`, which works for pipes
//! and needs no `unsafe`. The shim discards this program's own stderr, so
//! failures show up only in the exit status.

use std::borrow::Cow;
use std::env;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::SystemTime;

use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

const STDOUT_FD: &str = "/proc/self/fd/3";
const STDERR_FD: &str = "/proc/self/fd/4";
const READY_FD: &str = "/proc/self/fd/5";

/// Docker's json-file cuts entries at 16 KiB; readers of that format
/// expect no bigger ones, and it bounds memory for newline-free output.
const MAX_ENTRY: u64 = 16 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One json-file record; field order matches Docker's.
#[derive(Serialize)]
struct Entry<'a> {
    log: Cow<'a, str>,
    stream: &'a str,
    time: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cf-logger: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let path = parse_args(env::args().skip(1))?;
    check_inherited_fds()?;
    let stdout = open_fd(STDOUT_FD)?;
    let stderr = open_fd(STDERR_FD)?;
    let sink = Mutex::new(open_log(&path)?);

    survive_sigterm()?;
    signal_ready()?;

    thread::scope(|scope| {
        let sink = &sink;
        scope.spawn(move || pump("stdout", stdout, sink));
        scope.spawn(move || pump("stderr", stderr, sink));
    });
    Ok(())
}

/// Finds the log file among `--file <path>`, `--file=<path>` and
/// `file <path>`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<PathBuf, Error> {
    let mut file = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--file" | "file" => args.next(),
            other => match other.strip_prefix("--file=") {
                Some(value) => Some(value.to_owned()),
                None => return Err(format!("unknown argument {arg:?}").into()),
            },
        };
        file = Some(value.ok_or("--file needs a path")?);
    }

    match file {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err("usage: cf-logger --file <path>".into()),
    }
}

fn open_log(path: &Path) -> Result<File, Error> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }

    // 0640 like Docker's json-file: container output can hold secrets.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("failed to open {}: {e}", path.display()).into())
}

/// Fails unless fds 3 to 5 are all open.
///
/// Checked before anything is opened: the lowest free number is reused,
/// so the log file could otherwise land on a missing fd and be read back
/// as container output, growing without end.
fn check_inherited_fds() -> Result<(), Error> {
    for fd in [STDOUT_FD, STDERR_FD, READY_FD] {
        fs::symlink_metadata(fd).map_err(|_| format!("{fd} is not open"))?;
    }
    Ok(())
}

fn open_fd(path: &str) -> Result<File, Error> {
    File::open(path).map_err(|e| format!("failed to open {path}: {e}").into())
}

/// Replaces SIGTERM's default action (instant death) with a no-op.
///
/// The shim sends SIGTERM right after closing its pipe ends, while the
/// last output may still sit in the pipes; staying alive until EOF keeps
/// that tail. tokio never unregisters a signal handler, so dropping the
/// listener and its runtime leaves SIGTERM ignored for good.
fn survive_sigterm() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("failed to start signal runtime: {e}"))?;
    let _entered = runtime.enter();
    let _listener =
        signal(SignalKind::terminate()).map_err(|e| format!("failed to handle SIGTERM: {e}"))?;
    Ok(())
}

/// Tells the shim that set-up is done.
///
/// Closing fd 5 itself would need `unsafe`, so a byte is written through
/// a second handle instead; the shim accepts either.
fn signal_ready() -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(READY_FD)
        .and_then(|mut ready| ready.write_all(b"r"))
        .map_err(|e| format!("failed to signal ready on {READY_FD}: {e}").into())
}

/// Copies one stream into the log until EOF, one entry per line.
///
/// Write failures (disk full) drop entries but keep draining: a reader
/// that stops would block the container on a full pipe.
fn pump(stream: &str, input: impl Read, sink: &Mutex<impl Write>) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut write_failed = false;
    loop {
        line.clear();
        match reader.by_ref().take(MAX_ENTRY).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                eprintln!("cf-logger: reading {stream} failed: {err}");
                return;
            }
        }

        let result =
            encode(stream, &line, SystemTime::now()).and_then(|entry| write_entry(sink, &entry));
        if let Err(err) = result {
            if !write_failed {
                eprintln!("cf-logger: dropping {stream} entries: {err}");
            }
            write_failed = true;
        }
    }
}

/// One json-file line, newline included.
fn encode(stream: &str, line: &[u8], at: SystemTime) -> io::Result<Vec<u8>> {
    let entry = Entry {
        log: String::from_utf8_lossy(line),
        stream,
        time: humantime::format_rfc3339_nanos(at).to_string(),
    };
    let mut bytes = serde_json::to_vec(&entry)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes a whole entry under the lock, so the two streams never
/// interleave inside a line.
fn write_entry(sink: &Mutex<impl Write>, entry: &[u8]) -> io::Result<()> {
    // A poisoned lock only means the other thread panicked mid-write;
    // the file is still usable.
    let mut file = sink.lock().unwrap_or_else(PoisonError::into_inner);
    file.write_all(entry)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(bytes).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn accepts_file_argument_forms() {
        for form in [&["--file", "/x/y"][..], &["file", "/x/y"], &["--file=/x/y"]] {
            let path = parse_args(args(form)).expect("valid");
            assert_eq!(path, PathBuf::from("/x/y"), "{form:?}");
        }
    }

    #[test]
    fn rejects_missing_or_unknown_arguments() {
        for form in [&[][..], &["--file"], &["--file", ""], &["--max-size", "1m"]] {
            assert!(parse_args(args(form)).is_err(), "{form:?}");
        }
    }

    #[test]
    fn encodes_docker_json_file_entry() {
        let at = UNIX_EPOCH + Duration::new(1_796_400_567, 123_456_789);

        let entry = encode("stderr", b"say \"hi\"\t\n", at).expect("encodes");

        assert_eq!(
            std::str::from_utf8(&entry).expect("utf-8"),
            "{\"log\":\"say \\\"hi\\\"\\t\\n\",\"stream\":\"stderr\",\
             \"time\":\"2026-12-04T16:09:27.123456789Z\"}\n"
        );
    }

    #[test]
    fn pumps_lines_and_final_partial_line() {
        let sink = Mutex::new(Vec::new());

        pump("stdout", &b"a\nb\nno newline"[..], &sink);

        let got = lines(&sink.into_inner().expect("not poisoned"));
        let logs: Vec<_> = got.iter().map(|e| e["log"].clone()).collect();
        assert_eq!(logs, ["a\n", "b\n", "no newline"]);
        assert!(got.iter().all(|e| e["stream"] == "stdout"));
    }

    #[test]
    fn splits_overlong_lines_at_16k() {
        let mut input = vec![b'x'; 40 * 1024];
        input.push(b'\n');
        let sink = Mutex::new(Vec::new());

        pump("stdout", &input[..], &sink);

        let got = lines(&sink.into_inner().expect("not poisoned"));
        let sizes: Vec<_> = got
            .iter()
            .map(|e| e["log"].as_str().map_or(0, str::len))
            .collect();
        assert_eq!(sizes, [16 * 1024, 16 * 1024, 8 * 1024 + 1]);
    }

    #[test]
    fn replaces_invalid_utf8() {
        let sink = Mutex::new(Vec::new());

        pump("stdout", &b"ok \xff\n"[..], &sink);

        let got = lines(&sink.into_inner().expect("not poisoned"));
        assert_eq!(got[0]["log"], "ok \u{fffd}\n");
    }
}
