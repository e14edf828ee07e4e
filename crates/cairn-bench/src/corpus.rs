//! Fixed-seed synthetic corpus in Cairn's JSON-lines import format.
//!
//! The corpus is a content tree rooted at [`ROOT_PATH`]: folders holding 10–1000
//! direct children each, nested up to [`MAX_DEPTH`] levels below the root, and
//! articles (~98–99% of all lines) whose text is drawn from a built-in vocabulary of
//! [`VOCAB_SIZE`] English-like words with a Zipf-like frequency: the few most
//! common words occur in nearly every article, the rarest in well under 1%.
//!
//! Everything is produced by a streaming generator ([`items`]) that holds only the
//! current folder stack in memory, so a million-line corpus costs a few kilobytes of
//! state. Lines come out parents first (depth-first order), each line one JSON object:
//!
//! ```text
//! {"Path":"/Root/Corpus","Type":"Folder","DisplayName":"Corpus","Index":0}
//! {"Path":"/Root/Corpus/F1","Type":"Folder","DisplayName":"...","Index":0}
//! {"Path":"/Root/Corpus/F1/article-000003","Type":"Article","DisplayName":"...",
//!  "Description":"...","Body":"...","Author":"...","PublishDate":"2024-03-05T10:20:30Z",
//!  "Rating":3.5,"ReadCount":1234,"Pinned":false,"Category":"News","Index":0}
//! ```
//!
//! The same seed always yields the same corpus (the vocabulary does not depend on the
//! seed at all), so engines fed through [`items`], [`generate`] or [`read_jsonl`] see
//! identical rows. [`Row`] is the flattened, typed form of an [`Item`] that the raw
//! engine baselines consume, so that their timings exclude JSON work.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::thread;

use anyhow::{anyhow, bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Path of the first line of every corpus: the root folder.
pub const ROOT_PATH: &str = "/Root/Corpus";
/// Deepest folder level below [`ROOT_PATH`] (the root itself is depth 0).
pub const MAX_DEPTH: u32 = 8;
/// Number of distinct words in the built-in vocabulary.
pub const VOCAB_SIZE: usize = 2000;
/// Word frequencies follow a Zipf–Mandelbrot law `p(rank) ∝ (rank + q)^-s`
/// with this exponent `s` for the first [`HEAD_RANKS`] ranks …
pub const ZIPF_EXPONENT: f64 = 1.0;
/// … and this shift `q` (it tames the head: the top word is ~6% of all words) …
pub const ZIPF_SHIFT: f64 = 2.7;
/// … after which the probability decays exponentially, by a factor of 1000
/// between rank `HEAD_RANKS - 1` and the last rank, so that the rarest words
/// match only a handful of articles per 100,000.
pub const HEAD_RANKS: usize = 1000;
/// Article categories, with weights 40/30/20/10 percent.
pub const CATEGORIES: [&str; 4] = ["News", "Blog", "Tutorial", "Reference"];
/// Bumped whenever the generator's output for a given `(items, seed)` changes.
pub const GENERATOR_VERSION: u32 = 1;

const MIN_CHILDREN: u64 = 10;
const MAX_CHILDREN: u64 = 1000;
/// Publish dates fall in [2015-01-01, 2026-01-01).
const DATE_FROM: i64 = 1_420_070_400;
const DATE_TO: i64 = 1_767_225_600;
/// Size of the quantised word-sampling table for the most common words (one
/// 16-bit draw; 256 KiB, so it stays in the L2 cache).
const TABLE_BITS: u32 = 16;
/// Ranks sampled from the first-level table; the rest from the tail table.
const TABLE_HEAD: usize = HEAD_RANKS;
/// Zero padding after the last word so that every word can be copied with one
/// fixed-size (`WORD_COPY` bytes) copy and then truncated.
const WORD_COPY: usize = 16;
/// Size of the second-level table for the tail ranks (a further 20-bit draw).
const TAIL_TABLE_BITS: u32 = 20;

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// One corpus line: its path, its type and the remaining properties.
///
/// `json` holds every property of the line except `Path` and `Type`
/// (e.g. `DisplayName`, `Body`, `PublishDate`, `Index`).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub path: String,
    pub type_name: String,
    pub json: Map<String, Value>,
}

impl Item {
    /// Parses one import line (a JSON object with at least `Path` and `Type`).
    pub fn from_json_line(line: &str) -> anyhow::Result<Item> {
        let map: Map<String, Value> = serde_json::from_str(line).context("invalid JSON line")?;
        Item::from_object(map)
    }

    /// Splits a full import object into path, type and remaining properties.
    pub fn from_object(mut map: Map<String, Value>) -> anyhow::Result<Item> {
        let path = match map.remove("Path") {
            Some(Value::String(s)) => s,
            _ => bail!("line has no string \"Path\""),
        };
        let type_name = match map.remove("Type") {
            Some(Value::String(s)) => s,
            _ => bail!("line {path} has no string \"Type\""),
        };
        Ok(Item {
            path,
            type_name,
            json: map,
        })
    }

