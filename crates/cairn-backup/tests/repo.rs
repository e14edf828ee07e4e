//! Backup repositories against a real S3-compatible server (moto, started by the test
//! harness on 127.0.0.1) and in local folders: round trips, deduplication, encryption,
//! delete and prune, interrupted uploads, two writers.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_backup::repo::create::{backup_into, Destination};
use cairn_backup::repo::crypt::{Identities, Recipient};
use cairn_backup::repo::read::{restore_backup, verify_backup};
use cairn_backup::repo::s3::S3Settings;
use cairn_backup::repo::{BackupAddress, Repository, Retention};
use cairn_backup::{BackupInfo, BackupKind, LiveSource, RestoreMode, RestoreTarget};
use cairn_index::{Indexer, IndexerOptions};
use cairn_store::{CancelToken, DatabaseUrl, NewContent, NodeRef, Store};
use cairn_testkit::MotoServer;
use serde_json::{json, Map, Value};

struct Live {
    store: Arc<Store>,
    indexer: Arc<Indexer>,
    background: Option<JoinHandle<()>>,
}

impl Live {
    fn open(dir: &Path) -> Live {
        std::fs::create_dir_all(dir).unwrap();
        let store = Arc::new(Store::open(&DatabaseUrl::Sqlite(dir.join("cairn.db"))).unwrap());
        let options = IndexerOptions {
            writer_memory: 50 << 20,
            writer_threads: 1,
            ..IndexerOptions::default()
        };
        let (indexer, _) =
            Indexer::open(&dir.join("index"), store.clone(), options, &|_| {}).unwrap();
        let background = Some(indexer.start());
        Live {
            store,
            indexer,
            background,
        }
    }

    fn create(&self, name: &str, body: &str) {
        let mut fields = Map::new();
        fields.insert("Body".into(), Value::String(body.into()));
        let w = self
            .store
            .create(
                &NodeRef::from("/Root"),
                &NewContent {
                    type_name: "Article".into(),
                    name: name.into(),
                    fields,
                },
                self.store.admin_id(),
            )
            .unwrap();
        assert!(self.indexer.wait_for(w.activity, Duration::from_secs(10)));
    }

    fn source(&self) -> LiveSource {
        LiveSource::new(self.store.clone(), self.indexer.clone(), 0)
    }

    fn stop(mut self) {
        self.indexer.shutdown(self.background.take()).unwrap();
    }
}

/// A moto server with a bucket, and the settings to reach it.
fn s3() -> (MotoServer, S3Settings) {
    let moto = MotoServer::start()
        .expect("start moto (run .ci/run, or pip install moto[server] into .venv)");
    moto.create_bucket("cairn").unwrap();
    let settings = S3Settings::static_keys(&moto.endpoint(), "testing", "testing");
    (moto, settings)
}

fn back_up(
    live: &Live,
    address: &str,
    s3: &S3Settings,
    recipient: Option<Recipient>,
    staging: &Path,
) -> u64 {
    let address = BackupAddress::parse(address).unwrap();
    let dest = Destination::open(&address, s3, recipient).unwrap();
    let info = Mutex::new(BackupInfo::started_at(
        BackupKind::Repository,
        dest.display(),
    ));
    let made = backup_into(
        &live.source(),
        BackupKind::Repository,
        &dest,
        staging,
        &info,
        &CancelToken::new(),
    )
    .unwrap();
    assert!(!staging.exists(), "the staging folder is left");
    made.stored_bytes
}

fn restore_into(
    address: &str,
    s3: &S3Settings,
    to: &Path,
    identities: Option<&Identities>,
) -> cairn_backup::Result<()> {
    let address = BackupAddress::parse(address).unwrap();
    let repo = Repository::open(&address.repo, s3).unwrap();
    let target = RestoreTarget {
        data_dir: to.to_path_buf(),
        database: DatabaseUrl::Sqlite(to.join("cairn.db")),
    };
    restore_backup(
        &address,
        &repo,
        &target,
        RestoreMode::Both,
        false,
        identities,
        &|_, _| {},
        &CancelToken::new(),
    )
    .map(|_| ())
}

fn names(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = store
        .nodes_in_tree("/Root")
        .unwrap()
        .into_iter()
        .filter(|n| n.type_name == "Article")
        .map(|n| n.name)
        .collect();
    v.sort();
    v
}

