//! Container logs: one file per container instance, `<pod dir>/logs/<container>/<n>.log` with
//! `n` the restart count, as the kubelet keeps them under /var/log/pods, in the CRI logging
//! format: each line the container writes becomes `<RFC 3339 time> <stream> <F|P> <line>`, `P`
//! marking a part of a line longer than [`MAX_LINE`] (or one the container never ended). The
//! time is what `kubectl logs --timestamps` prints and `--since` filters on.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::RuntimeOptions;
use crate::apiserver::{LogRequest, LogStream, PodLogs};

/// How often a followed log is checked for more output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// The longest line kept whole; longer ones are split into partial entries, as by the CRI
/// runtimes (16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// The stream every entry names: the container's stdout and stderr share one pipe, which
/// keeps their lines in the order they were written but cannot tell them apart.
const STREAM: &str = "stdout";

/// Copies a container's output into its log file, a timestamped entry per line, until the
/// output ends.
pub(crate) async fn copy_lines(
    output: impl tokio::io::AsyncRead + Unpin,
    log: Arc<Mutex<std::fs::File>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::with_capacity(MAX_LINE, output);
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(available) => available,
        };
        let room = MAX_LINE - line.len();
        let (taken, complete) = match available.iter().take(room).position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len().min(room), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if complete || line.len() >= MAX_LINE {
            write_entry(&log, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        write_entry(&log, &line);
    }
}

/// Appends one entry: a whole line (`F`) or a part of one (`P`).
fn write_entry(log: &Mutex<std::fs::File>, chunk: &[u8]) {
    use std::io::Write;
    let (content, tag) = match chunk.strip_suffix(b"\n") {
        Some(content) => (content, "F"),
        None => (chunk, "P"),
    };
    let mut entry = format!("{} {STREAM} {tag} ", jiff::Timestamp::now()).into_bytes();
    entry.extend_from_slice(content);
    entry.push(b'\n');
    let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
    // A full disk loses output, as it would on a node; the container runs on.
    let _ = file.write_all(&entry);
}

/// One entry of a log file.
struct Entry<'a> {
    /// None for a line not in the CRI format, shown as it is.
    time: Option<jiff::Timestamp>,
    partial: bool,
    content: &'a [u8],
}

/// Reads one line of a log file (without its newline).
fn parse_entry(line: &[u8]) -> Entry<'_> {
    let whole = Entry {
        time: None,
        partial: false,
        content: line,
    };
    let mut fields = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag), Some(content)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return whole;
    };
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match (time, stream, tag) {
        (Some(time), b"stdout" | b"stderr", b"F" | b"P") => Entry {
            time: Some(time),
            partial: tag == b"P",
            content,
        },
        _ => whole,
    }
}

/// What a reader asks of the entries, besides where they start.
#[derive(Clone, Copy)]
struct Shown {
    since: Option<jiff::Timestamp>,
    timestamps: bool,
}

impl Shown {
    /// The output of the complete lines of `text` (a file's content from a line's start).
    fn render(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for line in text.split_inclusive(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let entry = parse_entry(line);
            if let (Some(since), Some(time)) = (self.since, entry.time)
                && time < since
            {
                continue;
            }
            if self.timestamps
                && let Some(time) = entry.time
            {
                // The kubelet's output format: nanoseconds always nine digits.
                out.extend_from_slice(
                    format!(
                        "{}.{:09}Z ",
                        time.strftime("%Y-%m-%dT%H:%M:%S"),
                        time.subsec_nanosecond()
                    )
                    .as_bytes(),
                );
            }
            out.extend_from_slice(entry.content);
            if !entry.partial {
                out.push(b'\n');
            }
        }
        out
    }
}

/// What a container wrote, from the raw content of its log file.
pub(crate) fn plain_text(raw: &[u8]) -> Vec<u8> {
    Shown {
        since: None,
        timestamps: false,
    }
    .render(raw)
}

/// The runtime's container log files, served by the API server's log route.
pub struct LogFiles {
    pods_dir: PathBuf,
    /// The files containers are still writing: following one ends when it leaves this set.
    live: Arc<Mutex<HashSet<PathBuf>>>,
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFiles")
            .field("pods_dir", &self.pods_dir)
            .finish_non_exhaustive()
    }
}

impl LogFiles {
    /// The log files of the runtime these options describe.
    pub fn new(options: &RuntimeOptions) -> Self {
        Self {
            pods_dir: options.pods_dir(),
            live: Arc::default(),
        }
    }

    fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pods_dir.join(uid).join("logs").join(container)
    }

    /// Creates the log file of a container instance, which its process then writes.
    pub(crate) fn create(
        &self,
        uid: &str,
        container: &str,
        restart_count: i32,
    ) -> std::io::Result<(PathBuf, std::fs::File)> {
        let dir = self.container_dir(uid, container);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{restart_count}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        self.lock().insert(path.clone());
        Ok((path, file))
    }

    /// The container instance writing this file has stopped.
    pub(crate) fn finished(&self, path: &Path) {
        self.lock().remove(path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instances' log files of a container, oldest first.
    fn instances(&self, uid: &str, container: &str) -> Vec<PathBuf> {
        let dir = self.container_dir(uid, container);
        let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let number = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some((number, entry.path()))
            })
            .collect();
        numbered.sort();
        numbered.into_iter().map(|(_, path)| path).collect()
    }
}

impl PodLogs for LogFiles {
    fn logs(&self, request: LogRequest) -> Result<LogStream, String> {
        // Names become path components: nothing may lead outside the pod's log directory.
        let not_a_file_name =
            |name: &str| name.is_empty() || name.contains('/') || name.contains("..");
        if not_a_file_name(&request.uid) || not_a_file_name(&request.container) {
            return Err(format!(
                "container {} is not valid for pod {}",
                request.container, request.pod
            ));
        }
        let mut instances = self.instances(&request.uid, &request.container);
        let chosen = if request.previous {
            instances.pop();
            instances.pop().ok_or_else(|| {
                format!(
                    "previous terminated container \"{}\" in pod \"{}\" not found",
                    request.container, request.pod
                )
            })?
        } else {
            instances.pop().ok_or_else(|| {
                format!(
                    "container \"{}\" in pod \"{}\" is waiting to start: ContainerCreating",
                    request.container, request.pod
                )
            })?
        };
        let mut file = std::fs::File::open(&chosen).map_err(|error| {
            format!(
                "cannot read the log of container \"{}\": {error}",
                request.container
            )
        })?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|error| {
            format!(
                "cannot read the log of container \"{}\": {error}",
                request.container
            )
        })?;
        // Only whole entries are read: one being written is left for the follower.
        let complete = text
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |end| end + 1);
        text.truncate(complete);
        let position = text.len() as u64;
        let shown = Shown {
            since: request.since,
            timestamps: request.timestamps,
        };
        let head = match request.tail_lines {
            Some(lines) => shown.render(last_lines(&text, lines)),
            None => shown.render(&text),
        };
        let first = futures::stream::iter((!head.is_empty()).then(|| Bytes::from(head)));
        let follow = request.follow && !request.previous && self.lock().contains(&chosen);
        if !follow {
            return Ok(Box::pin(first));
        }
        let followed = Followed {
            file,
            position,
            path: chosen,
            live: self.live.clone(),
            shown,
        };
        let rest = futures::stream::unfold(followed, |mut followed| async move {
            loop {
                let still_written = followed
                    .live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&followed.path);
                let more = followed.read_more();
                if !more.is_empty() {
                    return Some((Bytes::from(more), followed));
                }
                if !still_written {
                    return None;
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        });
        Ok(Box::pin(futures::StreamExt::chain(first, rest)))
    }
}

/// A log file being followed.
struct Followed {
    file: std::fs::File,
    /// Where the next whole entry starts.
    position: u64,
    path: PathBuf,
    live: Arc<Mutex<HashSet<PathBuf>>>,
    shown: Shown,
}

impl Followed {
    /// The output of the entries written whole since the last read.
    fn read_more(&mut self) -> Vec<u8> {
        let mut more = Vec::new();
        if self.file.seek(SeekFrom::Start(self.position)).is_err()
            || self.file.read_to_end(&mut more).is_err()
        {
            return Vec::new();
        }
        let complete = more
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |end| end + 1);
        more.truncate(complete);
        self.position += complete as u64;
        self.shown.render(&more)
    }
}

/// The last `count` lines of `text` (a final line without a newline counts).
fn last_lines(text: &[u8], count: usize) -> &[u8] {
    if count == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(count - 1)
        .map_or(0, |(index, _)| index + 1);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::{Shown, last_lines, plain_text};

    #[test]
    fn entries_render_with_their_times_from_since_on() {
        let file = b"2026-01-01T10:00:00.5Z stdout F first\n\
2026-01-01T10:00:01Z stderr P sec\n\
2026-01-01T10:00:01.000000002Z stderr F ond\n\
not an entry\n";
        assert_eq!(plain_text(file), b"first\nsecond\nnot an entry\n");
        let shown = Shown {
            since: Some("2026-01-01T10:00:01Z".parse().unwrap()),
            timestamps: true,
        };
        assert_eq!(
            String::from_utf8(shown.render(file)).unwrap(),
            "2026-01-01T10:00:01.000000000Z sec2026-01-01T10:00:01.000000002Z ond\nnot an entry\n"
        );
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }
}