    /// The full import object (`Path` and `Type` first, then the other properties)
    /// as a single JSON line without the trailing newline.
    pub fn to_json_line(&self) -> String {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"{\"Path\":");
        json_str(&mut buf, &self.path);
        buf.extend_from_slice(b",\"Type\":");
        json_str(&mut buf, &self.type_name);
        for (k, v) in &self.json {
            buf.push(b',');
            json_str(&mut buf, k);
            buf.push(b':');
            serde_json::to_writer(&mut buf, v).expect("writing JSON to a Vec cannot fail");
        }
        buf.push(b'}');
        String::from_utf8(buf).expect("serde_json writes UTF-8")
    }

    /// Path of the parent folder (`""` for a path without a slash).
    pub fn parent_path(&self) -> &str {
        split_path(&self.path).0
    }

    /// Last path segment.
    pub fn name(&self) -> &str {
        split_path(&self.path).1
    }
}

/// Counts describing a generated corpus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusStats {
    /// All lines (folders + articles).
    pub lines: u64,
    pub folders: u64,
    pub articles: u64,
    /// Bytes written (0 when only iterating).
    pub bytes: u64,
    /// Deepest folder level below the root (root = 0).
    pub max_depth: u32,
    /// Smallest and largest number of direct children of a folder.
    pub min_children: u64,
    pub max_children: u64,
}

/// Splits `/a/b/c` into (`/a/b`, `c`).
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

// ---------------------------------------------------------------------------
// Vocabulary and word sampling
// ---------------------------------------------------------------------------

struct Vocab {
    words: Vec<String>,
    /// All words concatenated (plus `WORD_COPY` bytes of padding); table
    /// entries point into it.
    arena: Vec<u8>,
    /// `1 << TABLE_BITS` entries laid out by cumulative probability of the first
    /// `TABLE_HEAD` ranks plus one block for "some later rank". Entry = `offset << 8 | len`
    /// into `arena`; `len == 0` means "draw again from `tail`".
    table: Vec<u32>,
    /// `1 << TAIL_TABLE_BITS` entries for the later ranks (conditional law).
    tail: Vec<u32>,
    authors: Vec<String>,
}

/// Real English function/common words used for the most frequent ranks.
const COMMON_WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "on",
    "be", "by", "this", "are", "or", "from", "at", "which", "an", "but", "not", "have", "has",
    "were", "can", "all", "their", "more", "its", "one", "also", "new", "other", "been", "will",
    "about", "into", "than", "system", "data", "time", "first", "these", "some", "may", "only",
    "two", "such", "when", "used", "would", "there", "most", "between", "over", "after", "many",
    "use", "each", "where", "through", "both", "work", "while", "under", "how", "during", "part",
    "could", "well", "model", "process", "value", "state", "design", "report", "water", "market",
    "energy", "service", "network", "policy", "method", "result", "city", "group", "level",
    "change", "power", "order", "field", "project", "study", "light", "story", "history",
    "content", "search", "index", "storage", "review", "version", "update", "release", "guide",
    "query", "server", "client", "record", "folder", "article", "author", "reader", "editor",
];

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "cr", "dr", "fl", "gr", "pl", "pr", "st", "tr", "ch", "sh", "th", "sp", "cl",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ee", "y"];
const CODAS: &[&str] = &[
    "", "", "", "", "n", "r", "s", "l", "t", "m", "nd", "st", "ck", "rt", "ng", "x",
];

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will",
    "Xenia", "Yusuf", "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Adler", "Berg", "Costa", "Dahl", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Kowalski", "Larsen", "Meyer", "Novak", "Olsen", "Petrov", "Quist", "Rossi", "Silva", "Tanaka",
    "Ueda", "Vogel", "Weber", "Young",
];

/// SplitMix64: a tiny fixed PRNG so the vocabulary is independent of `rand`.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(state: &mut u64, list: &[&'a str]) -> &'a str {
    list[(splitmix(state) % list.len() as u64) as usize]
}

fn vocab() -> &'static Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let mut words: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        let mut seen: HashSet<String> = HashSet::with_capacity(VOCAB_SIZE * 2);
        for w in COMMON_WORDS {
            if seen.insert((*w).to_string()) {
                words.push((*w).to_string());
            }
        }
        let mut state = 0x00C0_FFEE_u64;
        while words.len() < VOCAB_SIZE {
            // Less frequent words tend to be longer (Zipf's law of abbreviation).
            let syllables = match words.len() {
                0..=399 => 1 + (splitmix(&mut state) % 2) as usize,
                400..=1199 => 2 + (splitmix(&mut state) % 2) as usize,
                _ => 2 + (splitmix(&mut state) % 3) as usize,
            };
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(pick(&mut state, ONSETS));
                w.push_str(pick(&mut state, VOWELS));
                w.push_str(pick(&mut state, CODAS));
            }
            if w.len() >= 3 && seen.insert(w.clone()) {
                words.push(w);
            }
        }

        let mut arena =
            Vec::with_capacity(words.iter().map(String::len).sum::<usize>() + WORD_COPY);
        let mut entries = Vec::with_capacity(VOCAB_SIZE);
        for w in &words {
            entries.push(((arena.len() as u32) << 8) | w.len() as u32);
            arena.extend_from_slice(w.as_bytes());
        }
        arena.extend_from_slice(&[0; WORD_COPY]);
        let weights: Vec<f64> = (0..VOCAB_SIZE).map(raw_weight).collect();
        let mut head: Vec<f64> = weights[..TABLE_HEAD].to_vec();
        head.push(weights[TABLE_HEAD..].iter().sum());
        let mut head_entries = entries[..TABLE_HEAD].to_vec();
        head_entries.push(0); // the tail marker
        let table = quantised_table(&head, &head_entries, 1 << TABLE_BITS);
        let tail = quantised_table(
            &weights[TABLE_HEAD..],
            &entries[TABLE_HEAD..],
            1 << TAIL_TABLE_BITS,
        );

        let mut authors = Vec::with_capacity(FIRST_NAMES.len() * LAST_NAMES.len());
        for (i, first) in FIRST_NAMES.iter().enumerate() {
            for (j, last) in LAST_NAMES.iter().enumerate() {
                // Keep roughly half the combinations, deterministically.
                if (i * 7 + j * 3) % 2 == 0 {
                    authors.push(format!("{first} {last}"));
                }
            }
        }
        Vocab {
            words,
            arena,
            table,
            tail,
            authors,
        }
    })
}