/// Bytes the bucket holds under `prefix`, counted at the server.
fn stored(moto: &MotoServer, prefix: &str) -> u64 {
    moto.objects("cairn", prefix)
        .unwrap()
        .iter()
        .map(|(_, s)| s)
        .sum()
}

/// A backup into S3, listed, verified, restored into a new folder: the same items, no
/// integrity difference. Incremental, counted at the server: after 1% more items (200
/// added to 20,000) the next backup stores at most 5% of the first one's bytes; after 1% of
/// the items changed in place it stores at most 15% (an SQLite page holds about ten rows,
/// so 200 scattered updates touch about a tenth of the pages, and a page is the smallest
/// piece deduplicated).
#[test]
fn s3_round_trip_and_incremental() {
    let (moto, s3) = s3();
    let dir = tempfile::tempdir().unwrap();
    let live = Live::open(&dir.path().join("live"));
    let body = |i: usize| format!("body {i} {}", "lorem ipsum dolor sit amet ".repeat(8));
    let items: Vec<cairn_store::ImportItem> = (0..20_000)
        .map(|i| cairn_store::ImportItem {
            path: format!("/Root/a{i}"),
            type_name: "Article".into(),
            fields: serde_json::from_value(json!({ "Body": body(i), "Rating": i % 5 })).unwrap(),
            binaries: Vec::new(),
        })
        .collect();
    let outcome = live.store.import(&items, live.store.admin_id()).unwrap();
    assert!(live
        .indexer
        .wait_for(outcome.last_activity.unwrap(), Duration::from_secs(60)));
    let stage = dir.path().join("stage");
    back_up(&live, "s3://cairn/repo/b1", &s3, None, &stage);
    let first = stored(&moto, "repo/");
    let mut last = None;
    for i in 0..200 {
        let mut fields = Map::new();
        fields.insert("Body".into(), json!(body(100_000 + i)));
        let w = live
            .store
            .create(
                &NodeRef::from("/Root"),
                &NewContent {
                    type_name: "Article".into(),
                    name: format!("new{i}"),
                    fields,
                },
                live.store.admin_id(),
            )
            .unwrap();
        last = Some(w.activity);
    }
    assert!(live
        .indexer
        .wait_for(last.unwrap(), Duration::from_secs(30)));
    back_up(&live, "s3://cairn/repo/b2", &s3, None, &stage);
    let added = stored(&moto, "repo/") - first;
    for i in (0..20_000).step_by(100) {
        let mut fields = Map::new();
        fields.insert("Rating".into(), json!(9));
        let w = live
            .store
            .update(
                &NodeRef::from(format!("/Root/a{i}").as_str()),
                &fields,
                cairn_store::UpdateMode::Patch,
                live.store.admin_id(),
            )
            .unwrap();
        last = Some(w.activity);
    }
    assert!(live
        .indexer
        .wait_for(last.unwrap(), Duration::from_secs(30)));
    let before = stored(&moto, "repo/");
    back_up(&live, "s3://cairn/repo/b3", &s3, None, &stage);
    let changed = stored(&moto, "repo/") - before;
    eprintln!("first backup {first} bytes; after 1% added +{added}; after 1% changed +{changed}");
    assert!(
        added * 20 <= first,
        "1% added: +{added} bytes, over 5% of {first}"
    );
    assert!(
        changed * 100 <= first * 15,
        "1% changed: +{changed} bytes, over 15% of {first}"
    );
    let repo = Repository::open(
        &BackupAddress::parse("s3://cairn/repo/x").unwrap().repo,
        &s3,
    )
    .unwrap();
    let listed = repo.list().unwrap();
    assert_eq!(
        listed.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["b3", "b2", "b1"]
    );
    assert!(listed.iter().all(|l| l.packed && l.encrypted_to.is_none()));
    let checked = verify_backup(&repo, "b1", None, &|_, _| {}, &CancelToken::new()).unwrap();
    assert!(checked.full.is_some() && checked.partial.is_none());
    let expected = names(&live.store);
    live.stop();
    let to = dir.path().join("restored");
    restore_into("s3://cairn/repo/b3", &s3, &to, None).unwrap();
    let restored = Live::open(&to);
    assert_eq!(names(&restored.store), expected);
    assert!(restored.indexer.check_integrity().unwrap().is_clean());
    assert!(!to.join(".restore-download").exists());
    let rating: Vec<_> = restored
        .store
        .nodes_in_tree("/Root/a100")
        .unwrap()
        .into_iter()
        .map(|n| n.fields.get("Rating").cloned())
        .collect();
    assert_eq!(format!("{rating:?}"), "[Some(Number(9.0))]");
    restored.stop();
}

