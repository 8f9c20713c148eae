//! Prompt fingerprints, computed once on arrival so that the prompt text can be dropped.
//!
//! Three things are kept of a prompt, and nothing else:
//! - a 64-bit SimHash over word unigrams and bigrams (near-duplicates differ in few bits);
//! - a *template skeleton* hash: instruction words are kept in order, while runs of content
//!   words, numbers and the function words between them collapse to one slot, so that
//!   "Explain step by step how {topic} works" has one skeleton whatever the topic;
//! - whether the prompt asks for step-by-step reasoning (a configurable phrase lexicon).
//!
//! The text itself is never stored, logged or emitted.

use nohash_hasher::IntMap;

/// What the detectors know of a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptFingerprint {
    /// 64-bit SimHash; 0 when the event carried neither text nor `prompt_simhash`.
    pub simhash: u64,
    /// Hash of the skeleton's opening (the instructions a template starts with); 0 when the
    /// prompt has no scaffold to speak of.
    pub template: u64,
    /// Hash of the skeleton's closing ("... Think step by step and show your reasoning before
    /// giving the final answer."); 0 likewise. Templates fix their opening, their closing or
    /// both, with the slot in between, so either can identify one.
    pub template_tail: u64,
    /// The prompt asks for step-by-step reasoning.
    pub reasoning: bool,
    /// Instruction words in the skeleton: long scaffolds mark machine-built prompts.
    pub scaffold: u8,
    /// Computed from the prompt text (false: from an upstream `prompt_simhash`, so reasoning
    /// elicitation is unknown).
    pub text: bool,
}

/// Default phrases that elicit step-by-step reasoning (matched case-insensitively).
pub const DEFAULT_REASONING_LEXICON: &[&str] = &[
    "step by step",
    "step-by-step",
    "show your reasoning",
    "show your work",
    "show all your work",
    "show all work",
    "explain your reasoning",
    "reasoning step",
    "chain of thought",
    "chain-of-thought",
    "reason carefully",
    "walk through each step",
    "walk me through each step",
    "before answering, reason",
    "intermediate steps",
    "intermediate reasoning",
    "think carefully",
    "let's think",
    "justify each step",
    "show each step",
];

/// Words that make up the scaffold of a prompt template: instructions and their connectives.
const STRUCT_WORDS: &[&str] = &[
    "you",
    "are",
    "your",
    "act",
    "expert",
    "assistant",
    "tutor",
    "teacher",
    "solve",
    "following",
    "problem",
    "question",
    "task",
    "answer",
    "final",
    "explain",
    "describe",
    "write",
    "summarize",
    "summarise",
    "translate",
    "classify",
    "extract",
    "list",
    "compare",
    "analyze",
    "analyse",
    "evaluate",
    "generate",
    "provide",
    "give",
    "show",
    "showing",
    "think",
    "step",
    "steps",
    "reasoning",
    "reason",
    "intermediate",
    "carefully",
    "detailed",
    "thorough",
    "chain",
    "thought",
    "justify",
    "walk",
    "through",
    "please",
    "output",
    "format",
    "respond",
    "response",
    "return",
    "json",
    "concise",
    "brief",
    "document",
    "ticket",
    "review",
    "sentiment",
    "label",
    "category",
    "instruction",
    "instructions",
    "must",
    "should",
    "include",
    "including",
    "each",
    "every",
    "before",
    "then",
    "first",
    "all",
    "by",
];

/// Function and question words, absorbed into a neighbouring slot ("why did the Roman empire
/// fall" is one slot). They stay in the skeleton only between two instruction words
/// ("step by step").
const STOP_WORDS: &[&str] = &[
    "the", "of", "in", "to", "and", "for", "with", "on", "it", "this", "that", "is", "a", "an",
    "by", "as", "at", "from", "or", "be", "was", "were", "its", "their", "his", "her", "into",
    "about", "over", "under", "between", "than", "these", "those", "some", "any", "what", "why",
    "how", "which", "when", "where", "who", "do", "does", "did", "can", "could", "would", "i",
    "my", "me", "we", "our", "there", "are", "you", "your",
];