/// The built-in vocabulary, most frequent word first.
pub fn vocabulary() -> &'static [String] {
    &vocab().words
}

/// The word of the given frequency rank (0 = most common). Panics if
/// `rank >= VOCAB_SIZE`.
pub fn word(rank: usize) -> &'static str {
    &vocab().words[rank]
}

/// Unnormalised design weight of a rank (see [`ZIPF_EXPONENT`]).
fn raw_weight(rank: usize) -> f64 {
    if rank < HEAD_RANKS {
        (rank as f64 + ZIPF_SHIFT).powf(-ZIPF_EXPONENT)
    } else {
        let decay = (VOCAB_SIZE - HEAD_RANKS) as f64 / 1000f64.ln();
        raw_weight(HEAD_RANKS - 1) * (-((rank + 1 - HEAD_RANKS) as f64) / decay).exp()
    }
}

/// Lays out `entries[i]` over `len` slots in proportion to `weights[i]`
/// (largest remainders; every entry gets at least one slot).
fn quantised_table(weights: &[f64], entries: &[u32], len: usize) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / total * len as f64).collect();
    let mut slots: Vec<usize> = exact.iter().map(|x| (x.floor() as usize).max(1)).collect();
    let assigned: usize = slots.iter().sum();
    if assigned < len {
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        for &i in order.iter().cycle().take(len - assigned) {
            slots[i] += 1;
        }
    } else {
        let mut excess = assigned - len;
        for s in slots.iter_mut() {
            let take = excess.min(s.saturating_sub(1));
            *s -= take;
            excess -= take;
        }
    }
    let mut table = Vec::with_capacity(len);
    for (e, n) in entries.iter().zip(&slots) {
        table.extend(std::iter::repeat_n(*e, *n));
    }
    debug_assert_eq!(table.len(), len);
    table
}

/// Probability that one drawn word is the word of `rank` (design value; the
/// sampling tables match it to within one table slot).
pub fn word_probability(rank: usize) -> f64 {
    let total: f64 = (0..VOCAB_SIZE).map(raw_weight).sum();
    raw_weight(rank) / total
}

/// Expected fraction of articles whose body (`words` words; bodies have 50–300,
/// 175 on average) contains the word of `rank`.
pub fn expected_doc_fraction(rank: usize, words: usize) -> f64 {
    1.0 - (1.0 - word_probability(rank)).powi(words as i32)
}

/// Hands out 16-bit chunks of 64-bit random draws.
#[derive(Default)]
struct Bits {
    cur: u64,
    left: u32,
}

impl Bits {
    #[inline]
    fn next16(&mut self, rng: &mut StdRng) -> u16 {
        if self.left == 0 {
            self.cur = rng.next_u64();
            self.left = 4;
        }
        let v = self.cur as u16;
        self.cur >>= 16;
        self.left -= 1;
        v
    }
}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

struct Frame {
    path: String,
    depth: u32,
    next_index: u32,
    next_folder: u32,
    articles_left: u64,
    /// Budgets (items below the subfolder, excluding its own line) of the
    /// subfolders not yet emitted.
    subs: Vec<u64>,
}

struct FolderGen {
    path: String,
    display_name: String,
    index: u32,
}

struct ArticleGen {
    path: String,
    display_name: String,
    description: String,
    body: String,
    author: &'static str,
    publish_date: i64,
    rating: f64,
    read_count: i64,
    pinned: bool,
    category: &'static str,
    index: u32,
}

enum Gen {
    Folder(FolderGen),
    Article(ArticleGen),
}

/// Streaming corpus generator; see [`items`].
pub struct Corpus {
    rng: StdRng,
    bits: Bits,
    vocab: &'static Vocab,
    total: u64,
    emitted: u64,
    stack: Vec<Frame>,
    stats: CorpusStats,
}

