//! Reworded reasoning-eliciting prompts, as an adversary with a rewriting script sends them:
//! no two requests share a wrapper. The request for reasoning is composed from independent
//! choices (frame, verb, object, manner, answer clause, their order, the problem's place and
//! its label), drawn from vocabularies that mix instruction words with plain ones, so the
//! instruction-word skeleton at either end of a prompt rarely repeats.
//!
//! Also the fixed texts of honest look-alikes that do repeat exactly: documentation examples.

use super::prompts::{problem_in, random_topic};
use super::rng::{chance, int, pick, SimRng};
use rand::Rng;

const FRAMES: &[&str] = &[
    "",
    "Please",
    "Could you",
    "Can you",
    "I'd like you to",
    "I need you to",
    "Kindly",
    "Would you",
    "Help me:",
    "It would help if you would",
    "Your job:",
    "Go ahead and",
    "Try to",
    "Make sure to",
    "Be sure to",
    "Now",
    "I want you to",
    "Mind if you",
];

const VERBS: &[&str] = &[
    "walk me through",
    "lay out",
    "spell out",
    "break down",
    "go over",
    "detail",
    "unpack",
    "trace",
    "present",
    "take me through",
    "write out",
    "explain",
    "show",
    "describe",
    "narrate",
    "document",
    "set out",
    "work through",
    "outline",
    "reconstruct",
    "give",
    "provide",
    "list",
    "sketch",
];

const OBJECTS: &[&str] = &[
    "the logic",
    "each stage",
    "your thinking",
    "the derivation",
    "how you get there",
    "the working",
    "the intermediate results",
    "every step",
    "your line of argument",
    "the full solution path",
    "your reasoning",
    "the thought process",
    "each move you make",
    "the argument",
    "how the answer follows",
    "the calculation",
    "all the steps",
    "the method",
    "what you do at each point",
    "the justification for every stage",
    "the chain of inference",
    "each deduction",
];

const MANNERS: &[&str] = &[
    "",
    "carefully",
    "slowly",
    "in order",
    "one piece at a time",
    "thoroughly",
    "in full",
    "step by step",
    "without skipping anything",
    "in detail",
    "from the beginning",
    "patiently",
    "line by line",
    "stage by stage",
    "methodically",
    "explicitly",
    "in plain words",
    "as a numbered sequence",
];

const ANSWER_CLAUSES: &[&str] = &[
    "",
    "then give the result",
    "and finish with the answer",
    "ending with the answer on its own line",
    "and box the final answer",
    "and state what you conclude at the end",
    "before you commit to a result",
    "prior to the conclusion",
    "and only then the answer",
    "then say which option is right",
    "and close with a one-line verdict",
    "and report the number you land on",
    "then check it",
    "and verify it at the end",
];

const LABELS: &[&str] = &[
    "",
    "Problem:",
    "Here it is:",
    "The question:",
    "Exercise.",
    "Item:",
    "Q.",
    "Consider this.",
    "Task:",
    "Case:",
    "From my notes:",
    "This one:",
    "Puzzle:",
    ">",
    "--",
    "Prompt.",
];

const OPENERS: &[&str] = &[
    "",
    "Hi!",
    "Quick one.",
    "Hey,",
    "I'm preparing for an exam.",
    "I keep getting this wrong.",
    "Studying tonight.",
    "Another one for you.",
    "Next.",
    "OK,",
    "Thanks in advance.",
    "For my notes:",
    "Something I came across:",
    "Curious about this.",
    "Not homework, just curious.",
    "Hello.",
];

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The request for reasoning, composed from independent choices.
fn reasoning_request(rng: &mut SimRng) -> String {
    let verb = pick(rng, VERBS);
    let obj = pick(rng, OBJECTS);
    let manner = pick(rng, MANNERS);
    let answer = pick(rng, ANSWER_CLAUSES);
    let frame = pick(rng, FRAMES);
    let mut parts: Vec<&str> = Vec::with_capacity(5);
    if !frame.is_empty() {
        parts.push(frame);
    }
    // Manner before or after the object.
    let before = chance(rng, 0.3) && !manner.is_empty();
    if before {
        parts.push(manner);
    }
    parts.push(verb);
    parts.push(obj);
    if !before && !manner.is_empty() {
        parts.push(manner);
    }
    if !answer.is_empty() {
        parts.push(answer);
    }
    let mut s = parts.join(" ");
    if frame.is_empty() || frame.ends_with(':') {
        s = capitalise(&s);
    }
    let end = if frame.starts_with("Could")
        || frame.starts_with("Can")
        || frame.starts_with("Would")
        || frame.starts_with("Mind")
    {
        "?"
    } else {
        pick(rng, &[".", ".", "!", ""])
    };
    s.push_str(end);
    s
}

