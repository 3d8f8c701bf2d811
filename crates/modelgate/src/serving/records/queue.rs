//! The bounded path from the gateway to each sink: one queue and one
//! background thread per sink. Offering never blocks (a full queue drops the
//! record and counts it); the thread writes batches (by count and time),
//! retries a batch that failed transiently with exponential backoff, drops
//! it (counted) when it keeps failing, and flushes on shutdown within a
//! bounded wait. Its CPU is charged to the shadow CPU budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use modelgate_runtime::CpuBudget;

use super::{Record, RecordWriter, SinkError};

/// How a sink's queue batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Records that may wait per sink; one more is dropped and counted.
    pub capacity: usize,
    /// A batch is written when it has this many records…
    pub batch_records: usize,
    /// …or when its first record has waited this long.
    pub batch_wait: Duration,
    /// Retries of a batch that failed transiently before it is dropped.
    pub retries: u32,
    /// The wait before the first retry, doubled for each next one…
    pub backoff: Duration,
    /// …up to this.
    pub max_backoff: Duration,
}

impl Default for QueueSettings {
    /// 8192 records waiting, batches of 256 or 200 ms, 5 retries from 100 ms
    /// (a batch is given up after about 3 s of failures).
    fn default() -> Self {
        Self {
            capacity: 8192,
            batch_records: 256,
            batch_wait: Duration::from_millis(200),
            retries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What happened to a sink's records, for
/// `modelgate_shadow_records_total{sink,outcome}`.
#[derive(Debug, Default)]
pub struct SinkCounts {
    pub written: AtomicU64,
    /// Offered while the queue was full.
    pub dropped_full: AtomicU64,
    /// In a batch that failed permanently or past its retries.
    pub dropped_failed: AtomicU64,
    /// Batch writes retried after a transient failure.
    pub retried: AtomicU64,
}

impl SinkCounts {
    /// Each outcome label with its count.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("written", self.written.load(Ordering::Relaxed)),
            ("dropped_full", self.dropped_full.load(Ordering::Relaxed)),
            ("dropped_failed", self.dropped_failed.load(Ordering::Relaxed)),
            ("retried", self.retried.load(Ordering::Relaxed)),
        ]
    }
}

enum Msg {
    Record(Box<Record>),
    /// Write what is queued, flush the sink, answer.
    Flush(Sender<()>),
    /// Like `Flush`, then end the thread.
    Close(Sender<()>),
}

/// One sink behind its bounded queue and thread.
pub struct SinkQueue {
    label: String,
    tx: Sender<Msg>,
    counts: Arc<SinkCounts>,
    /// Set when shutdown gave up waiting: a thread still retrying stops.
    closing: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SinkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkQueue").field("label", &self.label).finish()
    }
}

impl SinkQueue {
    /// Starts `writer`'s thread; `label` names it in metrics and logs.
    pub fn start(
        label: String,
        writer: Box<dyn RecordWriter>,
        settings: QueueSettings,
        budget: Option<Arc<CpuBudget>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(settings.capacity.max(1));
        let counts = Arc::new(SinkCounts::default());
        let closing = Arc::new(AtomicBool::new(false));
        let mut drain = Drain {
            label: label.clone(),
            writer,
            settings,
            counts: Arc::clone(&counts),
            closing: Arc::clone(&closing),
            budget,
            flush_failing: false,
        };
        let thread = std::thread::Builder::new()
            // "shadow-" like every thread of the shadow side; Linux keeps 15 bytes.
            .name(format!("shadow-rec-{label}"))
            .spawn(move || drain.run(&rx))?;
        Ok(Self { label, tx, counts, closing, thread: std::sync::Mutex::new(Some(thread)) })
    }

    pub fn counts(&self) -> &SinkCounts {
        &self.counts
    }

