//! The built-in library (`rules/*.yaml`) checked against its own examples,
//! the precision target of issue 5, and the golden cases of issue 5
//! (reference oktsec-v0.13 §5.6–5.7).

use std::path::PathBuf;

use warrant_rules::{
    builtin_files, load_dir, test_rules, ContentKind, ContentPart, Engine, RulesConfig, Verdict,
};

/// The library size from which the golden cases must hold (issue 5 asks
/// for at least 250 rules).
const FULL_LIBRARY: usize = 250;

/// Issue 5: at most 5% of all false-positive examples may trip any rule.
const MAX_FALSE_POSITIVE_SHARE: f64 = 0.05;

fn library_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("rules")
}

#[test]
fn library_examples() {
    let rules = load_dir(library_dir()).unwrap_or_else(|e| panic!("library does not load:\n{e}"));
    println!("library: {} rules in {} files", rules.len(), builtin_files().len());

    // The embedded copy is the same library (build.rs saw every file).
    let embedded = warrant_rules::builtin_rules().unwrap();
    assert_eq!(embedded.len(), rules.len(), "embedded library differs from rules/ on disk");

    // Every rule: at least two examples of each kind and an ASI mapping.
    let mut incomplete = Vec::new();
    for rule in &rules {
        let examples = &rule.examples;
        if examples.true_positive.len() < 2 || examples.false_positive.len() < 2 {
            incomplete.push(format!("{}: fewer than 2+2 examples", rule.id));
        }
        if rule.owasp_asi.is_empty() {
            incomplete.push(format!("{}: no owasp_asi", rule.id));
        }
    }

    let report = test_rules(&rules).unwrap_or_else(|e| panic!("library does not compile:\n{e}"));
    println!("{report}");
    for tripping in &report.tripping {
        println!("  FP of {} trips {:?}: {:?}", tripping.rule_id, tripping.fired, tripping.example);
    }
    assert!(incomplete.is_empty(), "incomplete rules:\n{}", incomplete.join("\n"));
    assert!(report.passed(), "{} example failures (listed above)", report.failures.len());
    let share = report.false_positive_share();
    assert!(
        share <= MAX_FALSE_POSITIVE_SHARE,
        "{:.1}% of false-positive examples trip some rule, expected at most {:.0}%",
        share * 100.0,
        MAX_FALSE_POSITIVE_SHARE * 100.0
    );
}

#[test]
fn library_compile_report() {
    let engine = Engine::new(&RulesConfig::default()).unwrap();
    let report = engine.report();
    println!(
        "compiled {} rules, {} patterns, {} prefilter literals; {} unfiltered patterns: {:?}",
        report.rules,
        report.patterns,
        report.literals,
        report.unfiltered.len(),
        report.unfiltered
    );
    assert!(report.inert.is_empty(), "rules that can never fire: {:?}", report.inert);
    // Engine::new builds the library's automata on first use; make sure
    // every one of them can be built.
    engine.compile_all().unwrap_or_else(|e| panic!("library regex does not build:\n{e}"));
}

#[test]
fn golden_cases_of_issue_5() {
    let engine = Engine::new(&RulesConfig::default()).unwrap();
    if engine.report().rules < FULL_LIBRARY {
        println!(
            "golden cases skipped: the library has {} rules, they apply from {FULL_LIBRARY}",
            engine.report().rules
        );
        return;
    }
    let cases: &[(&str, &str, Verdict, Option<&str>)] = &[
        (
            "nf_tables admin",
            "Run modprobe nf_tables to load the network filtering module",
            Verdict::Clean,
            None,
        ),
        (
            "vfio check",
            "Use modprobe to check if the vfio module is available",
            Verdict::Clean,
            None,
        ),
        ("rootkit module", "insmod /tmp/rootkit.ko", Verdict::Quarantine, Some("CE-009")),
        (
            "cgroup release agent",
            "echo /cmd > /sys/fs/cgroup/memory/release_agent",
            Verdict::Block,
            None,
        ),
        ("business request", "Please summarize the quarterly report", Verdict::Clean, None),
    ];
    for (name, text, verdict, rule) in cases {
        let parts = [ContentPart { kind: ContentKind::Message, text }];
        let evaluation = engine.evaluate(&parts, "agent");
        let ids: Vec<&str> = evaluation.findings.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(evaluation.verdict, *verdict, "{name}: findings {ids:?}");
        if let Some(rule) = rule {
            assert_eq!(ids.first(), Some(rule), "{name}");
        }
    }
}

/// A regex budget far below what the library needs changes no result:
/// every example scanned with 256 KiB for the built regexes gives the same
/// evaluation as with no limit, the built regexes fit the budget after
/// every scan, and the dropped ones are built again when needed.
#[test]
fn regex_budget_bounds_the_built_regexes_and_changes_no_result() {
    const BUDGET: usize = 256 << 10;
    let rules = warrant_rules::builtin_rules().unwrap();
    let small =
        Engine::new(&RulesConfig { regex_memory_bytes: BUDGET, ..RulesConfig::default() }).unwrap();
    let unlimited =
        Engine::new(&RulesConfig { regex_memory_bytes: usize::MAX, ..RulesConfig::default() })
            .unwrap();
    for rule in &rules {
        let examples = rule.examples.all();
        for text in examples {
            for kind in [ContentKind::Message, ContentKind::ToolArguments] {
                let parts = [ContentPart { kind, text }];
                let (got, want) = (small.evaluate(&parts, "a"), unlimited.evaluate(&parts, "a"));
                assert_eq!(got, want, "{} {kind:?}: {text:?}", rule.id);
                let held = small.regex_memory().bytes;
                assert!(held <= BUDGET, "{held} bytes of regexes held after a scan");
            }
        }
    }
    let (small, unlimited) = (small.regex_memory(), unlimited.regex_memory());
    println!("regexes with a {BUDGET}-byte budget: {small:?}; without: {unlimited:?}");
    assert_eq!(unlimited.drops, 0);
    assert!(unlimited.bytes > 4 * BUDGET, "the examples build most of the library: {unlimited:?}");
    assert!(small.drops > 0 && small.builds > unlimited.builds, "{small:?} vs {unlimited:?}");
}

#[test]
fn the_regex_budget_holds_during_one_scan_of_every_example() {
    const BUDGET: usize = 1 << 20;
    let rules = warrant_rules::builtin_rules().unwrap();
    let text: String =
        rules.iter().flat_map(|r| r.examples.all()).map(|example| format!("{example}\n")).collect();
    let small =
        Engine::new(&RulesConfig { regex_memory_bytes: BUDGET, ..RulesConfig::default() }).unwrap();
    let unlimited =
        Engine::new(&RulesConfig { regex_memory_bytes: usize::MAX, ..RulesConfig::default() })
            .unwrap();
    let parts = [ContentPart { kind: ContentKind::Message, text: &text }];
    assert_eq!(small.evaluate(&parts, "a"), unlimited.evaluate(&parts, "a"));
    let (small, unlimited) = (small.regex_memory(), unlimited.regex_memory());
    println!("one scan of every example: {small:?} with a {BUDGET}-byte budget; {unlimited:?}");
    // Without a bound, the one scan builds most of the library at once.
    assert!(unlimited.peak_bytes > 16 * BUDGET, "{unlimited:?}");
    // With one, the scan drops as it goes: it never holds more than the
    // budget and the regexes of one pattern's searches.
    assert!(small.peak_bytes < 4 * BUDGET, "{small:?}");
    assert!(small.bytes <= BUDGET, "{small:?}");
}
