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

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use nohash_hasher::IntMap;
use xxhash_rust::xxh3::xxh3_64;

/// What the detectors know of a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptFingerprint {
    /// 64-bit SimHash; 0 when the event carried neither text nor `prompt_simhash`.
    pub simhash: u64,
    /// Template skeleton hash; 0 when unknown.
    pub template: u64,
    /// The prompt asks for step-by-step reasoning.
    pub reasoning: bool,
    /// Instruction words in the skeleton: long scaffolds mark machine-built prompts.
    pub scaffold: u8,
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

const MAX_TOKENS: usize = 512;
const MAX_SKELETON: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Struct,
    Stop,
}

/// Computes [`PromptFingerprint`]s. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    reasoning: AhoCorasick,
    classes: IntMap<u64, ClassBits>,
}

/// Bit 0: struct word, bit 1: stop word.
type ClassBits = u8;

impl Fingerprinter {
    /// Builds a fingerprinter with the given reasoning lexicon.
    pub fn new<S: AsRef<str>>(lexicon: &[S]) -> Result<Self, aho_corasick::BuildError> {
        let reasoning = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(lexicon.iter().map(|s| s.as_ref()))?;
        let mut classes: IntMap<u64, ClassBits> = IntMap::default();
        for w in STRUCT_WORDS {
            *classes.entry(xxh3_64(w.as_bytes())).or_default() |= 1;
        }
        for w in STOP_WORDS {
            *classes.entry(xxh3_64(w.as_bytes())).or_default() |= 2;
        }
        Ok(Self { reasoning, classes })
    }

    fn class(&self, h: u64) -> Option<Class> {
        match self.classes.get(&h) {
            // A word that is both (e.g. "by", "the") acts as a stop word inside slots and as
            // scaffold between instruction words; see `fingerprint`.
            Some(b) if b & 2 != 0 => Some(Class::Stop),
            Some(_) => Some(Class::Struct),
            None => None,
        }
    }

    /// Fingerprints a prompt text.
    pub fn fingerprint(&self, text: &str) -> PromptFingerprint {
        let bytes = text.as_bytes();
        let reasoning = self.reasoning.is_match(bytes);

        let mut counts = [0i32; 64];
        let mut prev_hash = 0u64;
        let mut n_tokens = 0usize;
        let mut skel: [u64; MAX_SKELETON] = [0; MAX_SKELETON];
        let mut skel_len = 0usize;
        // Pending function words after the last instruction word: kept only if another
        // instruction word follows before any slot.
        let mut pending: [u64; 4] = [0; 4];
        let mut pending_len = 0usize;
        let mut in_slot = false;
        let mut scaffold = 0u8;
        const SLOT: u64 = 0x9e37_79b9_7f4a_7c15;

        let mut buf = [0u8; 32];
        let mut i = 0;
        while i < bytes.len() && n_tokens < MAX_TOKENS {
            // Skip separators.
            while i < bytes.len() && !bytes[i].is_ascii_alphanumeric() && bytes[i] < 0x80 {
                i += 1;
            }
            if i >= bytes.len() {
                break;
            }
            let start = i;
            let mut numeric = true;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] >= 0x80) {
                numeric &= bytes[i].is_ascii_digit();
                i += 1;
            }
            let tok = &bytes[start..i];
            let lower: &[u8] = if tok.len() <= buf.len() {
                for (d, s) in buf.iter_mut().zip(tok) {
                    *d = s.to_ascii_lowercase();
                }
                &buf[..tok.len()]
            } else {
                tok
            };
            let h = if numeric { SLOT } else { xxh3_64(lower) };
            n_tokens += 1;

            // SimHash over unigrams and bigrams.
            add_hash(&mut counts, h);
            if prev_hash != 0 {
                add_hash(
                    &mut counts,
                    h.rotate_left(17) ^ prev_hash.wrapping_mul(0x2545_f491_4f6c_dd1d),
                );
            }
            prev_hash = h;

            // Template skeleton.
            if skel_len >= MAX_SKELETON {
                continue;
            }
            match if numeric { None } else { self.class(h) } {
                Some(Class::Struct) => {
                    if !in_slot {
                        for &p in &pending[..pending_len] {
                            if skel_len < MAX_SKELETON {
                                skel[skel_len] = p;
                                skel_len += 1;
                            }
                        }
                    }
                    pending_len = 0;
                    in_slot = false;
                    scaffold = scaffold.saturating_add(1);
                    if skel_len < MAX_SKELETON {
                        skel[skel_len] = h;
                        skel_len += 1;
                    }
                }
                Some(Class::Stop) => {
                    if !in_slot && pending_len < pending.len() {
                        pending[pending_len] = h;
                        pending_len += 1;
                    }
                }
                None => {
                    if !in_slot {
                        pending_len = 0;
                        skel[skel_len] = SLOT;
                        skel_len += 1;
                        in_slot = true;
                    }
                }
            }
        }
        let mut simhash = 0u64;
        for (bit, c) in counts.iter().enumerate() {
            if *c > 0 {
                simhash |= 1 << bit;
            }
        }
        let template = if skel_len >= 3 {
            let mut hb = [0u8; MAX_SKELETON * 8];
            for (k, s) in skel[..skel_len].iter().enumerate() {
                hb[k * 8..k * 8 + 8].copy_from_slice(&s.to_le_bytes());
            }
            xxh3_64(&hb[..skel_len * 8]) | 1
        } else {
            0
        };
        PromptFingerprint {
            simhash,
            template,
            reasoning,
            scaffold,
        }
    }

    /// Fingerprint from an upstream 64-bit SimHash when the text is absent: the top 24 bits
    /// stand in for the template (near-duplicate scaffolds share them more often than not).
    pub fn from_simhash(simhash: u64) -> PromptFingerprint {
        PromptFingerprint {
            simhash,
            template: xxh3_64(&(simhash >> 40).to_le_bytes()) | 1,
            reasoning: false,
            scaffold: 0,
        }
    }
}

#[inline]
fn add_hash(counts: &mut [i32; 64], h: u64) {
    for (bit, c) in counts.iter_mut().enumerate() {
        *c += (((h >> bit) & 1) as i32) * 2 - 1;
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