/// Encrypted to an age recipient: no object holds a plaintext byte of the content (a
/// marker string), verify without the identity checks the packs and says so, restore
/// without the identity or with another is refused before the target is touched, with it
/// everything comes back.
#[test]
fn encrypted_backups_hold_no_plaintext_and_need_their_key() {
    let (moto, s3) = s3();
    let dir = tempfile::tempdir().unwrap();
    let live = Live::open(&dir.path().join("live"));
    let marker = "MARKER-7f3a9c-plaintext";
    for i in 0..20 {
        live.create(&format!("secret{i}"), &format!("{marker} {i}"));
    }
    let key = age::x25519::Identity::generate();
    let recipient = Recipient::parse(&key.to_public().to_string()).unwrap();
    let id_file = dir.path().join("key.txt");
    std::fs::write(&id_file, format!("# test key\n{}\n", secrecy_expose(&key))).unwrap();
    back_up(
        &live,
        "s3://cairn/enc/b1",
        &s3,
        Some(recipient.clone()),
        &dir.path().join("stage"),
    );
    // Locally too: an encrypted backup in a folder is packed.
    back_up(
        &live,
        &format!("{}/b1", dir.path().join("local").display()),
        &s3,
        Some(recipient),
        &dir.path().join("stage"),
    );
    let expected = names(&live.store);
    live.stop();
    let stored = Repository::open(
        &BackupAddress::parse("s3://cairn/enc/b1").unwrap().repo,
        &s3,
    )
    .unwrap();
    let listed = moto.objects("cairn", "enc/").unwrap();
    assert!(listed.len() >= 3, "{listed:?}");
    for (key, size) in listed {
        let bytes = stored
            .objects()
            .get(key.strip_prefix("enc/").unwrap())
            .unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{key} holds the plaintext marker"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains("secret1"),
            "{key} holds an item's name"
        );
    }
    for entry in walk(&dir.path().join("local")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{}",
            entry.display()
        );
    }
    let repo = Repository::open(
        &BackupAddress::parse("s3://cairn/enc/b1").unwrap().repo,
        &s3,
    )
    .unwrap();
    let partial = verify_backup(&repo, "b1", None, &|_, _| {}, &CancelToken::new()).unwrap();
    assert!(partial.full.is_none() && partial.packs > 0, "{partial:?}");
    assert!(partial.partial.unwrap().contains("without --identity"));
    let to = dir.path().join("restored");
    let e = restore_into("s3://cairn/enc/b1", &s3, &to, None).unwrap_err();
    assert!(e.to_string().contains("--identity"), "{e}");
    assert!(!to.exists(), "a refused restore touched the target");
    let other = dir.path().join("other.txt");
    std::fs::write(&other, secrecy_expose(&age::x25519::Identity::generate())).unwrap();
    let wrong = Identities::read(&other).unwrap();
    let e = restore_into("s3://cairn/enc/b1", &s3, &to, Some(&wrong)).unwrap_err();
    assert!(e.to_string().contains("not its key"), "{e}");
    assert!(!to.exists());
    let right = Identities::read(&id_file).unwrap();
    let full = verify_backup(&repo, "b1", Some(&right), &|_, _| {}, &CancelToken::new()).unwrap();
    assert!(full.full.is_some());
    restore_into("s3://cairn/enc/b1", &s3, &to, Some(&right)).unwrap();
    let restored = Live::open(&to);
    assert_eq!(names(&restored.store), expected);
    assert!(restored.indexer.check_integrity().unwrap().is_clean());
    restored.stop();
}

