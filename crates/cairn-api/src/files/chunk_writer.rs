//! An upload's staged file, written by a blocking task of its own while the request is
//! read (a whole file part as it arrives; a chunked upload's across its requests). A chunk is
//! answered once its bytes are received and queued, so that writing (and hashing) one
//! chunk overlaps the transfer of the next. The published client sends a chunk and waits
//! for its answer; answered only once written, nothing of one chunk overlapped the next.
//!
//! What may wait in the queue is bounded ([`QUEUED`] pieces of the request body), so a
//! fast client is held back by the disk, never by the server's memory. A disk error is
//! kept by the task and answered at the next chunk (or the last), which then loses the
//! upload: the staged file goes with the task.

use axum::http::StatusCode;
use bytes::Bytes;
use cairn_store::files::StagedFile;
use cairn_store::StoreError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// Pieces of request bodies (as the network delivers them, each at most a few hundred kB)
/// that may wait for the writer.
const QUEUED: usize = 64;

enum Cmd {
    /// A chunk begins: where to go back to if it fails.
    Begin,
    /// Its next bytes.
    Bytes(Bytes),
    /// It failed: forget its bytes.
    Rewind,
}

/// Why reading a file part stopped before its end.
enum Stopped {
    /// It holds more than it may.
    OverLimit,
    /// The body is not valid multipart.
    Broken(multer::Error),
}

fn too_large(message: String) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLarge",
        "Exception",
        message,
    )
}

/// Why a chunk was not taken.
#[derive(Debug)]
pub enum ChunkFailed {
    /// The chunk was refused or cut short; the upload stays where it was before it.
    Refused(ApiError),
    /// The staged file could not be written: the upload is lost.
    Lost(ApiError),
}

/// See the module documentation.
#[derive(Debug)]
pub struct ChunkWriter {
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<Result<StagedFile, StoreError>>,
    received: u64,
}

impl ChunkWriter {
    /// Starts writing into `staged`.
    pub fn start(mut staged: StagedFile) -> ChunkWriter {
        let received = staged.len();
        let (tx, mut rx) = mpsc::channel::<Cmd>(QUEUED);
        let task = tokio::task::spawn_blocking(move || {
            let mut mark = staged.mark();
            while let Some(cmd) = rx.blocking_recv() {
                match cmd {
                    Cmd::Begin => mark = staged.mark(),
                    Cmd::Bytes(b) => staged.write(&b)?,
                    Cmd::Rewind => staged.rewind(mark.clone())?,
                }
            }
            Ok(staged)
        });
        ChunkWriter { tx, task, received }
    }

    /// Bytes received in whole chunks (the next chunk starts there).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Queues the bytes of `field` for the writer, at most `limit`: how many, or why it
    /// stopped (the bytes queued before stay queued: the caller rewinds or drops them).
    async fn pump(
        &mut self,
        field: &mut multer::Field<'_>,
        limit: u64,
    ) -> Result<Result<u64, Stopped>, ChunkFailed> {
        let mut got = 0u64;
        loop {
            match field.chunk().await {
                Ok(Some(b)) => {
                    got += b.len() as u64;
                    if got > limit {
                        return Ok(Err(Stopped::OverLimit));
                    }
                    self.send(Cmd::Bytes(b)).await?;
                }
                Ok(None) => return Ok(Ok(got)),
                Err(e) => return Ok(Err(Stopped::Broken(e))),
            }
        }
    }

    /// Receives a chunk of exactly `expected` bytes from `field`; returns when it is
    /// queued for the writer.
    pub async fn receive(
        &mut self,
        field: &mut multer::Field<'_>,
        expected: u64,
    ) -> Result<u64, ChunkFailed> {
        self.send(Cmd::Begin).await?;
        let at = self.received;
        let refused = match self.pump(field, expected).await? {
            Ok(got) if got == expected => {
                self.received += got;
                return Ok(got);
            }
            Ok(got) => ApiError::bad_request(format!(
                "Content-Range announced {expected} bytes; the chunk held {got}; the upload \
                 stays at byte {at}"
            )),
            Err(Stopped::OverLimit) => too_large(format!(
                "Content-Range announced {expected} bytes; the chunk holds more; the upload \
                 stays at byte {at}"
            )),
            Err(Stopped::Broken(e)) => multipart_error(e),
        };
        self.send(Cmd::Rewind).await?;
        Err(ChunkFailed::Refused(refused))
    }

    /// Writes a whole file part of at most `limit` bytes into `staged` while it is read:
    /// the staged file and its length once every byte is written.
    pub async fn receive_whole(
        field: &mut multer::Field<'_>,
        staged: StagedFile,
        limit: u64,
    ) -> Result<(StagedFile, u64), ApiError> {
        let mut w = ChunkWriter::start(staged);
        let len = match w.pump(field, limit).await {
            Ok(Ok(len)) => len,
            Ok(Err(Stopped::OverLimit)) => {
                return Err(too_large(format!(
                    "the file part is larger than {limit} bytes"
                )))
            }
            Ok(Err(Stopped::Broken(e))) => return Err(multipart_error(e)),
            Err(ChunkFailed::Refused(e) | ChunkFailed::Lost(e)) => return Err(e),
        };
        Ok((w.finish().await?, len))
    }

    async fn send(&mut self, cmd: Cmd) -> Result<(), ChunkFailed> {
        if self.tx.send(cmd).await.is_ok() {
            return Ok(());
        }
        // The writer stopped: its error says why.
        let why = match (&mut self.task).await {
            Ok(Err(e)) => ApiError::from(e),
            Ok(Ok(_)) => ApiError::internal("the upload's writer stopped"),
            Err(e) => ApiError::internal(e),
        };
        Err(ChunkFailed::Lost(why))
    }

    /// Waits until every byte is written; the staged file.
    pub async fn finish(self) -> Result<StagedFile, ApiError> {
        drop(self.tx);
        match self.task.await {
            Ok(done) => Ok(done?),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

/// A multipart body's error as the upload answers it: over a limit, 413; else 400.
pub(super) fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { limit }
        | multer::Error::FieldSizeExceeded { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "Exception",
            format!("the upload is larger than its limit of {limit} bytes"),
        ),
        other => ApiError::bad_request(format!(
            "the upload is not valid multipart/form-data: {other}"
        )),
    }
}
