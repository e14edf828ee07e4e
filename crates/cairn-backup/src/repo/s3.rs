//! Objects in an S3-compatible bucket, through Apache Arrow's `object_store` (S3's own
//! client: signing, retries, conditional puts); no S3 client of our own. Its API is async:
//! each call here runs on a small runtime of the repository's own, from the caller's
//! (blocking) thread.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::objects::Objects;
use crate::error::{BackupError, Result};

/// How to reach S3: every field `None` is taken from the standard `AWS_*` variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// The endpoint (`http://127.0.0.1:9000` for MinIO or moto; AWS's own when none).
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Whether a plain-HTTP endpoint is allowed.
    pub allow_http: Option<bool>,
}

impl S3Settings {
    /// The settings of a test's moto server (or any endpoint with static keys).
    pub fn static_keys(endpoint: &str, key: &str, secret: &str) -> Self {
        S3Settings {
            endpoint: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            access_key_id: Some(key.to_string()),
            secret_access_key: Some(secret.to_string()),
            allow_http: Some(endpoint.starts_with("http://")),
        }
    }
}

/// The bucket and prefix of `s3://BUCKET[/PREFIX]` (no leading or trailing `/` in the
/// prefix); `None` when `text` is not an `s3://` URL, an error when it is a bad one.
pub fn parse_url(text: &str) -> Option<Result<(String, String)>> {
    let rest = text.strip_prefix("s3://")?.trim_end_matches('/');
    let bad = |why: &str| Some(Err(BackupError::Refused(format!("{text:?}: {why}"))));
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return bad("an S3 repository names its bucket: s3://BUCKET/PREFIX");
    }
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return bad("the prefix has an empty, '.' or '..' part");
    }
    Some(Ok((bucket.to_string(), prefix.to_string())))
}

/// The objects under `s3://bucket/prefix`.
pub struct S3Objects {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

impl S3Objects {
    /// The objects of the bucket `bucket` under `prefix` (no leading or trailing `/`).
    pub fn open(bucket: &str, prefix: &str, settings: &S3Settings) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(v) = &settings.endpoint {
            b = b.with_endpoint(v);
        }
        if let Some(v) = &settings.region {
            b = b.with_region(v);
        }
        if let Some(v) = &settings.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &settings.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = settings.allow_http {
            b = b.with_allow_http(v);
        }
        let location = format!("s3://{bucket}/{prefix}");
        let store = b
            .build()
            .map_err(|e| BackupError::Storage(format!("{location}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(crate::error::io("start the S3 client's runtime"))?;
        Ok(S3Objects {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            runtime,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn failed(&self, what: &str, key: &str, e: object_store::Error) -> BackupError {
        // A write is answered 404 only when its bucket is missing (S3's NoSuchBucket, which
        // object_store reports as NotFound): that is a storage error, not a missing object.
        let writing = matches!(what, "write" | "create");
        match e {
            object_store::Error::NotFound { .. }
                if !writing && !e.to_string().contains("NoSuchBucket") =>
            {
                BackupError::NotFound(format!("{} has no {key}", self.location()))
            }
            object_store::Error::NotFound { .. } => BackupError::Storage(format!(
                "{what} {}/{key}: the bucket does not exist ({})",
                self.location(),
                e.to_string().lines().next().unwrap_or_default()
            )),
            other => BackupError::Storage(format!(
                "{what} {}/{key}: {}",
                self.location(),
                plain(&other)
            )),
        }
    }
}

impl S3Objects {
    /// The size of `key`, or `None` when there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("read", key, e)),
        }
    }

    /// Writes the file at `file` to `key`, streamed: one request for a small file, a
    /// multipart upload of [`PART`]-sized parts (a few in flight) for a large one, so that
    /// a file of any size is never held whole in memory.
    pub fn put_file(&self, key: &str, file: &std::path::Path) -> Result<()> {
        use std::io::Read;
        let io = |e| BackupError::Io {
            context: format!("read {}", file.display()),
            cause: e,
        };
        let mut f = std::fs::File::open(file).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len <= PART as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes).map_err(io)?;
            return self.put(key, &bytes);
        }
        let path = self.path(key);
        self.runtime.block_on(async {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.failed("write", key, e))?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; PART];
            loop {
                // A blocking read on the runtime's thread: a local file, one part at a time.
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return Err(self.failed("write", key, e));
                }
                writer.write(&buf[..n]);
            }
            writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.failed("write", key, e))
        })
    }
}

/// The part size of a multipart upload (S3's least is 5 MiB).
pub const PART: usize = 8 << 20;
/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// The error's own message, without the debug dump some variants carry, led by what it
/// means for a person when that is recognisable (S3's error codes, a refused connection).
fn plain(e: &object_store::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or(&text).to_string();
    let meaning = if text.contains("NoSuchBucket") {
        Some("the bucket does not exist")
    } else if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("403 Forbidden")
        || text.contains("AccessDenied")
    {
        Some("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    } else if text.contains("error sending request") || text.contains("connect") {
        Some("S3 is not reachable: check AWS_ENDPOINT_URL and the network")
    } else {
        None
    };
    match meaning {
        Some(m) => format!("{m} ({first})"),
        None => first,
    }
}

impl Objects for S3Objects {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put(&path, payload))
            .map(|_| ())
            .map_err(|e| self.failed("write", key, e))
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes.to_vec());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .runtime
            .block_on(self.store.put_opts(&path, payload, opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.failed("create", key, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        self.runtime
            .block_on(async {
                let got = self.store.get(&path).await?;
                got.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| self.failed("read", key, e))
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
        let path = self.path(key);
        self.runtime
            .block_on(self.store.get_range(&path, start..end))
            .map(|b| b.to_vec())
            .map_err(|e| self.failed("read", key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        use futures_util_lite::collect;
        let base = self.path(prefix.trim_end_matches('/'));
        let listed = self
            .runtime
            .block_on(collect(self.store.list(Some(&base))))
            .map_err(|e| self.failed("list", prefix, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_string();
                key.starts_with(prefix).then_some((key, m.size))
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }
}

/// Collecting a stream without a futures crate of our own: `object_store` lists as a
/// `Stream`, and polling it to its end is all that is needed.
mod futures_util_lite {
    use std::future::poll_fn;
    use std::pin::Pin;

    use object_store::ObjectMeta;

    type Listing =
        Pin<Box<dyn futures_core::Stream<Item = object_store::Result<ObjectMeta>> + Send>>;

    pub async fn collect(mut stream: Listing) -> object_store::Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        while let Some(item) = poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            out.push(item?);
        }
        Ok(out)
    }
}