/// Iterator over the `items` lines of the corpus for `seed`, in file order.
pub fn items(items: usize, seed: u64) -> Corpus {
    Corpus {
        rng: StdRng::seed_from_u64(seed),
        bits: Bits::default(),
        vocab: vocab(),
        total: items as u64,
        emitted: 0,
        stack: Vec::with_capacity(MAX_DEPTH as usize + 1),
        stats: CorpusStats {
            min_children: u64::MAX,
            ..CorpusStats::default()
        },
    }
}

/// Upper bound on the items a folder at `depth` can hold below itself.
fn capacity(depth: u32) -> u64 {
    let mut cap = MAX_CHILDREN;
    for _ in depth..MAX_DEPTH {
        cap = cap.saturating_add(1).saturating_mul(MAX_CHILDREN);
    }
    cap
}

impl Corpus {
    /// Counts so far (all of them once the iterator is exhausted; `bytes` stays 0).
    pub fn stats(&self) -> CorpusStats {
        let mut s = self.stats.clone();
        if s.min_children == u64::MAX {
            s.min_children = 0;
        }
        s
    }

    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (self.rng.random_range(lo.ln()..hi.ln())).exp()
    }

    /// Decides the direct articles and the subfolder budgets of a new folder that
    /// will hold `budget` items below itself.
    fn plan(&mut self, budget: u64, depth: u32) -> (u64, Vec<u64>) {
        let target = self.log_uniform(MIN_CHILDREN as f64, MAX_CHILDREN as f64 + 1.0) as u64;
        let target = target.clamp(MIN_CHILDREN, MAX_CHILDREN);
        if depth >= MAX_DEPTH || budget <= target {
            return (budget, Vec::new());
        }
        let mut direct = target;
        let mut rest = budget - direct;
        if rest < MIN_CHILDREN {
            if budget <= MAX_CHILDREN {
                return (budget, Vec::new());
            }
            direct = budget - MIN_CHILDREN;
            rest = MIN_CHILDREN;
        }
        // Typical subtree size: from small leaf folders to large sections.
        let subtree = self.log_uniform(30.0, 30_000.0);
        let sub_cap = capacity(depth + 1);
        let mut k = ((rest as f64 / subtree).round() as u64).max(1);
        k = k.min(direct).min(rest / MIN_CHILDREN);
        let min_k = rest.div_ceil(sub_cap);
        if k < min_k {
            k = min_k;
            if k > direct {
                let extra = (k - direct).min(MAX_CHILDREN - direct);
                direct += extra;
                rest -= extra;
                k = direct.min(k);
            }
        }
        let k = k.max(1);
        let mut parts = vec![MIN_CHILDREN.min(rest / k); k as usize];
        let spare = rest - parts.iter().sum::<u64>();
        if depth + 1 >= MAX_DEPTH {
            // Even split keeps every leaf within MAX_CHILDREN.
            for (i, p) in parts.iter_mut().enumerate() {
                *p += spare / k + u64::from((i as u64) < spare % k);
            }
        } else {
            let weights: Vec<f64> = (0..k)
                .map(|_| self.rng.random_range(-1.2f64..1.2).exp())
                .collect();
            let wsum: f64 = weights.iter().sum();
            let mut given = 0;
            for (p, w) in parts.iter_mut().zip(&weights) {
                let share = (((spare as f64) * w / wsum).floor() as u64).min(spare - given);
                *p += share;
                given += share;
            }
            let mut left = spare - given;
            let mut i = 0;
            while left > 0 {
                parts[i % k as usize] += 1;
                left -= 1;
                i += 1;
            }
        }
        (direct - k, parts)
    }

    fn record_folder(&mut self, depth: u32, articles: u64, subs: usize) {
        let children = articles + subs as u64;
        self.stats.folders += 1;
        self.stats.max_depth = self.stats.max_depth.max(depth);
        self.stats.min_children = self.stats.min_children.min(children);
        self.stats.max_children = self.stats.max_children.max(children);
    }

    fn next_gen(&mut self) -> Option<Gen> {
        if self.emitted >= self.total {
            return None;
        }
        self.emitted += 1;
        self.stats.lines += 1;
        if self.emitted == 1 {
            let (articles, subs) = self.plan(self.total - 1, 0);
            self.record_folder(0, articles, subs.len());
            self.stack.push(Frame {
                path: ROOT_PATH.to_string(),
                depth: 0,
                next_index: 0,
                next_folder: 1,
                articles_left: articles,
                subs,
            });
            return Some(Gen::Folder(FolderGen {
                path: ROOT_PATH.to_string(),
                display_name: "Corpus".to_string(),
                index: 0,
            }));
        }
        loop {
            let top = self.stack.last()?;
            let subs = top.subs.len() as u64;
            let articles = top.articles_left;
            if subs + articles == 0 {
                self.stack.pop();
                continue;
            }
            let folder = subs > 0 && self.rng.random_range(0..subs + articles) < subs;
            let top = self.stack.last_mut().expect("stack is non-empty");
            let index = top.next_index;
            top.next_index += 1;
            if folder {
                let budget = top.subs.pop().expect("subs is non-empty");
                let path = format!("{}/F{}", top.path, top.next_folder);
                top.next_folder += 1;
                let depth = top.depth + 1;
                let (articles, subs) = self.plan(budget, depth);
                self.record_folder(depth, articles, subs.len());
                self.stack.push(Frame {
                    path: path.clone(),
                    depth,
                    next_index: 0,
                    next_folder: 1,
                    articles_left: articles,
                    subs,
                });
                let words = self.rng.random_range(1..=3);
                let mut display_name = Vec::with_capacity(32);
                self.push_title(&mut display_name, words);
                let display_name = ascii_string(display_name);
                return Some(Gen::Folder(FolderGen {
                    path,
                    display_name,
                    index,
                }));
            }
            top.articles_left -= 1;
            let path = format!("{}/article-{:06}", top.path, self.emitted);
            self.stats.articles += 1;
            return Some(Gen::Article(self.article(path, index)));
        }
    }

    #[inline]
    /// Draws a word; returns its `offset << 8 | len` entry in the arena.
    fn draw_word(&mut self) -> u32 {
        let v = self.vocab;
        let mut e = v.table[(self.bits.next16(&mut self.rng) as usize) & ((1 << TABLE_BITS) - 1)];
        if e & 0xff == 0 {
            let hi = (self.bits.next16(&mut self.rng) as usize) << 16;
            let lo = self.bits.next16(&mut self.rng) as usize;
            e = v.tail[(hi | lo) & ((1 << TAIL_TABLE_BITS) - 1)];
        }
        e
    }

    /// Appends word `e` (see [`Corpus::draw_word`]), capitalised if asked.
    #[inline]
    fn push_word(&self, out: &mut Vec<u8>, e: u32, capitalize: bool) {
        let (off, len) = ((e >> 8) as usize, (e & 0xff) as usize);
        let start = out.len();
        if len <= WORD_COPY {
            out.extend_from_slice(&self.vocab.arena[off..off + WORD_COPY]);
            out.truncate(start + len);
        } else {
            out.extend_from_slice(&self.vocab.arena[off..off + len]);
        }
        if capitalize {
            out[start].make_ascii_uppercase();
        }
    }

    fn push_title(&mut self, out: &mut Vec<u8>, words: usize) {
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            let w = self.draw_word();
            self.push_word(out, w, true);
        }
    }

    /// Appends a sentence of `words` words (capitalised, maybe with a comma, ending
    /// with a period).
    fn push_sentence(&mut self, out: &mut Vec<u8>, words: usize) {
        // A comma after word `comma` in ~40% of the longer sentences.
        let comma = if words >= 7 && self.bits.next16(&mut self.rng) < 26_000 {
            self.rng.random_range(2..words - 3)
        } else {
            usize::MAX
        };
        let first = self.draw_word();
        self.push_word(out, first, true);
        for i in 1..words {
            if i - 1 == comma {
                out.push(b',');
            }
            out.push(b' ');
            let w = self.draw_word();
            self.push_word(out, w, false);
        }
        out.push(b'.');
    }

    fn article(&mut self, path: String, index: u32) -> ArticleGen {
        let title_words = self.rng.random_range(3..=8);
        let mut display_name = Vec::with_capacity(64);
        self.push_title(&mut display_name, title_words);

        let mut description = Vec::with_capacity(160);
        let n = self.rng.random_range(8..=20);
        self.push_sentence(&mut description, n);

        let mut remaining: usize = self.rng.random_range(50..=300);
        let mut body = Vec::with_capacity(remaining * 9);
        let mut sentences_in_paragraph = 0;
        let mut paragraph_len = self.rng.random_range(3..=6);
        while remaining > 0 {
            let n = self.rng.random_range(5..=18).min(remaining);
            if !body.is_empty() {
                if sentences_in_paragraph == paragraph_len {
                    body.extend_from_slice(b"\n\n");
                    sentences_in_paragraph = 0;
                    paragraph_len = self.rng.random_range(3..=6);
                } else {
                    body.push(b' ');
                }
            }
            self.push_sentence(&mut body, n);
            sentences_in_paragraph += 1;
            remaining -= n;
        }

        let authors = &self.vocab.authors;
        let author = authors[self.rng.random_range(0..authors.len())].as_str();
        let publish_date = self.rng.random_range(DATE_FROM..DATE_TO);
        let rating = f64::from(self.rng.random_range(10u32..=50)) / 10.0;
        let read_count = (self.rng.random_range(0.0..(1_000_001f64).ln()).exp() - 1.0) as i64;
        let pinned = self.rng.random_bool(0.02);
        let category = match self.rng.random_range(0..10) {
            0..=3 => CATEGORIES[0],
            4..=6 => CATEGORIES[1],
            7..=8 => CATEGORIES[2],
            _ => CATEGORIES[3],
        };
        ArticleGen {
            path,
            display_name: ascii_string(display_name),
            description: ascii_string(description),
            body: ascii_string(body),
            author,
            publish_date,
            rating,
            read_count,
            pinned,
            category,
            index,
        }
    }
}

fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("generated text is ASCII")
}

impl Iterator for Corpus {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.next_gen().map(Gen::into_item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.total - self.emitted) as usize;
        (left, Some(left))
    }
}

impl Gen {
    fn into_item(self) -> Item {
        let mut json = Map::new();
        match self {
            Gen::Folder(f) => {
                json.insert("DisplayName".into(), Value::String(f.display_name));
                json.insert("Index".into(), Value::from(f.index));
                Item {
                    path: f.path,
                    type_name: "Folder".into(),
                    json,
                }
            }
            Gen::Article(a) => {
                json.insert("DisplayName".into(), Value::String(a.display_name));
                json.insert("Description".into(), Value::String(a.description));
                json.insert("Body".into(), Value::String(a.body));
                json.insert("Author".into(), Value::from(a.author));
                json.insert(
                    "PublishDate".into(),
                    Value::String(format_date(a.publish_date)),
                );
                json.insert("Rating".into(), Value::from(a.rating));
                json.insert("ReadCount".into(), Value::from(a.read_count));
                json.insert("Pinned".into(), Value::Bool(a.pinned));
                json.insert("Category".into(), Value::from(a.category));
                json.insert("Index".into(), Value::from(a.index));
                Item {
                    path: a.path,
                    type_name: "Article".into(),
                    json,
                }
            }
        }
    }

