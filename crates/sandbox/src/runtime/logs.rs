//! Container logs: one file per container instance, `<pod dir>/logs/<container>/<n>.log` with
//! `n` the restart count, as the kubelet keeps them under /var/log/pods.

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
        let position = text.len() as u64;
        let head = match request.tail_lines {
            Some(lines) => last_lines(&text, lines).to_vec(),
            None => text,
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
    position: u64,
    path: PathBuf,
    live: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Followed {
    fn read_more(&mut self) -> Vec<u8> {
        let mut more = Vec::new();
        if self.file.seek(SeekFrom::Start(self.position)).is_ok()
            && self.file.read_to_end(&mut more).is_ok()
        {
            self.position += more.len() as u64;
        }
        more
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
    use super::last_lines;

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }
}