/// Words fingerprinted: enough for any instruction scaffold and a stable SimHash.
const MAX_TOKENS: usize = 64;

/// Skeleton symbols hashed at each end of a prompt.
const SKELETON_END: usize = 8;
/// Instruction words an end needs to count as a scaffold.
const MIN_SCAFFOLD_WORDS: u8 = 3;
/// Longest reasoning phrase, in words.
pub const MAX_PHRASE_WORDS: usize = 8;
/// Bytes at the end of a long prompt searched for reasoning phrases ("... Think step by step.").
const TAIL_BYTES: usize = 256;
const SLOT: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Struct,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexiconError {
    #[error("reasoning phrase `{0}` has no words")]
    Empty(String),
    #[error("reasoning phrase `{0}` has more than {MAX_PHRASE_WORDS} words")]
    TooLong(String),
    #[error("the reasoning lexicon has too many distinct phrase endings ({0} words in all)")]
    TooMany(usize),
}

/// Computes [`PromptFingerprint`]s in one pass over the words of a prompt. Cheap to share
/// between threads.
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    /// Reasoning phrases as word-hash sequences, keyed by their last word.
    phrases: IntMap<u64, Vec<Vec<u64>>>,
    classes: ClassTable,
}

/// Word hash -> class bits for the few hundred words that have any: a two-choice (cuckoo)
/// table small enough to stay in L1 cache. A word is in one of two slots, both read on every
/// lookup and compared without a branch, so the lookup never stalls the word loop on a
/// mispredicted probe. Each slot holds the hash with its low three bits replaced by the class
/// bits (never zero, so zero marks an empty slot).
#[derive(Debug, Clone)]
struct ClassTable {
    slots: Vec<u64>,
}

impl ClassTable {
    const SLOTS: usize = 1024;
    const MASK: u64 = Self::SLOTS as u64 - 1;

    #[inline]
    fn first(h: u64) -> usize {
        (h >> 54) as usize
    }

    #[inline]
    fn second(h: u64) -> usize {
        ((h >> 20) & Self::MASK) as usize
    }

    /// `None`: the words do not fit (far more than a lexicon holds).
    fn new(words: &IntMap<u64, ClassBits>) -> Option<Self> {
        let mut slots = vec![0u64; Self::SLOTS];
        let mut sorted: Vec<(u64, ClassBits)> = words.iter().map(|(&h, &b)| (h, b)).collect();
        sorted.sort_unstable();
        for (h, bits) in sorted {
            let mut entry = (h & !7) | u64::from(bits & 7);
            let mut at = Self::first(h);
            // Standard cuckoo insertion: take the slot, move its occupant to its other one.
            for _ in 0..Self::SLOTS {
                std::mem::swap(&mut slots[at], &mut entry);
                if entry == 0 {
                    break;
                }
                at = if Self::first(entry) == at {
                    Self::second(entry)
                } else {
                    Self::first(entry)
                };
            }
            if entry != 0 {
                return None;
            }
        }
        Some(Self { slots })
    }

    #[inline]
    fn get(&self, h: u64) -> ClassBits {
        let a = self.slots[Self::first(h)];
        let b = self.slots[Self::second(h)];
        let pick = |v: u64| if (v ^ h) & !7 == 0 { v & 7 } else { 0 };
        (pick(a) | pick(b)) as ClassBits
    }
}

/// Bit 0: struct word, bit 1: stop word, bit 2: last word of a reasoning phrase. One lookup
/// per word answers all three.
type ClassBits = u8;
const ENDS_PHRASE: ClassBits = 4;