/// A reworded reasoning-eliciting prompt about a broad topic: the harvest request of an
/// adversary who paraphrases every request.
pub fn reasoning_prompt(rng: &mut SimRng) -> String {
    let (d, t) = random_topic(rng);
    let problem = problem_in(rng, d, t);
    let req = reasoning_request(rng);
    let label = pick(rng, LABELS);
    let opener = pick(rng, OPENERS);
    let body = if label.is_empty() {
        problem
    } else {
        format!("{label} {problem}")
    };
    let sep = pick(rng, &[" ", "\n", "\n\n", " -- "]);
    let mut s = String::with_capacity(body.len() + req.len() + 40);
    if !opener.is_empty() {
        s.push_str(opener);
        s.push(' ');
    }
    match rng.gen_range(0..4) {
        0 | 1 => {
            s.push_str(&req);
            s.push_str(sep);
            s.push_str(&body);
        }
        2 => {
            s.push_str(&body);
            s.push_str(sep);
            s.push_str(&req);
        }
        _ => {
            // The request split around the problem.
            s.push_str(&body);
            s.push_str(sep);
            s.push_str(&req);
            let extra = reasoning_request(rng);
            s.push(' ');
            s.push_str(&extra);
        }
    }
    if chance(rng, 0.25) {
        // A trailing nonce some rewriting scripts add; digits collapse into one slot.
        s.push_str(&format!(" (ref {})", int(rng, 100, 99_999)));
    }
    s
}

/// The example prompts of a documentation quickstart: a few fixed texts, copied verbatim by
/// everyone who runs the example. Drawn per seed from plausible doc examples, several of which
/// ask for step-by-step reasoning.
pub fn docs_examples(rng: &mut SimRng) -> Vec<String> {
    const POOL: &[&str] = &[
        "Explain step by step how a hash map handles collisions, then give a short example in Python.",
        "Solve this problem step by step and show your reasoning: a train leaves at 3pm travelling at 80 km/h; another leaves the same station at 4pm at 100 km/h. When does the second train catch up?",
        "Think step by step: if a store sells pencils at 3 for $1, how much do 27 pencils cost? Show your work.",
        "Summarize the following text in one sentence: The quick brown fox jumps over the lazy dog. The dog did not react.",
        "Write a haiku about the ocean.",
        "Classify the sentiment of this review as positive, negative or neutral: \"The battery lasts all day and the screen is gorgeous.\"",
        "Let's think step by step. Roger has 5 tennis balls. He buys 2 more cans of tennis balls. Each can has 3 tennis balls. How many tennis balls does he have now?",
        "Explain your reasoning step by step: is 391 a prime number?",
        "Translate to French: Where is the nearest train station?",
        "You are a helpful assistant. Explain, step by step, how photosynthesis turns light into chemical energy.",
        "Extract the names and dates from this sentence as JSON: Marie Curie won the Nobel Prize in 1903 and again in 1911.",
        "Walk through each step: what is the derivative of x^3 * sin(x)?",
        "Hello, Claude",
        "Hello! Tell me a fun fact about octopuses.",
        "Write a Python function that checks whether a string is a palindrome. Explain your reasoning step by step.",
        "What is the capital of Australia? Answer in one word.",
    ];
    let n = int(rng, 3, 6) as usize;
    let idx = rand::seq::index::sample(rng, POOL.len(), n).into_vec();
    let mut v: Vec<String> = idx.iter().map(|i| POOL[*i].to_string()).collect();
    // At least one of a quickstart's examples asks for reasoning.
    if !v.iter().any(|s| s.contains("step by step")) {
        v[0] = POOL[rng.gen_range(0..3)].to_string();
    }
    v
}