    /// Appends the JSON line (with trailing newline) without building a `Map`.
    fn write_line(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"Path\":");
        match self {
            Gen::Folder(f) => {
                json_str(buf, &f.path);
                buf.extend_from_slice(b",\"Type\":\"Folder\",\"DisplayName\":");
                json_str(buf, &f.display_name);
                buf.extend_from_slice(b",\"Index\":");
                json_num(buf, f.index);
            }
            Gen::Article(a) => {
                json_str(buf, &a.path);
                buf.extend_from_slice(b",\"Type\":\"Article\",\"DisplayName\":");
                json_str(buf, &a.display_name);
                buf.extend_from_slice(b",\"Description\":");
                json_str(buf, &a.description);
                buf.extend_from_slice(b",\"Body\":");
                json_str(buf, &a.body);
                buf.extend_from_slice(b",\"Author\":");
                json_str(buf, a.author);
                buf.extend_from_slice(b",\"PublishDate\":\"");
                write_date(buf, a.publish_date);
                buf.extend_from_slice(b"\",\"Rating\":");
                json_num(buf, a.rating);
                buf.extend_from_slice(b",\"ReadCount\":");
                json_num(buf, a.read_count);
                buf.extend_from_slice(if a.pinned {
                    b",\"Pinned\":true,\"Category\":"
                } else {
                    b",\"Pinned\":false,\"Category\":"
                });
                json_str(buf, a.category);
                buf.extend_from_slice(b",\"Index\":");
                json_num(buf, a.index);
            }
        }
        buf.extend_from_slice(b"}\n");
    }
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(buf, s).expect("writing JSON to a Vec cannot fail");
}

fn json_num<T: Serialize>(buf: &mut Vec<u8>, n: T) {
    serde_json::to_writer(buf, &n).expect("writing JSON to a Vec cannot fail");
}

/// Writes the corpus of `items` lines for `seed` to `out` as JSON lines.
///
/// Streams: memory use does not grow with `items`. Lines are produced on a
/// helper thread in 256 KiB chunks while the calling thread writes them to `out`
/// (no extra buffering of `out` needed).
pub fn generate(items: usize, seed: u64, mut out: impl Write) -> io::Result<CorpusStats> {
    const CHUNK: usize = 256 * 1024;
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(4);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let producer = thread::Builder::new()
        .name("corpus-gen".into())
        .spawn(move || {
            let mut corpus = self::items(items, seed);
            let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (64 << 10));
            while let Some(g) = corpus.next_gen() {
                g.write_line(&mut buf);
                if buf.len() >= CHUNK {
                    let next = free_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(CHUNK + (64 << 10)));
                    if full_tx.send(std::mem::replace(&mut buf, next)).is_err() {
                        break; // the writer gave up
                    }
                }
            }
            if !buf.is_empty() {
                let _ = full_tx.send(buf);
            }
            corpus.stats()
        })?;

    let mut bytes = 0u64;
    let mut result = Ok(());
    for mut buf in full_rx.iter() {
        if let Err(e) = out.write_all(&buf) {
            result = Err(e);
            break;
        }
        bytes += buf.len() as u64;
        buf.clear();
        let _ = free_tx.send(buf);
    }
    drop(full_rx);
    let stats = producer
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    result?;
    out.flush()?;
    Ok(CorpusStats { bytes, ..stats })
}

// ---------------------------------------------------------------------------
// Corpus files
// ---------------------------------------------------------------------------

/// Reads an import file back as [`Item`]s (blank lines are skipped).
pub fn read_jsonl(path: &Path) -> io::Result<impl Iterator<Item = anyhow::Result<Item>>> {
    let reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    Ok(reader
        .lines()
        .enumerate()
        .filter_map(|(n, line)| match line {
            Err(e) => Some(Err(anyhow::Error::from(e))),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(Item::from_json_line(&l).with_context(|| format!("line {}", n + 1))),
        }))
}

/// Sidecar written next to a corpus file (`<file>.meta.json`) so that it can be
/// reused when items, seed and generator version match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusMeta {
    pub generator_version: u32,
    pub items: usize,
    pub seed: u64,
    pub stats: CorpusStats,
}

