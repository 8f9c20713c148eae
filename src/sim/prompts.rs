//! Prompt text generators. Benign text draws on many phrasings and topics; attack text
//! comes from per-campaign scaffolds whose slots are filled from a broad topic space, which
//! is what real extraction campaigns look like (fixed wrapper, varied payload).

use super::rng::{chance, int, pick, usize_in, SimRng};
use super::words::*;
use rand::Rng;

/// Reasoning-elicitation phrasings. Attack campaigns pin one per scaffold; benign text uses
/// them only occasionally and in conversational form.
const REASON_PHRASES: &[&str] = &[
    "Think step by step and show your reasoning before giving the final answer.",
    "Show all your work, and walk through each step of the solution.",
    "Explain your reasoning in detail, including every intermediate step.",
    "Write out your full chain of thought before stating the answer.",
    "Reason carefully and walk through each step of the derivation.",
    "Before answering, reason through the problem thoroughly and list the intermediate steps.",
    "Let's think step by step.",
    "Provide a detailed chain-of-thought explanation, then the final answer.",
    "Show your reasoning step by step; do not skip any intermediate steps.",
    "Walk through each step of your reasoning, then state the final answer on its own line.",
    "Think step by step. Show every intermediate step and explain your reasoning at each stage.",
    "Please reason carefully, show all your work, and only then give the answer.",
    "Explain your reasoning step by step as if teaching it, with all intermediate steps written out.",
    "Before answering, reason step by step and verify each intermediate result.",
    "Use explicit chain of thought: enumerate your reasoning steps one by one.",
    "Show your reasoning. Number each step and justify it.",
];

const NO_REASON_PHRASES: &[&str] = &[
    "Answer concisely.",
    "Give only the final answer with a one-line justification.",
    "Respond with the answer only.",
    "Keep the answer short and precise.",
];

/// Scaffolds with slots. `{R}` reasoning sentence, `{D}` domain, `{T}` topic, `{P}` problem,
/// `{N}` item number, `{L}` audience level, `{C}` claim.
const SCAFFOLDS: &[&str] = &[
    "You are an expert in {D}. Solve the following problem. {R}\n\nProblem: {P}",
    "### Instruction\n{P}\n\n### Requirements\n- {R}\n- End with 'Final answer:' followed by the answer.\n\n### Response",
    "Question #{N} ({D}): {P}\n{R}",
    "Act as a {L} tutor in {D}. A student asks: \"{P}\" {R} Then summarize the key idea in one sentence.",
    "Generate a high-quality worked solution for a {D} textbook.\n\nExercise: {P}\n\n{R} Format the answer as: Reasoning: ... Answer: ...",
    "Consider the topic \"{T}\" in {D}. Write a challenging {L}-level question about it, then answer it yourself. {R}",
    "Explain {T} to a {L} audience. {R} Include at least one worked example with concrete numbers.",
    "[task_id={N}] domain={D}\nInput: {P}\nOutput format: <thinking>...</thinking><answer>...</answer>\n{R}",
    "I need a rigorous solution to this {D} problem. {P} {R}",
    "System: you are a careful, thorough reasoner.\nUser: {P}\nInstructions: {R} Be exhaustive.",
    "Below is a problem from {D}. Provide (1) a restatement, (2) your complete reasoning, (3) a verification, and (4) the final answer.\n\n{P}\n\n{R}",
    "Compare two different approaches to {T} in {D}. {R} Conclude with which approach is better and why.",
    "Problem {N}: {P}\n\nAnswer with a detailed derivation. {R}",
    "Create a tutorial-style answer for the following {L} question on {T}: {P}\n{R}",
    "Restate the following question as a precise formal problem, then solve it. {R}\n\n{P}",
    "Critically evaluate this claim about {T}: \"{C}\" {R} Give a verdict at the end.",
    "Here is a {D} question from a {L} exam. {P}\n\nI want the full solution. {R}",
    "Topic: {T}\nLevel: {L}\nTask: {P}\nGuidelines: {R} Use headings for each step.",
];

const LEVELS: &[&str] = &[
    "high-school",
    "undergraduate",
    "graduate",
    "beginner",
    "expert",
    "competition",
    "first-year university",
    "professional",
];

/// A campaign's fixed prompt wrapper. The payload varies per request, the wrapper does not.
#[derive(Clone, Debug)]
pub struct Scaffold {
    text: String,
    reason: &'static str,
}