/// The murmur3 64-bit finaliser: a bijection that spreads every input bit over the output, so
/// every bit of a word hash is usable by SimHash.
#[inline]
fn word_hash(h: u64) -> u64 {
    let mut x = h;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Word bytes: ASCII letters and digits, and every byte of a multi-byte UTF-8 character (so
/// any language tokenises). The reference definition; [`Words`] computes it eight bytes at a
/// time.
#[inline]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

// Eight bytes at a time (SWAR): each byte of a u64 is a lane; a predicate's result is the
// lane's high bit.
const LANES_LO: u64 = 0x0101_0101_0101_0101;
const LANES_HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each lane whose 7-bit value `v` (high bits clear) is within `lo..=hi`.
#[inline]
fn lanes_in(v: u64, lo: u8, hi: u8) -> u64 {
    let ge = v.wrapping_add(LANES_LO * u64::from(0x80 - lo));
    let gt = v.wrapping_add(LANES_LO * u64::from(0x7f - hi));
    ge & !gt & LANES_HI
}

/// Lanes holding a word byte, as lane high bits.
#[inline]
fn word_lanes(x: u64) -> u64 {
    let v = x & !LANES_HI;
    let ascii = !x & LANES_HI;
    let alnum = lanes_in(v | (LANES_LO * 0x20), b'a', b'z') | lanes_in(v, b'0', b'9');
    (x & LANES_HI) | (alnum & ascii)
}

/// Lane high bits gathered into the low eight bits (lane k to bit k).
#[inline]
fn gather(lanes: u64) -> u64 {
    ((lanes >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Eight bytes of `b` from `at`, zero past its end (zero is not a word byte).
#[inline]
fn load8(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().expect("eight bytes")),
        None => {
            let mut buf = [0u8; 8];
            let tail = b.get(at..).unwrap_or(&[]);
            buf[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(buf)
        }
    }
}

/// Bit k set when byte `base + k` of `b` is a word byte.
#[inline]
fn block_mask(b: &[u8], base: usize) -> u64 {
    let mut m = 0u64;
    if let Some(block) = b.get(base..base + 64) {
        // A whole block: no bounds to check per word.
        for (k, w) in block.chunks_exact(8).enumerate() {
            let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
            m |= gather(word_lanes(x)) << (8 * k);
        }
    } else {
        for k in 0..8 {
            m |= gather(word_lanes(load8(b, base + 8 * k))) << (8 * k);
        }
    }
    m
}

/// Hash of the word `b[start..end]` with ASCII letters lowercased, and whether it is all
/// ASCII digits. Eight bytes per step.
#[inline]
fn hash_range(b: &[u8], start: usize, end: usize) -> (u64, bool) {
    let mut h = FNV_OFFSET ^ (end - start) as u64;
    let mut numeric = true;
    let mut k = start;
    loop {
        // 1..=8 bytes of the word in this step; `valid` keeps just those lanes.
        let n = (end - k).min(8);
        let valid = u64::MAX >> (64 - 8 * n);
        let x = load8(b, k) & valid;
        let v = x & !LANES_HI;
        let ascii = !x & LANES_HI;
        let upper = lanes_in(v, b'A', b'Z') & ascii;
        let digits = lanes_in(v, b'0', b'9') & ascii;
        numeric &= (digits & valid) == (LANES_HI & valid);
        h = (h ^ x ^ (upper >> 2)).wrapping_mul(FNV_PRIME);
        k += 8;
        if k >= end {
            break;
        }
        h = h.rotate_left(29);
    }
    (word_hash(h), numeric)
}

/// Words of a text: (hash of the lowercased word, all digits). Word boundaries come from a
/// bit mask of word bytes computed 64 bytes at a time.
struct Words<'a> {
    b: &'a [u8],
    /// Start of the 64-byte block `mask` describes.
    base: usize,
    /// Word bytes of that block not yet returned (bit k: byte `base + k`).
    mask: u64,
    /// Just past the last word returned (the end of the text once exhausted).
    i: usize,
}

impl Iterator for Words<'_> {
    type Item = (u64, bool);

    #[inline(always)]
    fn next(&mut self) -> Option<(u64, bool)> {
        let len = self.b.len();
        while self.mask == 0 {
            let next = self.base + 64;
            if next >= len {
                self.i = len;
                return None;
            }
            self.base = next;
            self.mask = block_mask(self.b, next);
        }
        let tz = self.mask.trailing_zeros();
        let start = self.base + tz as usize;
        let run = (!(self.mask >> tz)).trailing_zeros();
        let mut end = start + run as usize;
        if tz + run < 64 {
            self.mask &= u64::MAX << (tz + run);
        } else {
            // The word reaches the end of the block: follow it into the next ones.
            loop {
                let next = self.base + 64;
                if next >= len {
                    self.mask = 0;
                    break;
                }
                self.base = next;
                self.mask = block_mask(self.b, next);
                let run = (!self.mask).trailing_zeros();
                end += run as usize;
                if run < 64 {
                    self.mask &= u64::MAX << run;
                    break;
                }
            }
        }
        self.i = end;
        Some(hash_range(self.b, start, end))
    }
}

fn words(text: &[u8]) -> Words<'_> {
    Words {
        b: text,
        base: 0,
        mask: block_mask(text, 0),
        i: 0,
    }
}

fn hash_word(w: &str) -> u64 {
    words(w.as_bytes()).next().map_or(0, |(h, _)| h)
}

impl Fingerprinter {
    /// Builds a fingerprinter with the given reasoning lexicon (phrases of up to
    /// [`MAX_PHRASE_WORDS`] words, matched case-insensitively on word boundaries).
    pub fn new<S: AsRef<str>>(lexicon: &[S]) -> Result<Self, LexiconError> {
        let mut phrases: IntMap<u64, Vec<Vec<u64>>> = IntMap::default();
        for p in lexicon {
            let p = p.as_ref();
            let seq: Vec<u64> = words(p.as_bytes()).map(|(h, _)| h).collect();
            match seq.last() {
                None => return Err(LexiconError::Empty(p.to_string())),
                Some(_) if seq.len() > MAX_PHRASE_WORDS => {
                    return Err(LexiconError::TooLong(p.to_string()))
                }
                Some(&last) => phrases.entry(last).or_default().push(seq),
            }
        }
        let mut classes: IntMap<u64, ClassBits> = IntMap::default();
        for &last in phrases.keys() {
            *classes.entry(last).or_default() |= ENDS_PHRASE;
        }
        for w in STRUCT_WORDS {
            *classes.entry(hash_word(w)).or_default() |= 1;
        }
        for w in STOP_WORDS {
            *classes.entry(hash_word(w)).or_default() |= 2;
        }
        let table = ClassTable::new(&classes).ok_or(LexiconError::TooMany(classes.len()))?;
        Ok(Self {
            phrases,
            classes: table,
        })
    }

    #[inline]
    fn bits(&self, h: u64) -> ClassBits {
        self.classes.get(h)
    }

    fn class(bits: ClassBits) -> Option<Class> {
        // A word that is both (e.g. "by", "the") acts as a stop word inside slots and as
        // scaffold between instruction words; see `Skeleton`.
        if bits & 2 != 0 {
            Some(Class::Stop)
        } else if bits & 1 != 0 {
            Some(Class::Struct)
        } else {
            None
        }
    }

    /// Whether the words ending with `h` (most recent last in `recent`) complete a phrase.
    #[inline]
    fn completes_phrase(&self, recent: &[u64; MAX_PHRASE_WORDS], n: usize, h: u64) -> bool {
        let Some(cands) = self.phrases.get(&h) else {
            return false;
        };
        cands.iter().any(|p| {
            p.len() <= n
                && p.iter()
                    .rev()
                    .enumerate()
                    .all(|(k, w)| recent[(n - 1 - k) % MAX_PHRASE_WORDS] == *w)
        })
    }

    /// Whether the words ending at `words.last()` complete a phrase.
    #[inline]
    fn ends_phrase(&self, words: &[u64]) -> bool {
        let Some(cands) = words.last().and_then(|h| self.phrases.get(h)) else {
            return false;
        };
        cands.iter().any(|p| words.ends_with(p))
    }

    /// Fingerprints a prompt text.
    pub fn fingerprint(&self, text: &str) -> PromptFingerprint {
        let bytes = text.as_bytes();
        // First the words' hashes and classes, in a loop without data-dependent branches (the
        // hashing of one word overlaps the next); then the votes and the skeleton.
        let mut raw = [0u64; MAX_TOKENS];
        let mut sym = [0u64; MAX_TOKENS];
        let mut class = [0 as ClassBits; MAX_TOKENS];
        let mut n_tokens = 0usize;
        let mut it = words(bytes);
        while n_tokens < MAX_TOKENS {
            let Some((h, numeric)) = it.next() else {
                break;
            };
            raw[n_tokens] = h;
            // Numbers have no class and vote as one symbol.
            sym[n_tokens] = if numeric { SLOT } else { h };
            class[n_tokens] = self.bits(h) & ClassBits::from(!numeric).wrapping_neg();
            n_tokens += 1;
        }
        let mut votes = BitVotes::default();
        let mut head = Skeleton::default();
        let mut reasoning = false;
        let mut prev_hash = 0u64;
        // With a tail to read, the head skeleton is wanted only for its opening symbols;
        // past them only instruction words are counted.
        let has_tail = it.i < bytes.len();
        let mut more_struct = 0u8;
        for k in 0..n_tokens {
            let bits = class[k];
            if bits & ENDS_PHRASE != 0 && !reasoning {
                reasoning = self.ends_phrase(&raw[..=k]);
            }
            let h = sym[k];
            // SimHash over word bigrams (the first word alone), numbers included: "solve 17 x
            // 23" and "solve 18 x 24" get different answers, so they are different prompts
            // (the template skeleton, below, collapses them).
            let w = raw[k];
            votes.add(if prev_hash == 0 {
                w
            } else {
                w.rotate_left(17) ^ prev_hash.wrapping_mul(0x2545_f491_4f6c_dd1d)
            });
            prev_hash = w;
            if has_tail && head.first_len == SKELETON_END {
                more_struct += u8::from(Self::class(bits) == Some(Class::Struct));
            } else {
                head.push(h, Self::class(bits));
            }
        }
        // A long prompt's closing instructions are past the words read: read its tail too.
        let tail = if has_tail {
            let mut start = it.i.max(bytes.len().saturating_sub(TAIL_BYTES));
            while start < bytes.len() && start > it.i && is_word_byte(bytes[start - 1]) {
                start += 1;
            }
            let mut n = 0usize;
            let mut recent = [0u64; MAX_PHRASE_WORDS];
            let mut tail = Skeleton::default();
            for (h, numeric) in words(&bytes[start..]) {
                recent[n % MAX_PHRASE_WORDS] = h;
                n += 1;
                let bits = if numeric { 0 } else { self.bits(h) };
                if bits & ENDS_PHRASE != 0 {
                    reasoning = reasoning || self.completes_phrase(&recent, n, h);
                }
                let h = if numeric { SLOT } else { h };
                tail.push(h, Self::class(bits));
            }
            tail
        } else {
            head.clone()
        };
        PromptFingerprint {
            simhash: votes.finish(),
            template: head.head_hash(),
            template_tail: tail.tail_hash(),
            reasoning,
            scaffold: head.struct_words.saturating_add(more_struct),
            text: true,
        }
    }

    /// Fingerprint from an upstream 64-bit SimHash when the text is absent: the top 24 bits
    /// stand in for the template (near-duplicate scaffolds share them more often than not).
    pub fn from_simhash(simhash: u64) -> PromptFingerprint {
        PromptFingerprint {
            simhash,
            template: word_hash(simhash >> 40) | 1,
            template_tail: 0,
            reasoning: false,
            scaffold: 0,
            text: false,
        }
    }
}

/// The template skeleton of a word stream: instruction words in order, each run of content
/// words, numbers and the function words among them collapsed to one slot. Function words
/// between two instruction words stay ("step by step"). Keeps the first and the last
/// [`SKELETON_END`] symbols.
#[derive(Clone, Default)]
struct Skeleton {
    first: [u64; SKELETON_END],
    first_len: usize,
    first_struct: u8,
    last: [u64; SKELETON_END],
    last_is_struct: [bool; SKELETON_END],
    total: usize,
    /// Function words after the last instruction word, kept only if another follows.
    pending: [u64; 4],
    pending_len: usize,
    in_slot: bool,
    struct_words: u8,
}

impl Skeleton {
    #[inline]
    fn emit(&mut self, sym: u64, is_struct: bool) {
        if self.first_len < SKELETON_END {
            self.first[self.first_len] = sym;
            self.first_len += 1;
            self.first_struct += u8::from(is_struct);
        }
        self.last[self.total % SKELETON_END] = sym;
        self.last_is_struct[self.total % SKELETON_END] = is_struct;
        self.total += 1;
    }

    #[inline]
    fn push(&mut self, h: u64, class: Option<Class>) {
        match class {
            Some(Class::Struct) => {
                if !self.in_slot {
                    for k in 0..self.pending_len {
                        self.emit(self.pending[k], false);
                    }
                }
                self.pending_len = 0;
                self.in_slot = false;
                self.struct_words = self.struct_words.saturating_add(1);
                self.emit(h, true);
            }
            Some(Class::Stop) => {
                if !self.in_slot && self.pending_len < self.pending.len() {
                    self.pending[self.pending_len] = h;
                    self.pending_len += 1;
                }
            }
            None => {
                if !self.in_slot {
                    self.pending_len = 0;
                    self.emit(SLOT, false);
                    self.in_slot = true;
                }
            }
        }
    }

    fn hash(syms: impl Iterator<Item = u64>, tag: u64) -> u64 {
        let mut t = FNV_OFFSET ^ tag;
        for s in syms {
            t = (t ^ s).wrapping_mul(FNV_PRIME);
        }
        word_hash(t) | 1
    }

    fn head_hash(&self) -> u64 {
        if self.first_struct < MIN_SCAFFOLD_WORDS {
            return 0;
        }
        Self::hash(self.first[..self.first_len].iter().copied(), 1)
    }

    fn tail_hash(&self) -> u64 {
        let n = self.total.min(SKELETON_END);
        let start = self.total - n;
        let structs = (start..self.total)
            .filter(|&k| self.last_is_struct[k % SKELETON_END])
            .count();
        if structs < usize::from(MIN_SCAFFOLD_WORDS) {
            return 0;
        }
        Self::hash((start..self.total).map(|k| self.last[k % SKELETON_END]), 2)
    }
}

/// SimHash bit votes as bit-sliced counters: plane k holds bit k of the count of every bit
/// position, so adding a hash is a seven-step ripple carry over whole words (no per-bit loop,
/// no table), and the majority test is one bit-sliced comparison. Counts up to
/// [`BitVotes::MAX`] votes; a fingerprint casts at most [`MAX_TOKENS`].
#[derive(Default)]
struct BitVotes {
    planes: [u64; 7],
    total: u32,
}

const _: () = assert!(MAX_TOKENS as u32 <= BitVotes::MAX);

impl BitVotes {
    const MAX: u32 = (1 << 7) - 1;

    #[inline]
    fn add(&mut self, h: u64) {
        debug_assert!(self.total < Self::MAX, "too many votes");
        let mut carry = h;
        for plane in &mut self.planes {
            let c = *plane & carry;
            *plane ^= carry;
            carry = c;
        }
        self.total += 1;
    }

    /// Bit `b` is set when more than half of the hashes had it set.
    fn finish(self) -> u64 {
        // count > total / 2 (rounded down), compared plane by plane from the top.
        let half = self.total / 2;
        let mut greater = 0u64;
        let mut equal = u64::MAX;
        for k in (0..self.planes.len()).rev() {
            let t = if (half >> k) & 1 == 1 { u64::MAX } else { 0 };
            greater |= equal & self.planes[k] & !t;
            equal &= !(self.planes[k] ^ t);
        }
        greater
    }
}

/// Parses the contract's 16-hex-digit `prompt_simhash`.
pub fn parse_simhash(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Hamming distance between two SimHashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprinter {
        Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon builds")
    }

    #[test]
    fn template_survives_changing_slots_and_numbers() {
        let f = fp();
        let a = f.fingerprint("You are an expert in chemistry. Solve the following problem and think step by step, showing every intermediate reasoning step.\n\nProblem: A tank holds 40 litres of the acid solution at 12% concentration.");
        let b = f.fingerprint("You are an expert in medieval history. Solve the following problem and think step by step, showing every intermediate reasoning step.\n\nProblem: Why did the 1204 siege of Constantinople succeed?");
        assert_eq!(a.template, b.template);
        assert!(a.reasoning && b.reasoning);
        let c = f.fingerprint("Q: Problem 83294: Explain aromaticity and derive its main result.\n\nAnswer with a detailed derivation. Provide a detailed chain-of-thought explanation, then the final answer.");
        let d = f.fingerprint("Q: Problem 76061: Find the remainder when 16^190 is divided by 13.\n\nAnswer with a detailed derivation. Provide a detailed chain-of-thought explanation, then the final answer.");
        assert_eq!(
            c.template_tail, d.template_tail,
            "a fixed closing identifies the template"
        );
        assert_ne!(c.template_tail, 0);
        assert_ne!(a.simhash, b.simhash);
    }

    #[test]
    fn different_prompts_have_different_templates() {
        let f = fp();
        let a = f.fingerprint("Write a short poem about autumn leaves falling in the park");
        let b = f.fingerprint(
            "Classify the sentiment of the following review as positive or negative: great phone",
        );
        assert_ne!(a.template, b.template);
        assert!(!a.reasoning && !b.reasoning);
    }

    #[test]
    fn near_duplicates_have_close_simhashes() {
        let f = fp();
        let a = f.fingerprint("please summarize the quarterly report for the board meeting tomorrow morning with key numbers and risks highlighted for review");
        let b = f.fingerprint("please summarize the quarterly report for the board meeting tomorrow morning with key numbers and risks highlighted for reviews");
        let c = f.fingerprint("how do I center a div in css without flexbox using only margins");
        assert!(hamming(a.simhash, b.simhash) < hamming(a.simhash, c.simhash));
        assert!(hamming(a.simhash, b.simhash) <= 12);
    }

    #[test]
    fn lexicon_is_case_insensitive_and_configurable() {
        let f = Fingerprinter::new(&["show me the derivation"]).expect("builds");
        assert!(
            f.fingerprint("Please SHOW ME THE DERIVATION of x")
                .reasoning
        );
        assert!(!f.fingerprint("think step by step").reasoning);
    }

    #[test]
    fn bit_votes_match_the_plain_definition() {
        let hashes: Vec<u64> = (0..1000u64).map(word_hash).collect();
        for n in [1usize, 2, 3, 4, 63, 64, 100, 126, 127] {
            let mut v = BitVotes::default();
            let mut counts = [0i32; 64];
            for &h in &hashes[..n] {
                v.add(h);
                for (bit, c) in counts.iter_mut().enumerate() {
                    *c += if (h >> bit) & 1 == 1 { 1 } else { -1 };
                }
            }
            let plain =
                counts.iter().enumerate().fold(
                    0u64,
                    |acc, (bit, &c)| if c > 0 { acc | 1 << bit } else { acc },
                );
            assert_eq!(v.finish(), plain, "n = {n}");
        }
    }

    #[test]
    fn reasoning_phrases_match_on_word_boundaries_anywhere() {
        let f = fp();
        assert!(f.fingerprint("Let's think step-by-step about it").reasoning);
        assert!(f.fingerprint("please SHOW YOUR REASONING").reasoning);
        assert!(!f.fingerprint("the stepbystep guide").reasoning);
        let long = format!("{} Think step by step.", "lorem ipsum dolor ".repeat(400));
        assert!(
            f.fingerprint(&long).reasoning,
            "phrase at the end of a long prompt"
        );
        assert!(Fingerprinter::new(&["one two three four five six seven eight nine"]).is_err());
        assert!(Fingerprinter::new(&["  "]).is_err());
    }

    /// The plain byte-by-byte definition of the words of a text.
    fn reference_words(b: &[u8]) -> Vec<(u64, bool, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if !is_word_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_word_byte(b[i]) {
                i += 1;
            }
            let lower: Vec<u8> = b[start..i].iter().map(u8::to_ascii_lowercase).collect();
            let (h, numeric) = hash_range(&lower, 0, lower.len());
            assert_eq!(numeric, b[start..i].iter().all(u8::is_ascii_digit));
            out.push((h, numeric, i));
        }
        out
    }

    fn fast_words(b: &[u8]) -> Vec<(u64, bool, usize)> {
        let mut it = words(b);
        let mut out = Vec::new();
        while let Some((h, numeric)) = it.next() {
            out.push((h, numeric, it.i));
        }
        assert_eq!(it.i, b.len());
        out
    }

    #[test]
    fn words_match_the_byte_by_byte_definition() {
        for t in [
            "",
            " ",
            "a",
            "Hello, World! 123 abc123 ÉCOLE école",
            &"x".repeat(64),
            &"x".repeat(65),
            &format!("{} {}", "y".repeat(63), "z".repeat(200)),
            &format!("{}!", "w".repeat(127)),
            "@[`{ AZ az 09 /:",
        ] {
            assert_eq!(
                fast_words(t.as_bytes()),
                reference_words(t.as_bytes()),
                "{t:?}"
            );
        }
        for b in 0..=255u8 {
            let text = [b'a', b, b'z'];
            assert_eq!(fast_words(&text), reference_words(&text), "byte {b:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn words_match_the_definition_on_any_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            proptest::prop_assert_eq!(fast_words(&b), reference_words(&b));
        }

        #[test]
        fn words_match_the_definition_on_wordy_text(s in "[a-zA-Z0-9 .\\n]{0,400}") {
            proptest::prop_assert_eq!(fast_words(s.as_bytes()), reference_words(s.as_bytes()));
        }
    }

    #[test]
    fn class_table_finds_exactly_its_words() {
        let mut words: IntMap<u64, ClassBits> = IntMap::default();
        for k in 0..400u64 {
            words.insert(word_hash(k) & !7, (k % 7 + 1) as ClassBits);
        }
        let table = ClassTable::new(&words).expect("fits");
        for (&h, &bits) in &words {
            assert_eq!(table.get(h), bits);
            assert_eq!(table.get(h | 5), bits, "the low bits are not compared");
        }
        for k in 400..100_000u64 {
            assert_eq!(table.get(word_hash(k) & !7), 0);
        }
    }

    #[test]
    fn simhash_parsing() {
        assert_eq!(parse_simhash("00000000000000ff"), Some(255));
        assert_eq!(parse_simhash("xyz"), None);
        assert_eq!(parse_simhash("0000000000000000ff"), None);
    }

    #[test]
    fn odd_text_does_not_panic() {
        let f = fp();
        for t in ["", "   ", "ééé ñ 漢字", "1 2 3 4", &"a".repeat(100_000)] {
            let _ = f.fingerprint(t);
        }
    }
}