/// Path of the sidecar of a corpus file.
pub fn meta_path(corpus: &Path) -> PathBuf {
    let mut s = corpus.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}

/// The sidecar of `corpus` if it exists and describes the file as it is on disk.
pub fn read_meta(corpus: &Path) -> Option<CorpusMeta> {
    let text = fs::read_to_string(meta_path(corpus)).ok()?;
    let meta: CorpusMeta = serde_json::from_str(&text).ok()?;
    let len = fs::metadata(corpus).ok()?.len();
    (len == meta.stats.bytes).then_some(meta)
}

/// Outcome of [`ensure_jsonl`].
#[derive(Debug, Clone)]
pub struct Ensured {
    pub meta: CorpusMeta,
    /// `Some(seconds)` if the file was (re)generated, `None` if reused.
    pub generated_secs: Option<f64>,
}

/// Makes sure `path` holds the corpus for `(items, seed)`: reuses it if its sidecar
/// matches, otherwise generates it (via a temporary file, then rename) and writes
/// the sidecar.
pub fn ensure_jsonl(path: &Path, items: usize, seed: u64) -> anyhow::Result<Ensured> {
    if let Some(meta) = read_meta(path) {
        if meta.items == items && meta.seed == seed && meta.generator_version == GENERATOR_VERSION {
            return Ok(Ensured {
                meta,
                generated_secs: None,
            });
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = fs::remove_file(meta_path(path));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let start = std::time::Instant::now();
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let stats = generate(items, seed, file)?;
    let secs = start.elapsed().as_secs_f64();
    fs::rename(&tmp, path)?;
    let meta = CorpusMeta {
        generator_version: GENERATOR_VERSION,
        items,
        seed,
        stats,
    };
    fs::write(meta_path(path), serde_json::to_string_pretty(&meta)? + "\n")?;
    Ok(Ensured {
        meta,
        generated_secs: Some(secs),
    })
}

// ---------------------------------------------------------------------------
// Typed rows for the engine baselines
// ---------------------------------------------------------------------------

/// An [`Item`] flattened into typed columns, ready for an engine: everything an
/// insert needs is precomputed so that engine timings exclude JSON work.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line number in the corpus.
    pub id: i64,
    pub path: String,
    pub parent_path: String,
    pub name: String,
    pub type_name: String,
    pub display_name: String,
    pub description: String,
    pub body: String,
    pub author: String,
    pub category: String,
    /// Unix seconds.
    pub publish_date: Option<i64>,
    pub rating: Option<f64>,
    pub read_count: Option<i64>,
    pub pinned: bool,
    pub index: i64,
    /// All properties without a column of their own (everything except
    /// `DisplayName`, `Description` and `PublishDate`) as a JSON object.
    pub fields_json: String,
}

/// Properties stored in [`Row`] columns rather than in `fields_json`.
const COLUMN_KEYS: [&str; 3] = ["DisplayName", "Description", "PublishDate"];

impl Row {
    pub fn from_item(id: i64, item: &Item) -> Row {
        let s = |k: &str| {
            item.json
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let fields: BTreeMap<&str, &Value> = item
            .json
            .iter()
            .filter(|(k, _)| !COLUMN_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let (parent, name) = split_path(&item.path);
        Row {
            id,
            path: item.path.clone(),
            parent_path: parent.to_string(),
            name: name.to_string(),
            type_name: item.type_name.clone(),
            display_name: s("DisplayName"),
            description: s("Description"),
            body: s("Body"),
            author: s("Author"),
            category: s("Category"),
            publish_date: item
                .json
                .get("PublishDate")
                .and_then(Value::as_str)
                .and_then(parse_date),
            rating: item.json.get("Rating").and_then(Value::as_f64),
            read_count: item.json.get("ReadCount").and_then(Value::as_i64),
            pinned: item
                .json
                .get("Pinned")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            index: item.json.get("Index").and_then(Value::as_i64).unwrap_or(0),
            fields_json: serde_json::to_string(&fields).expect("a JSON map always serialises"),
        }
    }
}

/// Reads a corpus file into rows (ids = 1-based line numbers).
pub fn load_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, item) in read_jsonl(path)
        .with_context(|| format!("opening {}", path.display()))?
        .enumerate()
    {
        rows.push(Row::from_item(i as i64 + 1, &item?));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Dates (UTC, `YYYY-MM-DDTHH:MM:SSZ`)
// ---------------------------------------------------------------------------

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn write_date(buf: &mut Vec<u8>, unix: i64) {
    let (y, mo, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    write!(buf, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z").expect("Vec write");
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_date(unix: i64) -> String {
    let mut buf = Vec::with_capacity(20);
    write_date(&mut buf, unix);
    String::from_utf8(buf).expect("ASCII")
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (the corpus format) into Unix seconds.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        s.get(r)?.bytes().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Fails with a readable message unless `path` starts with [`ROOT_PATH`].
pub fn check_under_root(path: &str) -> anyhow::Result<()> {
    if path == ROOT_PATH || path.starts_with(&format!("{ROOT_PATH}/")) {
        Ok(())
    } else {
        Err(anyhow!("{path} is not under {ROOT_PATH}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn vocabulary_is_unique_and_fully_sampled() {
        let v = vocab();
        assert_eq!(v.words.len(), VOCAB_SIZE);
        let set: HashSet<&String> = v.words.iter().collect();
        assert_eq!(set.len(), VOCAB_SIZE);
        assert_eq!(v.table.len(), 1 << TABLE_BITS);
        assert_eq!(v.tail.len(), 1 << TAIL_TABLE_BITS);
        let entries: HashSet<u32> = v.table.iter().chain(&v.tail).copied().collect();
        assert_eq!(entries.len(), VOCAB_SIZE + 1); // + the tail marker
        for (i, w) in v.words.iter().enumerate().step_by(97) {
            let e = v.table.iter().chain(&v.tail).find(|&&e| {
                let off = (e >> 8) as usize;
                e & 0xff != 0 && &v.arena[off..off + (e & 0xff) as usize] == w.as_bytes()
            });
            assert!(e.is_some(), "rank {i} {w} not sampled");
        }
        let p0 = word_probability(0);
        assert!((0.04..0.08).contains(&p0), "{p0}");
        assert!(expected_doc_fraction(10, 175) > 0.8);
        assert!(expected_doc_fraction(VOCAB_SIZE - 1, 175) < 0.0001);
        let total: f64 = (0..VOCAB_SIZE).map(word_probability).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(v
            .words
            .iter()
            .all(|w| w.bytes().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_date("2024-03-05T10:20:30Z"), Some(1_709_634_030));
        for t in [DATE_FROM, DATE_TO - 1, 951_782_400, 1_709_634_030, -86_400] {
            assert_eq!(parse_date(&format_date(t)), Some(t));
        }
        assert_eq!(parse_date("2024-13-05T10:20:30Z"), None);
    }

    #[test]
    fn deterministic_and_round_trips_through_jsonl() {
        let mut out = Vec::new();
        let stats = generate(3000, 7, &mut out).unwrap();
        let again: Vec<u8> = {
            let mut v = Vec::new();
            generate(3000, 7, &mut v).unwrap();
            v
        };
        assert_eq!(out, again);
        assert_eq!(stats.bytes as usize, out.len());
        let text = String::from_utf8(out).unwrap();
        let parsed: Vec<Item> = text
            .lines()
            .map(|l| Item::from_json_line(l).unwrap())
            .collect();
        let iterated: Vec<Item> = items(3000, 7).collect();
        assert_eq!(parsed, iterated);
        assert_eq!(parsed.len(), 3000);
        // Item::to_json_line re-parses to the same item.
        for it in iterated.iter().take(50) {
            assert_eq!(&Item::from_json_line(&it.to_json_line()).unwrap(), it);
        }
        let other: Vec<Item> = items(3000, 8).take(10).collect();
        assert_ne!(other, iterated[..10]);
    }

    #[test]
    fn tree_shape() {
        for (n, seed) in [(1usize, 1u64), (11, 1), (500, 2), (20_000, 3), (200_000, 4)] {
            let mut corpus = items(n, seed);
            let mut seen: HashSet<String> = HashSet::new();
            let mut children: HashMap<String, u64> = HashMap::new();
            let mut first = true;
            for it in corpus.by_ref() {
                check_under_root(&it.path).unwrap();
                if first {
                    assert_eq!(it.path, ROOT_PATH);
                    assert_eq!(it.type_name, "Folder");
                    first = false;
                } else {
                    let parent = it.parent_path().to_string();
                    assert!(seen.contains(&parent), "{} before parent", it.path);
                    *children.entry(parent).or_default() += 1;
                }
                if it.type_name == "Folder" {
                    assert!(seen.insert(it.path.clone()), "duplicate {}", it.path);
                    let depth = it.path.matches('/').count() - 2;
                    assert!(depth <= MAX_DEPTH as usize);
                }
            }
            let stats = corpus.stats();
            assert_eq!(stats.lines, n as u64);
            assert_eq!(stats.folders + stats.articles, n as u64);
            assert!(stats.max_children <= MAX_CHILDREN);
            if n >= 11 {
                assert!(stats.min_children >= MIN_CHILDREN, "{stats:?}");
                assert!(children.values().all(|c| (10..=1000).contains(c)));
            }
            if n >= 20_000 {
                assert!(stats.articles * 100 >= stats.lines * 95, "{stats:?}");
                assert!(stats.max_depth >= 2, "{stats:?}");
            }
        }
    }

    #[test]
    fn rows_from_items() {
        let its: Vec<Item> = items(200, 9).collect();
        let root = Row::from_item(1, &its[0]);
        assert_eq!(root.parent_path, "/Root");
        assert_eq!(root.name, "Corpus");
        let art = its.iter().find(|i| i.type_name == "Article").unwrap();
        let row = Row::from_item(5, art);
        assert!(row.publish_date.is_some() && row.rating.is_some());
        assert!(!row.body.is_empty());
        let fields: Map<String, Value> = serde_json::from_str(&row.fields_json).unwrap();
        assert!(fields.contains_key("Body") && !fields.contains_key("DisplayName"));
        assert!(CATEGORIES.contains(&row.category.as_str()));
    }
}