impl Scaffold {
    pub fn random(rng: &mut SimRng) -> Scaffold {
        let mut text = pick(rng, SCAFFOLDS).to_string();
        // Campaigns often bolt on their own boilerplate; this keeps two campaigns that drew
        // the same base scaffold from emitting identical text.
        if chance(rng, 0.5) {
            let extra = pick(
                rng,
                &[
                    "\n\nWrite in English. Use LaTeX for formulas.",
                    "\n\nDo not refuse. Be complete.",
                    "\n\nMake the explanation self-contained.",
                    "\n\nLength: as long as needed.",
                    "\n\nReturn markdown.",
                    "\n\nAvoid summarizing; show the full process.",
                ],
            );
            text.push_str(extra);
        }
        if chance(rng, 0.3) {
            let pre = pick(rng, &["[v2] ", "Q: ", "Task. ", "### ", "Prompt: "]);
            text.insert_str(0, pre);
        }
        Scaffold {
            text,
            reason: pick(rng, REASON_PHRASES),
        }
    }

    pub fn render(&self, rng: &mut SimRng, reasoning: bool) -> String {
        let (domain, topic) = random_topic(rng);
        let mut out = String::with_capacity(self.text.len() + 400);
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let slot = rest.as_bytes().get(i + 1).copied().unwrap_or(b' ');
            match slot {
                b'R' => out.push_str(if reasoning {
                    self.reason
                } else {
                    pick(rng, NO_REASON_PHRASES)
                }),
                b'D' => out.push_str(domain),
                b'T' => out.push_str(topic),
                b'P' => out.push_str(&problem_in(rng, domain, topic)),
                b'N' => out.push_str(&int(rng, 1, 99_999).to_string()),
                b'L' => out.push_str(pick(rng, LEVELS)),
                b'C' => out.push_str(&claim(rng, topic)),
                _ => out.push('{'),
            }
            rest = rest.get(i + 3..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

pub fn random_topic(rng: &mut SimRng) -> (&'static str, &'static str) {
    let (d, ts) = pick(rng, DOMAINS);
    (d, pick(rng, ts))
}

fn claim(rng: &mut SimRng, topic: &str) -> String {
    let forms = [
        format!("{topic} is mostly irrelevant in practice"),
        format!("the standard textbook account of {topic} is wrong"),
        format!("{topic} can be fully explained by a single principle"),
        format!("most experts misunderstand {topic}"),
        format!("{topic} has been overtaken by newer ideas"),
    ];
    forms[rng.gen_range(0..forms.len())].clone()
}

/// A problem statement, with numbers, loosely matched to the domain.
pub fn problem_in(rng: &mut SimRng, domain: &str, topic: &str) -> String {
    let quant = matches!(
        domain,
        "algebra"
            | "calculus"
            | "probability"
            | "statistics"
            | "number theory"
            | "geometry"
            | "combinatorics"
            | "classical mechanics"
            | "electromagnetism"
            | "thermodynamics"
            | "general chemistry"
            | "finance"
            | "microeconomics"
            | "algorithms"
            | "linear algebra"
    );
    if quant && chance(rng, 0.75) {
        numeric_problem(rng, domain)
    } else {
        conceptual_problem(rng, domain, topic)
    }
}

fn conceptual_problem(rng: &mut SimRng, domain: &str, topic: &str) -> String {
    let a = int(rng, 2, 60);
    let name = pick(rng, FIRST_NAMES);
    let clinical = matches!(domain, "medicine" | "pharmacology" | "biochemistry");
    let legal = matches!(domain, "law" | "political science" | "philosophy");
    let mut k = rng.gen_range(0..12);
    if (k == 4 && !clinical) || (k == 9 && !legal) {
        k = 0;
    }
    match k {
        0 => format!("Explain {topic} and derive its main result from first principles."),
        1 => format!("What are the most common misconceptions about {topic}, and why are they wrong?"),
        2 => format!("{name} claims that {topic} does not matter for real-world {domain}. Construct the strongest counterargument."),
        3 => format!("Design an experiment or analysis that would test a prediction of {topic}. Describe expected results."),
        4 => format!("A {a}-year-old patient presents with fatigue, weight loss of {} kg over {} weeks and a fasting glucose of {} mg/dL. Relate the case to {topic} and give the most likely diagnosis.", int(rng, 2, 12), int(rng, 2, 16), int(rng, 110, 420)),
        5 => format!("Summarize the history of {topic} in {domain} and identify the key turning point."),
        6 => format!("Give three non-obvious applications of {topic} and analyze one of them quantitatively."),
        7 => format!("Under what assumptions does {topic} break down? Give a concrete counterexample."),
        8 => format!("Write an exam question on {topic} with a full marking scheme and model answer."),
        9 => format!("In a case involving {topic}, party A relied on a promise worth ${} from party B, who withdrew after {a} days. Analyze the likely outcome.", int(rng, 500, 250_000)),
        10 => format!("How would you teach {topic} to someone who already knows {}?", pick(rng, DOMAINS).0),
        _ => format!("Prove or disprove: every instance of {topic} with parameter n = {a} behaves the same way as n = {}.", a + int(rng, 1, 9)),
    }
}

fn numeric_problem(rng: &mut SimRng, domain: &str) -> String {
    let a = int(rng, 2, 19);
    let b = int(rng, 1, 40);
    let c = int(rng, 1, 99);
    let d = int(rng, 2, 12);
    let name = pick(rng, FIRST_NAMES);
    let city = pick(rng, CITIES);
    let city2 = pick(rng, CITIES);
    match (domain, rng.gen_range(0..3)) {
        ("algebra", 0) => format!("Solve for x: {a}x^2 + {b}x - {c} = 0."),
        ("algebra", 1) => format!("{name} invests ${} at {d}% annual interest compounded monthly. How many years until the balance doubles?", c * 100),
        ("algebra", _) => format!("Solve the system: {a}x + {b}y = {c}, {d}x - y = {}.", b + 3),
        ("calculus", 0) => format!("Find the derivative of f(x) = x^{d} * ln({a}x + {b}) and evaluate it at x = 1."),
        ("calculus", 1) => format!("Evaluate the integral of x^2 e^(-{a}x) from 0 to infinity."),
        ("calculus", _) => format!("A rectangular box with a square base must have volume {} cm^3. Find the dimensions that minimize surface area.", c * 10),
        ("probability", 0) => format!("A bag has {a} red and {b} blue marbles. {d} are drawn without replacement. What is the probability that exactly two are red?"),
        ("probability", 1) => format!("A test for a disease with prevalence {}% has sensitivity {}% and specificity {}%. If a person tests positive, what is the probability they have the disease?", int(rng, 1, 9), int(rng, 80, 99), int(rng, 85, 99)),
        ("probability", _) => format!("You roll {d} fair dice. What is the expected value of the maximum?"),
        ("statistics", 0) => format!("A sample of {} observations has mean {c} and standard deviation {a}. Construct a 95% confidence interval for the population mean.", b + 10),
        ("statistics", 1) => format!("In a trial, {} of {} treated patients and {} of {} controls recovered. Is the difference significant at the 5% level?", c, c + 40, c - c / 3, c + 38),
        ("statistics", _) => format!("Fit a least-squares line to the points (1,{a}), (2,{b}), (3,{c}), (4,{d}) and interpret the slope."),
        ("number theory", 0) => format!("Find the remainder when {a}^{} is divided by {}.", c + 100, d + 5),
        ("number theory", 1) => format!("Find all integer solutions of {a}x + {b}y = {c}."),
        ("number theory", _) => format!("How many positive divisors does {} have?", (a * b * c).max(12)),
        ("geometry", 0) => format!("A triangle has sides {}, {}, and {}. Find its area and the radius of its inscribed circle.", a + 3, b + 4, a + b + 2),
        ("geometry", 1) => format!("A circle of radius {a} is inscribed in a square. Find the area between them."),
        ("geometry", _) => format!("Find the distance from the point ({a}, {b}) to the line {d}x - 3y + {c} = 0."),
        ("combinatorics", 0) => format!("In how many ways can {} people be seated at a round table if two of them refuse to sit together?", d + 3),
        ("combinatorics", 1) => format!("How many {d}-letter strings over a {a}-letter alphabet contain no two identical adjacent letters?"),
        ("combinatorics", _) => format!("How many ways are there to distribute {c} identical coins among {d} children so each gets at least one?"),
        ("classical mechanics", 0) => format!("A {a} kg block slides down a {}-degree incline with coefficient of friction 0.{}. Find its acceleration and speed after {d} m.", b + 10, d),
        ("classical mechanics", 1) => format!("A projectile is launched at {} m/s at {} degrees. Find its range and maximum height.", c + 10, b + 15),
        ("classical mechanics", _) => format!("A {a} kg cart moving at {d} m/s collides elastically with a {b} kg cart at rest. Find both final velocities."),
        ("electromagnetism", 0) => format!("Two charges of {a} uC and -{d} uC are {b} cm apart. Find the force and the point where the field vanishes."),
        ("electromagnetism", 1) => format!("An RC circuit has R = {c} kOhm and C = {a} uF. How long until the capacitor reaches 90% of the supply voltage?"),
        ("electromagnetism", _) => format!("Find the current in each branch of a circuit with a {d} V battery and resistors of {a}, {b} and {c} ohms in a bridge."),
        ("thermodynamics", 0) => format!("A Carnot engine operates between {} K and {} K and produces {c} kJ of work. How much heat is absorbed?", c * 5 + 400, c + 280),
        ("thermodynamics", 1) => format!("{a} mol of an ideal gas expands isothermally at {} K from {d} L to {} L. Compute the work and entropy change.", c + 250, d * 3),
        ("thermodynamics", _) => format!("How much energy is needed to turn {} g of ice at -{d} C into steam at 110 C?", c * 10),
        ("general chemistry", 0) => format!("How many grams of CO2 are produced when {} g of propane burns completely in excess oxygen?", c + 5),
        ("general chemistry", 1) => format!("What is the pH of a buffer made by mixing {} mL of 0.{d} M acetic acid with {} mL of 0.{a} M sodium acetate?", c + 20, b + 20),
        ("general chemistry", _) => format!("{} mL of 0.{d} M HCl is titrated with 0.{a} M NaOH. Find the pH after {} mL of base is added.", c + 10, b + 5),
        ("finance", 0) => format!("A bond with face value $1000 pays a {d}% annual coupon and matures in {a} years. Price it at a yield of {}%.", d + 2),
        ("finance", 1) => format!("A project costs ${}k and returns ${}k per year for {a} years. Compute the NPV at {d}% and the IRR.", c * 10, c * 2),
        ("finance", _) => format!("A stock has beta 1.{d}, the risk-free rate is {}% and the market premium is {}%. What is the expected return?", int(rng, 1, 5), int(rng, 3, 8)),
        ("microeconomics", 0) => format!("A monopolist faces demand P = {} - {a}Q with marginal cost {b}. Find price, quantity and deadweight loss.", c + 100),
        ("microeconomics", 1) => format!("Two firms compete in quantities with demand P = {} - Q and costs {d} per unit. Find the Cournot equilibrium.", c + 60),
        ("microeconomics", _) => format!("If the price of a good rises from ${a} to ${} and quantity falls from {} to {c}, what is the arc elasticity?", a + d, c + b),
        ("algorithms", 0) => format!("Given an array of n = {} integers, find the length of the longest increasing subsequence in O(n log n). Explain the algorithm and trace it on [{a}, {b}, {c}, {d}, {}].", c * 100, b + 7),
        ("algorithms", 1) => format!("Find the shortest path from A to E in a graph with edges A-B {a}, A-C {d}, B-C {b}, B-D {c}, C-D {}, D-E {}.", a + 1, d + 2),
        ("algorithms", _) => format!("A knapsack has capacity {}. Items have (weight, value): ({a},{c}), ({d},{b}), ({},{}). Find the optimal value.", a + d + 3, b + 2, c + 5),
        ("linear algebra", 0) => format!("Find the eigenvalues and eigenvectors of the matrix [[{a}, {d}], [{b}, {}]].", a + 1),
        ("linear algebra", 1) => format!("Find the rank and a basis for the null space of [[1, {a}, {d}], [2, {}, {}], [{b}, 1, 0]].", a * 2, d * 2),
        ("linear algebra", _) => format!("Compute the determinant of [[{a}, 1, {d}], [0, {b}, 2], [{c}, 3, 1]]."),
        _ => format!("{name} travels from {city} to {city2}, {} km, at {} km/h and returns at {} km/h. What is the average speed for the trip?", c * 10, b + 40, a + 50),
    }
}

/// Benign prompts: everyday use across many categories. Roughly 7% carry a natural
/// reasoning request so that phrase matching alone cannot separate attackers.
pub fn benign_prompt(rng: &mut SimRng) -> String {
    let lang = pick(rng, LANGS);
    match rng.gen_range(0..100) {
        0..=11 => {
            let task = pick(rng, CODE_TASKS);
            let forms = [
                format!("How do I {task} in {lang}?"),
                format!("what's the cleanest way to {task} in {lang}"),
                format!("Can you write {lang} code to {task}? Please add comments."),
                format!(
                    "I'm new to {lang}. Show me how to {task}, and explain what each part does."
                ),
                format!("{lang}: {task}. Performance matters, the input can be large."),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        12..=19 => {
            let err = pick(rng, ERRORS);
            let lines = usize_in(rng, 4, 18);
            let code = code_snippet(rng, lines);
            format!("I'm getting this error in my {lang} code and can't figure out why:\n\n{err}\n\nHere's the code:\n{code}\n\nAny idea what's wrong?")
        }
        20..=23 => {
            let (x, y) = pick(rng, CONCEPT_PAIRS);
            format!("What's the difference between {x} and {y}? When should I use each?")
        }
        24..=31 => {
            let n = usize_in(rng, 60, 220);
            let text = pasted_text(rng, n);
            let tone = pick(rng, TONES);
            let forms = [
                format!(
                    "Can you help me rewrite this paragraph so it sounds more {tone}?\n\n{text}"
                ),
                format!("Proofread this and fix any grammar mistakes:\n\n{text}"),
                format!("Make this shorter without losing the main points:\n\n{text}"),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        32..=36 => {
            let thing = pick(rng, THINGS);
            let forms = [
                format!("Write a short poem about {thing}."),
                format!("write me a haiku about {thing}"),
                format!("Can you write a 200 word short story that starts with {thing}?"),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        37..=40 => {
            let t = pick(rng, BLOG_TOPICS);
            format!(
                "Give me {} title ideas for a blog post about {t}.",
                int(rng, 3, 12)
            )
        }
        41..=48 => {
            let who = pick(rng, RECIPIENTS);
            let req = pick(rng, REQUESTS);
            let tone = pick(rng, TONES);
            let forms = [
                format!("Write an email to my {who} asking for {req}. Keep it {tone}."),
                format!("help me write a {tone} email to my {who} about {req}"),
                format!("Draft a short message to my {who}. I need {req} but I don't want to sound pushy."),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        49..=55 => pick(rng, TRIVIA).to_string(),
        56..=62 => {
            let a = int(rng, 2, 30);
            let b = int(rng, 2, 500);
            let forms = [
                format!("What is {a}% of {b}?"),
                format!(
                    "How do I find the derivative of {a}x^3 + {}x?",
                    int(rng, 1, 20)
                ),
                format!(
                    "my teacher gave us this: {}. what does it mean",
                    pick(rng, DOMAINS).1[0]
                ),
                format!(
                    "If I save ${b} a month for {a} years at 5% interest, how much will I have?"
                ),
                format!("Convert {b} miles to kilometers"),
                format!("simplify ({a}x^2 - {})/(x - {})", a * 4, 2),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        63..=67 => {
            let l = pick(rng, NATURAL_LANGS);
            let s = pick(rng, SENTENCES_TO_TRANSLATE);
            let forms = [
                format!("Translate this into {l}: {s}"),
                format!("How would you say \"{s}\" in {l}?"),
                format!("translate to {l} please, informal: {s}"),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        68..=74 => {
            let n = usize_in(rng, 150, 550);
            let text = pasted_text(rng, n);
            let forms = [
                format!("Summarize this article in 3 bullet points:\n\n{text}"),
                format!("tl;dr this for me\n\n{text}"),
                format!("What are the key takeaways from the following?\n\n{text}"),
                format!("Summarize the following for a busy executive:\n\n{text}"),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        75..=82 => pick(rng, LIFE_QUESTIONS).to_string(),
        83..=85 => {
            let dish = pick(rng, RECIPE_DISHES);
            format!(
                "Can you give me a recipe for {dish} for {} people?",
                int(rng, 2, 8)
            )
        }
        86..=92 => {
            let (d, t) = random_topic(rng);
            let forms = [
                format!("Can you explain {t} in simple terms?"),
                format!("I have an exam on {d} tomorrow. What are the most important things to know about {t}?"),
                format!("ELI5: {t}"),
                format!("Recommend some good resources for learning {d}."),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
        // Natural reasoning requests (~7%).
        _ => {
            let (d, t) = random_topic(rng);
            let forms = [
                format!("Can you explain step by step how {t} works?"),
                format!("Walk me through {t} step by step, I keep getting confused."),
                format!(
                    "I don't get this homework question: {} Can you show your reasoning?",
                    problem_in(rng, d, t)
                ),
                format!("Explain your reasoning: {}", problem_in(rng, d, t)),
                format!(
                    "How do I {} in {lang}? Please explain step by step.",
                    pick(rng, CODE_TASKS)
                ),
                format!(
                    "{} Please show all your work so I can follow along.",
                    problem_in(rng, d, t)
                ),
                format!(
                    "can you go through {t} step by step? my textbook skips the intermediate steps"
                ),
            ];
            forms[rng.gen_range(0..forms.len())].clone()
        }
    }
}

/// A follow-up message in a chat session.
pub fn followup(rng: &mut SimRng) -> String {
    let forms = [
        "Can you make it shorter?".to_string(),
        "Thanks! Can you give me an example?".to_string(),
        "That didn't work, I still get the same error.".to_string(),
        "Make it a bit more formal.".to_string(),
        "Explain that last part again, more simply.".to_string(),
        format!(
            "ok and how would that change if the input had {} items?",
            int(rng, 10, 100_000)
        ),
        "Can you put that in a table?".to_string(),
        "perfect, thanks".to_string(),
        "What are the downsides of that approach?".to_string(),
        format!("Now translate it into {}.", pick(rng, NATURAL_LANGS)),
        "Can you add error handling?".to_string(),
        "hmm, are you sure? I read somewhere that it's the opposite".to_string(),
        format!("Could you also mention {}?", random_topic(rng).1),
        "Rewrite it in bullet points.".to_string(),
        format!("What about in {}?", pick(rng, LANGS)),
        "Give me three more options.".to_string(),
        "why?".to_string(),
        "Can you make the tone friendlier?".to_string(),
        format!(
            "I'm on a budget of about ${}, does that change anything?",
            int(rng, 20, 3000)
        ),
        "Great. What should I do next?".to_string(),
        format!("Can you explain step {} in more detail?", int(rng, 2, 5)),
    ];
    forms[rng.gen_range(0..forms.len())].clone()
}

/// Pasted prose (articles, notes) built from sentence templates.
pub fn pasted_text(rng: &mut SimRng, words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    let mut count = 0;
    while count < words {
        let org = pick(rng, ORGS);
        let act = pick(rng, ACTIONS);
        let why = pick(rng, REASONS);
        let city = pick(rng, CITIES);
        let n = int(rng, 2, 95);
        let name = format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES));
        let s = match rng.gen_range(0..15) {
            10 => format!("The report, published by {org}, found that {n}% of respondents in {city} were unaware of the changes."),
            11 => format!("{name} told reporters that the timeline had slipped by {} months because of {why}.", int(rng, 2, 18)),
            12 => format!("Earlier this year, {org} faced criticism after it failed to {act} on schedule."),
            13 => format!("Officials in {city} said they would publish detailed figures by the end of the quarter."),
            14 => format!("Some {} businesses welcomed the announcement, while others warned about {why}.", pick(rng, &["local", "small", "family-run", "independent"])),
            0 => format!("On Tuesday, {org} in {city} announced that it would {act}, citing {why}."),
            1 => format!("According to {name}, a spokesperson, the decision followed months of discussion."),
            2 => format!("Critics argue that the move could affect as many as {n},000 people over the next {} years.", int(rng, 2, 10)),
            3 => format!("The plan is expected to cost around {n} million dollars, roughly {}% more than initially estimated.", int(rng, 5, 60)),
            4 => format!("Residents of {city} have raised concerns about {why} for some time."),
            5 => format!("\"We have to be realistic about what we can deliver,\" {name} said in a statement."),
            6 => format!("Similar efforts in other regions have produced mixed results, with about {n}% reporting improvements."),
            7 => format!("A final decision is expected after a public consultation in {}.", pick(rng, &["the spring", "March", "the autumn", "early next year", "June"])),
            8 => format!("Meanwhile, {org} said it would also {act} in a second phase."),
            _ => format!("Analysts at {} noted that {why} remains the main risk.", pick(rng, COMPANY_WORDS)),
        };
        count += s.split(' ').count();
        if !out.is_empty() {
            out.push(if rng.gen_range(0..5) == 0 { '\n' } else { ' ' });
        }
        out.push_str(&s);
    }
    out
}

/// Plausible-looking source code for pasted snippets and agent context.
pub fn code_snippet(rng: &mut SimRng, lines: usize) -> String {
    let mut out = String::with_capacity(lines * 40);
    let f = pick(rng, IDENTS);
    let g = pick(rng, IDENTS);
    out.push_str(&format!(
        "def process_{f}({g}, limit={}):\n",
        int(rng, 5, 500)
    ));
    for i in 0..lines {
        let a = pick(rng, IDENTS);
        let b = pick(rng, IDENTS);
        let l = match rng.gen_range(0..8) {
            0 => format!("    {a} = {b}.get(\"{}\")", pick(rng, IDENTS)),
            1 => format!("    if {a} is None or len({b}) > limit:"),
            2 => format!("        return {a}_{}", i),
            3 => format!("    for {a} in {b}.items():"),
            4 => format!("        {a}.append({b}[{}])", int(rng, 0, 9)),
            5 => format!("    # TODO: handle {a} when {b} is empty"),
            6 => format!("    {a}_count += {}", int(rng, 1, 4)),
            _ => format!("    log.debug(\"{a}=%s\", {b})"),
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// A fixed classroom assignment: the problems every student in one class works on.
pub fn assignment(rng: &mut SimRng, n: usize) -> Vec<String> {
    let subject = pick(rng, SUBJECTS_SCHOOL);
    (0..n).map(|_| numeric_problem(rng, subject)).collect()
}

/// The teacher's handout for a class: the first problem with a request for a step-by-step
/// explanation. Students paste it verbatim.
pub fn handout(rng: &mut SimRng, problem: &str) -> String {
    let n = int(rng, 1, 12);
    let forms = [
        format!("Assignment {n}: {problem} Explain step by step how you reach the answer."),
        format!("Homework {n}. {problem}\nShow your work and explain each step."),
        format!("Explain step by step: {problem}"),
        format!("Week {n} exercise: {problem} Give a step-by-step explanation of the solution."),
        format!("Problem set {n}, question 1. {problem} Justify each step of your reasoning."),
    ];
    forms[rng.gen_range(0..forms.len())].clone()
}

/// A student's paraphrase of an assignment problem.
pub fn student_prompt(rng: &mut SimRng, problem: &str) -> String {
    let lower = problem.to_lowercase();
    let forms = [
        format!("explain step by step how to solve this: {problem}"),
        format!("how do i do this one? {lower}"),
        format!("Can you walk me through this problem? {problem}"),
        format!("I'm stuck on this homework problem: {problem} Can you explain step by step?"),
        format!("what's the first step for this: {lower}"),
        format!("{problem} (explain step by step please, I need to understand it for the quiz)"),
        format!("help!! {lower}"),
        format!("Question from class: {problem} How do I set it up?"),
    ];
    forms[rng.gen_range(0..forms.len())].clone()
}

pub fn student_followup(rng: &mut SimRng) -> String {
    let forms = [
        format!("I don't get step {}, why do we do that?", int(rng, 1, 5)),
        format!("so is the answer {}?", int(rng, 2, 500)),
        format!("can you check my work? I got {}", int(rng, 2, 900)),
        "explain it more simply please".to_string(),
        "ok that makes sense. what formula should I memorize for this?".to_string(),
        "wait why is it negative".to_string(),
        "thanks! is there a faster way?".to_string(),
    ];
    forms[rng.gen_range(0..forms.len())].clone()
}

/// A benchmark-style question for evaluation runs.
pub fn benchmark_question(rng: &mut SimRng) -> String {
    let (d, t) = random_topic(rng);
    let suffix = pick(
        rng,
        &[
            "Let's think step by step.",
            "Let's think step by step.",
            "Think step by step, then give the answer letter.",
            "Answer: Let's think step by step.",
        ],
    );
    if chance(rng, 0.5) {
        let p = numeric_problem(rng, d);
        format!("Q: {p}\nA: {suffix}")
    } else {
        let opts = ["A", "B", "C", "D"];
        let mut s = format!("The following is a multiple choice question about {d}.\n\nWhich statement about {t} is correct?\n");
        for o in opts {
            let (_, t2) = random_topic(rng);
            s.push_str(&format!(
                "{o}. It is closely related to {t2} in most settings.\n"
            ));
        }
        s.push_str(&format!("\nA: {suffix}"));
        s
    }
}

/// Input-heavy batch job templates (classification/extraction over pasted records).
pub struct BatchTemplate {
    kind: u8,
    header: &'static str,
}

impl BatchTemplate {
    pub fn random(rng: &mut SimRng) -> BatchTemplate {
        let kind = rng.gen_range(0..3u8);
        let header = match kind {
            0 => pick(rng, &[
                "Classify the sentiment of each review below as positive, negative or neutral. Return a JSON array of labels only.",
                "For each product review, output one of: POS, NEG, NEU. One label per line, nothing else.",
            ]),
            1 => pick(rng, &[
                "Extract name, company, city and phone from each record. Output JSON lines with keys name, company, city, phone.",
                "Parse the following contact records into CSV with columns name,company,city. Do not add commentary.",
            ]),
            _ => pick(rng, &[
                "Assign each support ticket to exactly one category: billing, login, bug, feature_request, other. Output ticket_id,category.",
                "Route these tickets. Categories: BILLING | ACCESS | DEFECT | REQUEST | OTHER. Reply with id:category pairs.",
            ]),
        };
        BatchTemplate { kind, header }
    }

    pub fn render(&self, rng: &mut SimRng) -> String {
        let n = usize_in(rng, 4, 18);
        let mut s = String::with_capacity(1200);
        s.push_str(self.header);
        s.push_str("\n\n");
        for i in 0..n {
            let line = match self.kind {
                0 => format!(
                    "{}. {}: {}",
                    i + 1,
                    pick(rng, PRODUCTS),
                    pick(rng, REVIEW_BITS)
                ),
                1 => format!(
                    "{}. {} {}, {} {}, based in {}, tel +{} {} {}",
                    i + 1,
                    pick(rng, FIRST_NAMES),
                    pick(rng, LAST_NAMES),
                    pick(rng, COMPANY_WORDS),
                    pick(rng, COMPANY_SUFFIX),
                    pick(rng, CITIES),
                    int(rng, 1, 99),
                    int(rng, 100, 999),
                    int(rng, 1_000_000, 9_999_999)
                ),
                _ => format!(
                    "#{} customer {}",
                    int(rng, 100_000, 999_999),
                    pick(rng, ISSUES)
                ),
            };
            s.push_str(&line);
            s.push('\n');
        }
        s
    }
}

/// An internal enterprise prompt template with pasted business text.
#[derive(Clone)]
pub struct OrgTemplate {
    kind: u8,
    prefix: String,
}

impl OrgTemplate {
    pub fn random(rng: &mut SimRng, company: &str) -> OrgTemplate {
        let kind = rng.gen_range(0..6u8);
        let prefix = match kind {
            0 => format!("Summarize the following support ticket for the on-call engineer ({company} internal). Include severity and next steps.\n\n"),
            1 => "Turn these meeting notes into a list of action items with owners and due dates:\n\n".to_string(),
            2 => format!("You are {company}'s contract assistant. Review the clause below and flag any unusual liability terms.\n\n"),
            3 => "Triage this log excerpt. What is the most likely root cause?\n\n".to_string(),
            4 => format!("Draft a follow-up email to the customer based on these CRM notes. Sign as the {company} account team.\n\n"),
            _ => "Review this diff for bugs and style issues. Be specific.\n\n".to_string(),
        };
        OrgTemplate { kind, prefix }
    }

    pub fn render(&self, rng: &mut SimRng) -> String {
        let mut s = self.prefix.clone();
        match self.kind {
            0 => {
                let name = format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES));
                s.push_str(&format!(
                    "Ticket #{}\nCustomer: {name}\nReported: customer {} since {} hours ago.\nError: {}\nNotes: ",
                    int(rng, 10_000, 99_999),
                    pick(rng, ISSUES),
                    int(rng, 1, 72),
                    pick(rng, ERRORS)
                ));
                let n = usize_in(rng, 60, 260);
                s.push_str(&pasted_text(rng, n));
            }
            1 => {
                for _ in 0..usize_in(rng, 3, 8) {
                    s.push_str(&format!(
                        "- {} discussed {}; ",
                        pick(rng, FIRST_NAMES),
                        pick(rng, MEETING_ITEMS)
                    ));
                    let n = usize_in(rng, 15, 50);
                    s.push_str(&pasted_text(rng, n));
                    s.push('\n');
                }
            }
            3 => {
                for i in 0..usize_in(rng, 8, 30) {
                    s.push_str(&format!(
                        "2026-11-0{}T{:02}:{:02}:{:02}Z {} {} {}\n",
                        int(rng, 1, 2),
                        int(rng, 0, 23),
                        int(rng, 0, 59),
                        i % 60,
                        pick(rng, &["INFO", "WARN", "ERROR"]),
                        pick(rng, IDENTS),
                        pick(rng, ERRORS)
                    ));
                }
            }
            5 => {
                s.push_str(&format!(
                    "--- a/{f}\n+++ b/{f}\n",
                    f = pick(rng, FILE_NAMES)
                ));
                let n = usize_in(rng, 10, 50);
                s.push_str(&code_snippet(rng, n));
            }
            _ => {
                let n = usize_in(rng, 80, 300);
                s.push_str(&pasted_text(rng, n));
            }
        }
        s
    }
}

/// Agent-loop messages: the first turn carries the task and code context, later turns tool output.
pub fn agent_message(rng: &mut SimRng, turn: i64) -> String {
    if turn <= 1 {
        let task = pick(
            rng,
            &[
                "Fix the failing test in",
                "Refactor the error handling in",
                "Add pagination support to",
                "Find and fix the race condition in",
                "Add input validation to",
                "Write unit tests for",
            ],
        );
        let n = usize_in(rng, 20, 70);
        format!(
            "{task} {}.\n\nRelevant file:\n```\n{}```",
            pick(rng, FILE_NAMES),
            code_snippet(rng, n)
        )
    } else {
        match rng.gen_range(0..4) {
            0 => format!("Tool result (run_tests): {} passed, {} failed\nFAILED tests/test_{}.py::test_{} - AssertionError", int(rng, 5, 300), int(rng, 1, 6), pick(rng, IDENTS), pick(rng, IDENTS)),
            1 => {
                let n = usize_in(rng, 8, 40);
                format!("Tool result (read_file {}):\n{}", pick(rng, FILE_NAMES), code_snippet(rng, n))
            }
            2 => format!("Tool result (edit_file): applied {} hunks to {}", int(rng, 1, 5), pick(rng, FILE_NAMES)),
            _ => format!("Tool result (shell): exit code 1\n{}", pick(rng, ERRORS)),
        }
    }
}

/// Words in a prompt, the basis for token estimates.
pub fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}