    /// Queues `record`, or drops and counts it when the queue is full.
    /// Never blocks.
    pub fn offer(&self, record: Record) {
        if self.tx.try_send(Msg::Record(Box::new(record))).is_err() {
            self.counts.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes and flushes everything queued before this call; false if that
    /// took longer than `timeout` (the sink is slow or dead).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.ask(Msg::Flush, timeout)
    }

    /// Writes and flushes what is queued and ends the thread, waiting at
    /// most `timeout`; after that the thread gives up its retries and is
    /// left to end by itself. False if it did not finish in time.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let done = self.ask(Msg::Close, timeout);
        if done {
            if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        } else {
            self.closing.store(true, Ordering::Relaxed);
            tracing::warn!(sink = %self.label, "records not flushed within {timeout:?} at shutdown; the rest are dropped");
        }
        done
    }

    fn ask(&self, msg: fn(Sender<()>) -> Msg, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        // Waits for room rather than dropping: the answer must come after
        // every record already queued.
        if self.tx.send_deadline(msg(done_tx), deadline).is_err() {
            return false;
        }
        done_rx.recv_deadline(deadline).is_ok()
    }
}

/// The sink thread's side.
struct Drain {
    label: String,
    writer: Box<dyn RecordWriter>,
    settings: QueueSettings,
    counts: Arc<SinkCounts>,
    closing: Arc<AtomicBool>,
    budget: Option<Arc<CpuBudget>>,
    /// Warn once per run of failing flushes, not once per flush.
    flush_failing: bool,
}

/// How long the thread sleeps with nothing queued.
const IDLE: Duration = Duration::from_secs(1);

