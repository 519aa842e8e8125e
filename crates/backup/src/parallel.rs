//! An ordered, bounded pipeline stage: jobs cut from a stream in order on one thread, worked on
//! by several threads, and handed back in the order they were cut, with a fixed number in
//! flight. Restore uses it twice, to open DARE packages and to decompress gzip members or zstd
//! frames on every core while the bytes still come out in stream order; a zstd backup uses it
//! to compress its frames on every core.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

/// The results of a stage, in job order. Dropping it stops the stage: the cutting thread ends
/// at its next job and the workers once their queue is empty.
pub struct OrderedStage<T> {
    /// One slot per job in cutting order, each filled by whichever worker did the job, and a
    /// last one holding `Ok(None)` or the stream's error. Its capacity bounds the jobs in
    /// flight, and so the memory.
    slots: Receiver<Receiver<io::Result<Option<T>>>>,
    ended: bool,
}

/// Threads worth running: one per core.
pub fn worker_count() -> usize {
    thread::available_parallelism().map_or(1, |count| count.get())
}

impl<T: Send + 'static> OrderedStage<T> {
    /// Starts the stage: `cut_next` runs on a thread of its own and returns the next job,
    /// `Ok(None)` at the end or the stream's error (which takes its place in the order, after
    /// every job cut before it, and ends the stage); `work` runs on `workers` threads, each
    /// with its own clone.
    pub fn start<J, C, W>(name: &str, workers: usize, mut cut_next: C, work: W) -> io::Result<Self>
    where
        J: Send + 'static,
        C: FnMut() -> io::Result<Option<J>> + Send + 'static,
        W: FnMut(J) -> io::Result<T> + Send + Clone + 'static,
    {
        let workers = workers.max(1);
        let (slot_sender, slots) = sync_channel::<Receiver<io::Result<Option<T>>>>(2 * workers);
        // No job waits in a queue: the cutting thread hands its job to the first worker free,
        // and cuts the next meanwhile. The slots already bound the jobs in flight; a queue
        // would only hold more of them (a zstd backup's are 2 MiB each).
        let (job_sender, jobs) = sync_channel::<(J, SyncSender<io::Result<Option<T>>>)>(0);
        let jobs = Arc::new(Mutex::new(jobs));
        for number in 0..workers {
            let jobs = Arc::clone(&jobs);
            let mut work = work.clone();
            thread::Builder::new()
                .name(format!("{name}-{number}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a job, never while working.
                        let next = match jobs.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok((job, reply)) = next else { return };
                        // The reader may have stopped; then nobody wants the result.
                        let _ = reply.send(work(job).map(Some));
                    }
                })?;
        }
        thread::Builder::new()
            .name(format!("{name}-cut"))
            .spawn(move || {
                loop {
                    let (reply, slot) = sync_channel(1);
                    let job = cut_next();
                    let stop = !matches!(job, Ok(Some(_)));
                    if slot_sender.send(slot).is_err() {
                        return;
                    }
                    match job {
                        Ok(Some(job)) => {
                            if job_sender.send((job, reply)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = reply.send(Ok(None));
                        }
                        Err(error) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                    if stop {
                        return;
                    }
                }
            })?;
        Ok(OrderedStage {
            slots,
            ended: false,
        })
    }

    /// The next result in job order; `None` once the stream ended cleanly.
    pub fn next_result(&mut self) -> Option<io::Result<T>> {
        if self.ended {
            return None;
        }
        let result = match self.slots.recv().map(|slot| slot.recv()) {
            Ok(Ok(Ok(Some(result)))) => return Some(Ok(result)),
            Ok(Ok(Ok(None))) => None,
            Ok(Ok(Err(error))) => Some(Err(error)),
            // A thread of the stage died (a panic) without filling its slot: never an end.
            Ok(Err(_)) | Err(_) => Some(Err(io::Error::other(
                "a thread of the pipeline stopped unexpectedly",
            ))),
        };
        self.ended = true;
        result
    }
}

/// The byte results of an [`OrderedStage`] as one stream. An error of the stage is returned by
/// every later `read`, so a reader cannot mistake it for an end.
pub struct OrderedReader {
    stage: OrderedStage<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    failure: Option<(io::ErrorKind, String)>,
}

impl OrderedReader {
    /// Reads the results of `stage` one after another.
    pub fn new(stage: OrderedStage<Vec<u8>>) -> Self {
        OrderedReader {
            stage,
            current: Vec::new(),
            position: 0,
            failure: None,
        }
    }
}

impl Read for OrderedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failure {
            return Err(io::Error::new(*kind, message.clone()));
        }
        while self.position == self.current.len() {
            match self.stage.next_result() {
                Some(Ok(bytes)) => {
                    self.current = bytes;
                    self.position = 0;
                }
                Some(Err(error)) => {
                    self.failure = Some((error.kind(), error.to_string()));
                    return Err(error);
                }
                None => return Ok(0),
            }
        }
        let taken = buf.len().min(self.current.len() - self.position);
        buf[..taken].copy_from_slice(&self.current[self.position..self.position + taken]);
        self.position += taken;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_cutting_order_whatever_the_workers_timing() {
        let mut next = 0u64;
        let mut stage = OrderedStage::start(
            "test",
            4,
            move || {
                next += 1;
                Ok((next <= 50).then_some(next))
            },
            |job: u64| {
                // Early jobs finish last.
                thread::sleep(std::time::Duration::from_millis(50u64.saturating_sub(job)));
                Ok(job * 2)
            },
        )
        .unwrap();
        let mut results = Vec::new();
        while let Some(result) = stage.next_result() {
            results.push(result.unwrap());
        }
        assert_eq!(results, (1..=50).map(|job| job * 2).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_comes_after_the_results_before_it_and_ends_the_stream() {
        let mut next = 0u8;
        let stage = OrderedStage::start(
            "test",
            2,
            move || {
                next += 1;
                match next {
                    1..=3 => Ok(Some(vec![next])),
                    _ => Err(io::Error::new(io::ErrorKind::InvalidData, "cut short")),
                }
            },
            Ok,
        )
        .unwrap();
        let mut reader = OrderedReader::new(stage);
        let mut bytes = Vec::new();
        let error = reader.read_to_end(&mut bytes).unwrap_err();
        assert_eq!(bytes, vec![1, 2, 3]);
        assert_eq!(error.to_string(), "cut short");
        let again = reader.read(&mut [0; 4]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_failing_job_stops_the_stream_at_its_place() {
        let mut next = 0u8;
        let stage = OrderedStage::start(
            "test",
            2,
            move || {
                next += 1;
                Ok((next <= 10).then_some(next))
            },
            |job: u8| {
                if job == 4 {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "job 4 is bad"))
                } else {
                    Ok(vec![job])
                }
            },
        )
        .unwrap();
        let mut bytes = Vec::new();
        let error = OrderedReader::new(stage)
            .read_to_end(&mut bytes)
            .unwrap_err();
        assert_eq!(bytes, vec![1, 2, 3]);
        assert_eq!(error.to_string(), "job 4 is bad");
    }
}