fn secrecy_expose(key: &age::x25519::Identity) -> String {
    use age::secrecy::ExposeSecret;
    key.to_string().expose_secret().to_string()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Delete and prune: keep_last leaves exactly that many, every one restorable; deleting a
/// backup whose packs another shares leaves the other verifying; nothing unreferenced is
/// left behind.
#[test]
fn delete_and_prune_keep_what_others_need() {
    let (moto, s3) = s3();
    let dir = tempfile::tempdir().unwrap();
    let live = Live::open(&dir.path().join("live"));
    for i in 0..50 {
        live.create(&format!("a{i}"), "shared text");
    }
    for n in 1..=5 {
        live.create(&format!("n{n}"), "new");
        back_up(
            &live,
            &format!("s3://cairn/p/b{n}"),
            &s3,
            None,
            &dir.path().join("stage"),
        );
        std::thread::sleep(Duration::from_millis(1100)); // distinct finishing seconds
    }
    live.stop();
    let repo =
        Repository::open(&BackupAddress::parse("s3://cairn/p/x").unwrap().repo, &s3).unwrap();
    // b1's packs are shared by every later backup: deleting it frees nothing but its own
    // manifest and table, and the others stay whole.
    repo.delete("b1").unwrap();
    assert!(!repo.list().unwrap().iter().any(|l| l.name == "b1"));
    assert!(
        verify_backup(&repo, "b2", None, &|_, _| {}, &CancelToken::new())
            .unwrap()
            .full
            .is_some()
    );
    let keep = Retention {
        keep_last: Some(2),
        ..Retention::default()
    };
    let dry = repo.prune(&keep, true).unwrap();
    assert_eq!(dry.deleted, ["b3", "b2"]);
    assert_eq!(repo.list().unwrap().len(), 4, "a dry run deleted something");
    let done = repo.prune(&keep, false).unwrap();
    assert_eq!(done.kept, ["b5", "b4"]);
    let left: Vec<String> = repo.list().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["b5", "b4"]);
    for name in &left {
        let v = verify_backup(&repo, name, None, &|_, _| {}, &CancelToken::new()).unwrap();
        assert!(v.full.is_some(), "{name}");
    }
    // Every stored pack is named by a remaining manifest.
    let named: std::collections::HashSet<String> = repo
        .packed_manifests()
        .unwrap()
        .iter()
        .flat_map(|(_, m)| {
            m.packs
                .iter()
                .map(|p| format!("p/{}", cairn_backup::repo::packed::pack_key(&p.id)))
        })
        .collect();
    for (key, _) in moto.objects("cairn", "p/.packs/").unwrap() {
        assert!(named.contains(&key), "{key} is an orphan");
    }
}

/// Two writers into one repository: the second is refused while the first holds the
/// lease, naming it; once released, it gets it.
#[test]
fn two_writers_do_not_write_at_once() {
    let (_moto, s3) = s3();
    let repo =
        Repository::open(&BackupAddress::parse("s3://cairn/w/x").unwrap().repo, &s3).unwrap();
    let first = repo.lease("backup one").unwrap();
    let again = Repository::open(repo.url(), &s3).unwrap();
    let e = again
        .lease("backup two")
        .err()
        .expect("a second writer got the lease");
    assert!(e.to_string().contains("in use by backup one"), "{e}");
    drop(first);
    again.lease("backup two").unwrap();
}

/// Bad addresses and an unreachable endpoint: one clear error each, no panic.
#[test]
fn unreachable_or_wrong_repositories_say_so() {
    let unreachable = S3Settings::static_keys("http://127.0.0.1:9", "k", "s");
    let repo = Repository::open(
        &BackupAddress::parse("s3://cairn/x/b").unwrap().repo,
        &unreachable,
    )
    .unwrap();
    let e = repo.list().unwrap_err();
    assert!(e.to_string().contains("s3://cairn/x"), "{e}");
    let (_moto, s3) = s3();
    let missing = Repository::open(
        &BackupAddress::parse("s3://no-such-bucket/x/b")
            .unwrap()
            .repo,
        &s3,
    )
    .unwrap();
    assert!(missing.list().is_err());
    let _ = json!({});
}

#[test]
fn blobs_in_an_s3_bucket_keep_the_blob_store_contract() {
    let (_moto, settings) = s3();
    let blobs =
        cairn_backup::blob_stores::S3Blobs::open_with("s3://cairn/live-blobs", &settings).unwrap();
    cairn_store::files::contract::check_contract(&blobs, 3).unwrap();
}