impl Drain {
    fn run(&mut self, rx: &Receiver<Msg>) {
        // Records are for offline analysis: they only get spare CPU.
        modelgate_runtime::executor::make_background();
        let mut batch: Vec<Record> = Vec::with_capacity(self.settings.batch_records);
        let mut oldest = Instant::now();
        loop {
            let wait = if batch.is_empty() {
                IDLE
            } else {
                self.settings.batch_wait.saturating_sub(oldest.elapsed())
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Record(r)) => {
                    if batch.is_empty() {
                        oldest = Instant::now();
                    }
                    batch.push(*r);
                    if batch.len() >= self.settings.batch_records.max(1) {
                        self.write(&mut batch);
                    }
                }
                Ok(Msg::Flush(done)) => {
                    self.write(&mut batch);
                    self.flush();
                    let _ = done.send(());
                }
                Ok(Msg::Close(done)) => {
                    self.write(&mut batch);
                    self.flush();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A batch that waited long enough, or an idle queue:
                    // readers should see what was written, even when no new
                    // record comes (a Parquet file open past its max_open
                    // is sealed and uploaded here).
                    self.write(&mut batch);
                    self.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut batch);
                    self.flush();
                    return;
                }
            }
        }
    }

    fn metered<T>(&mut self, f: impl FnOnce(&mut dyn RecordWriter) -> T) -> T {
        let writer = &mut *self.writer;
        match &self.budget {
            Some(b) => b.metered(|| f(writer)),
            None => f(writer),
        }
    }

    /// Writes `batch` (retrying transient failures) and empties it.
    fn write(&mut self, batch: &mut Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut backoff = self.settings.backoff;
        let mut attempt = 0;
        loop {
            match self.metered(|w| w.write(batch)) {
                Ok(()) => {
                    self.counts.written.fetch_add(n, Ordering::Relaxed);
                    self.count_undelivered();
                    break;
                }
                Err(SinkError::Transient(e))
                    if attempt < self.settings.retries && !self.closing.load(Ordering::Relaxed) =>
                {
                    attempt += 1;
                    self.counts.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(sink = %self.label, error = %e, attempt, "record batch failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
                Err(e) => {
                    self.counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(sink = %self.label, error = %e, records = n, "record batch dropped");
                    break;
                }
            }
        }
        batch.clear();
    }

    fn flush(&mut self) {
        match self.metered(|w| w.flush()) {
            Ok(()) => self.flush_failing = false,
            Err(e) => {
                if !self.flush_failing {
                    tracing::warn!(sink = %self.label, error = %e, "record sink flush failed");
                }
                self.flush_failing = true;
            }
        }
        self.count_undelivered();
    }

    /// Records an asynchronous sink accepted (counted `written`) and later
    /// failed to deliver are counted `dropped_failed` too: counters never go
    /// down, so `written` means "accepted by the sink".
    fn count_undelivered(&mut self) {
        let lost = self.writer.take_undelivered();
        if lost > 0 {
            self.counts.dropped_failed.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(sink = %self.label, records = lost, "records accepted by the sink were not delivered");
        }
    }
}

/// Every configured sink: a record is offered to each sink's queue.
#[derive(Debug, Default)]
pub struct RecordSinks {
    queues: Vec<SinkQueue>,
}

impl RecordSinks {
    /// Starts a queue per writer. Two sinks of one kind are labelled
    /// `file`, `file-2`, … so their counts stay apart.
    pub fn start(
        writers: Vec<Box<dyn RecordWriter>>,
        settings: QueueSettings,
        budget: Option<Arc<CpuBudget>>,
    ) -> std::io::Result<Self> {
        let mut queues: Vec<SinkQueue> = Vec::with_capacity(writers.len());
        for w in writers {
            let name = w.name();
            let same =
                queues.iter().filter(|q| q.label == name || q.label.starts_with(&format!("{name}-"))).count();
            let label = if same == 0 { w.name().to_string() } else { format!("{}-{}", w.name(), same + 1) };
            queues.push(SinkQueue::start(label, w, settings, budget.clone())?);
        }
        Ok(Self { queues })
    }

    /// Offers `record` to every sink; never blocks.
    pub fn offer(&self, record: Record) {
        if let Some((last, rest)) = self.queues.split_last() {
            for q in rest {
                q.offer(record.clone());
            }
            last.offer(record);
        }
    }

    /// Flushes every sink; false if one did not finish within `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.queues
            .iter()
            // Every sink is asked, even after one timed out.
            .filter(|q| !q.flush(deadline.saturating_duration_since(Instant::now())))
            .count()
            == 0
    }

    /// Flushes and stops every sink within `timeout` in all.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.queues
            .iter()
            // Every sink is asked, even after one timed out.
            .filter(|q| !q.shutdown(deadline.saturating_duration_since(Instant::now())))
            .count()
            == 0
    }

    /// (sink label, outcome, count) for every sink and outcome, zeros included.
    pub fn counts(&self) -> Vec<(String, &'static str, u64)> {
        self.queues
            .iter()
            .flat_map(|q| q.counts().snapshot().into_iter().map(|(o, n)| (q.label.clone(), o, n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::records::test_outcome as record;
    use std::sync::Mutex;

    /// Keeps what it is given; fails the first `fail` writes with `error`.
    struct Memory {
        written: Arc<Mutex<Vec<Record>>>,
        fail: usize,
        permanent: bool,
        flushes: Arc<AtomicU64>,
    }

    impl RecordWriter for Memory {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn write(&mut self, batch: &[Record]) -> Result<(), SinkError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(if self.permanent {
                    SinkError::Permanent("refused".into())
                } else {
                    SinkError::Transient("down".into())
                });
            }
            self.written.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn memory(fail: usize, permanent: bool) -> (Box<Memory>, Arc<Mutex<Vec<Record>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let w = Memory { written: Arc::clone(&written), fail, permanent, flushes: Arc::default() };
        (Box::new(w), written)
    }

    fn quick() -> QueueSettings {
        QueueSettings {
            capacity: 64,
            batch_records: 8,
            batch_wait: Duration::from_millis(20),
            retries: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    const WAIT: Duration = Duration::from_secs(60);

    fn count(q: &SinkQueue, outcome: &str) -> u64 {
        q.counts().snapshot().iter().find(|(o, _)| *o == outcome).unwrap().1
    }

    #[test]
    fn shutdown_writes_and_flushes_everything_queued() {
        let (w, written) = memory(0, false);
        let flushes = Arc::clone(&w.flushes);
        // Batches far larger and slower than the test: only the shutdown writes them.
        let settings =
            QueueSettings { batch_records: 1000, batch_wait: Duration::from_secs(3600), ..quick() };
        let q = SinkQueue::start("memory".into(), w, settings, None).unwrap();
        for i in 0..50 {
            q.offer(record(i));
        }
        assert!(q.shutdown(WAIT));
        assert_eq!(*written.lock().unwrap(), (0..50).map(record).collect::<Vec<_>>());
        assert_eq!(count(&q, "written"), 50);
        assert!(flushes.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_transient_failure_is_retried_and_the_batch_written_once() {
        let (w, written) = memory(2, false);
        let q = SinkQueue::start("memory".into(), w, quick(), None).unwrap();
        for i in 0..8 {
            q.offer(record(i));
        }
        assert!(q.flush(WAIT));
        assert_eq!(*written.lock().unwrap(), (0..8).map(record).collect::<Vec<_>>());
        assert_eq!((count(&q, "written"), count(&q, "retried"), count(&q, "dropped_failed")), (8, 2, 0));
    }

    #[test]
    fn a_batch_that_keeps_failing_is_dropped_and_counted() {
        // Transient past the retries, then a permanent refusal: both drop.
        let (w, written) = memory(4, false);
        let q = SinkQueue::start("memory".into(), w, quick(), None).unwrap();
        for i in 0..8 {
            q.offer(record(i));
        }
        assert!(q.flush(WAIT));
        assert_eq!((count(&q, "dropped_failed"), count(&q, "retried"), count(&q, "written")), (8, 3, 0));
        let (w, _) = memory(1, true);
        let p = SinkQueue::start("memory".into(), w, quick(), None).unwrap();
        for i in 0..8 {
            p.offer(record(i));
        }
        assert!(p.flush(WAIT));
        assert_eq!((count(&p, "dropped_failed"), count(&p, "retried")), (8, 0));
        // The queue goes on after a dropped batch.
        q.offer(record(9));
        assert!(q.flush(WAIT));
        assert_eq!(*written.lock().unwrap(), vec![record(9)]);
    }

    /// Blocks in `write` until the test lets go (drops the sender).
    struct Stuck(Receiver<()>);

    impl RecordWriter for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn write(&mut self, _: &[Record]) -> Result<(), SinkError> {
            let _ = self.0.recv();
            Err(SinkError::Permanent("released".into()))
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn a_sink_that_never_returns_never_blocks_the_offer_and_a_full_queue_drops() {
        let (release, stuck) = crossbeam_channel::bounded::<()>(0);
        let settings = QueueSettings { capacity: 4, batch_records: 1, ..quick() };
        let q = SinkQueue::start("stuck".into(), Box::new(Stuck(stuck)), settings, None).unwrap();
        // Every offer returns although the sink never does: the thread holds
        // at most one batch, the queue 4, the rest are dropped.
        for i in 0..1000 {
            q.offer(record(i));
        }
        assert!(count(&q, "dropped_full") >= 1000 - 4 - 1, "{:?}", q.counts().snapshot());
        // A flush cannot finish; it gives up at its bound.
        assert!(!q.flush(Duration::from_millis(50)));
        drop(release);
        assert!(q.shutdown(WAIT));
    }

    #[test]
    fn fan_out_offers_each_record_to_every_sink_with_counts_from_zero() {
        let (a, a_written) = memory(0, false);
        let (b, b_written) = memory(0, false);
        let sinks = RecordSinks::start(vec![a, b], quick(), None).unwrap();
        let zero: Vec<_> = sinks
            .counts()
            .into_iter()
            .filter(|(_, _, n)| *n == 0)
            .map(|(l, o, _)| format!("{l}/{o}"))
            .collect();
        assert_eq!(zero.len(), 8, "{zero:?}");
        assert!(zero.contains(&"memory-2/dropped_full".to_string()), "{zero:?}");
        for i in 0..20 {
            sinks.offer(record(i));
        }
        assert!(sinks.shutdown(WAIT));
        let all: Vec<_> = (0..20).map(record).collect();
        assert_eq!(*a_written.lock().unwrap(), all);
        assert_eq!(*b_written.lock().unwrap(), all);
    }
}
