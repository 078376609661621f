//! Engine semantics, tested on the fixture rules in `tests/fixtures/engine.yaml`
//! so that they do not depend on the library in `rules/`.

// clippy.toml allows unwrap inside #[test] functions only; the helpers below
// are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use warrant_rules::{
    load_dir, load_file, test_rules, AgentRules, ContentKind, ContentPart, Encoding, Engine,
    Evaluation, Override, RuleError, RulesConfig, Severity, Verdict,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine.yaml")
}

fn config() -> RulesConfig {
    RulesConfig { builtin: false, ..RulesConfig::default() }
}

fn engine_with(config: &RulesConfig) -> Engine {
    Engine::from_rules(load_file(fixture()).unwrap(), config).unwrap()
}

fn engine() -> Engine {
    engine_with(&config())
}

fn scan_as(engine: &Engine, kind: ContentKind, text: &str) -> Evaluation {
    engine.evaluate(&[ContentPart { kind, text }], "agent")
}

fn scan(engine: &Engine, text: &str) -> Evaluation {
    scan_as(engine, ContentKind::Message, text)
}

/// `(rule id, line)` of each finding, in order.
fn hits(evaluation: &Evaluation) -> Vec<(&str, u32)> {
    evaluation.findings.iter().map(|f| (f.rule_id.as_str(), f.line)).collect()
}

#[test]
fn fixture_rules_pass_their_own_examples() {
    let rules = load_file(fixture()).unwrap();
    let report = test_rules(&rules).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.rules, 12);
    assert_eq!(report.true_positives, 24);
}

#[test]
fn self_test_reports_the_failing_rule_and_example() {
    let mut rules = load_file(fixture()).unwrap();
    rules[0].examples.true_positive.push("nothing to see".into());
    rules[0].examples.false_positive.push("deploy the payload".into());
    let report = test_rules(&rules).unwrap();
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    let file = fixture().display().to_string();
    assert_eq!(
        failures,
        vec![
            format!(
                "{file}:3: rule FX-ANY: true-positive example does not fire: \"nothing to see\""
            ),
            format!("{file}:3: rule FX-ANY: false-positive example fires: \"deploy the payload\""),
        ]
    );
    assert_eq!(report.tripping.len(), 1);
}

#[test]
fn load_dir_reads_the_fixture_directory() {
    let rules = load_dir(fixture().parent().unwrap()).unwrap();
    assert_eq!(rules.len(), 12);
}

#[test]
fn any_mode_reports_each_matching_line() {
    let evaluation = scan(&engine(), "deploy the payload\nfine\nthe Launch Sequence starts");
    assert_eq!(hits(&evaluation), vec![("FX-ANY", 1), ("FX-ANY", 3)]);
    assert_eq!(evaluation.findings[0].matched, "deploy the payload");
    assert_eq!(evaluation.findings[1].matched, "Launch Sequence");
    assert_eq!(evaluation.verdict, Verdict::Quarantine);
}

#[test]
fn all_mode_needs_every_pattern_and_reports_the_first() {
    let engine = engine();
    let evaluation = scan(&engine, "first modprobe foo\nok\ncopy it from /tmp/x");
    assert_eq!(hits(&evaluation), vec![("FX-ALL", 1)]);
    assert_eq!(evaluation.findings[0].matched, "modprobe  + /tmp/");
    let cases = [
        ("loader only", "Run modprobe nf_tables to load the network filtering module"),
        ("indicator only", "the rootkit.ko file was deleted"),
    ];
    for (name, text) in cases {
        assert_eq!(scan(&engine, text).verdict, Verdict::Clean, "{name}");
    }
}

#[test]
fn exclude_patterns_look_at_the_hit_line_and_three_before() {
    let engine = engine();
    let cases = [
        ("same line", "fire drill: launch sequence", vec![]),
        ("three lines before", "fire drill\n1\n2\nlaunch sequence", vec![]),
        ("four lines before", "fire drill\n1\n2\n3\nlaunch sequence", vec![("FX-ANY", 5)]),
        ("after the hit", "launch sequence\nfire drill", vec![("FX-ANY", 1)]),
    ];
    for (name, text, want) in cases {
        assert_eq!(hits(&scan(&engine, text)), want, "{name}");
    }
}

#[test]
fn findings_inside_code_fences_are_one_step_lower_in_messages_only() {
    let engine = engine();
    let fenced = "look:\n```sh\necho x > release_agent\n```";
    let evaluation = scan(&engine, fenced);
    assert_eq!(evaluation.findings[0].severity, Severity::High);
    assert_eq!(evaluation.verdict, Verdict::Quarantine);

    let plain = scan(&engine, "echo x > release_agent");
    assert_eq!(plain.findings[0].severity, Severity::Critical);
    assert_eq!(plain.verdict, Verdict::Block);

    let body = scan_as(&engine, ContentKind::Body, fenced);
    assert_eq!(body.verdict, Verdict::Block, "a body is not Markdown");
}

#[test]
fn base64_and_hex_blobs_are_decoded_and_rescanned() {
    let engine = engine();
    let b64 =
        base64::engine::general_purpose::STANDARD.encode("please now deploy the payload quietly");
    let evaluation = scan(&engine, &format!("hello\nrun this: {b64}\nthanks"));
    assert_eq!(hits(&evaluation), vec![("FX-ANY", 2)]);
    assert_eq!(evaluation.findings[0].decoded, Some(Encoding::Base64));
    assert_eq!(evaluation.findings[0].matched, "deploy the payload");

    let hex = hex::encode("echo /cmd > /sys/fs/cgroup/release_agent");
    let evaluation = scan(&engine, &format!("data={hex}"));
    assert_eq!(hits(&evaluation), vec![("FX-CRIT", 1)]);
    assert_eq!(evaluation.findings[0].decoded, Some(Encoding::Hex));
    assert_eq!(evaluation.verdict, Verdict::Block);
}

#[test]
fn one_finding_per_line_strongest_then_smallest_id() {
    let engine = engine();
    let evaluation = scan(&engine, "exfiltrate\nrelease_agent and exfiltrate\ntiebreak");
    assert_eq!(hits(&evaluation), vec![("FX-CRIT", 2), ("FX-MED", 1), ("FX-TIE-A", 3)]);
    let repeated = scan(&engine, "exfiltrate exfiltrate exfiltrate");
    assert_eq!(hits(&repeated), vec![("FX-MED", 1)]);
}

#[test]
fn severity_maps_to_verdict() {
    let engine = engine();
    let cases = [
        ("critical blocks", "release_agent", Verdict::Block),
        ("high quarantines", "deploy the payload", Verdict::Quarantine),
        ("medium flags", "exfiltrate", Verdict::Flag),
        ("low is clean", "lowly signal", Verdict::Clean),
        ("info is clean", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOP", Verdict::Clean),
        ("nothing is clean", "Please summarize the quarterly report", Verdict::Clean),
    ];
    for (name, text, verdict) in cases {
        assert_eq!(scan(&engine, text).verdict, verdict, "{name}");
    }
    assert_eq!(scan(&engine, "lowly signal").findings.len(), 1, "low findings are still listed");
}

#[test]
fn overrides_replace_the_severity_verdict() {
    let overrides: BTreeMap<String, Override> = [
        ("FX-LOW".to_string(), Override::Block),
        ("FX-CRIT".to_string(), Override::AllowAndFlag),
        ("FX-ANY".to_string(), Override::Ignore),
        ("FX-MED".to_string(), Override::Quarantine),
    ]
    .into();
    let engine = engine_with(&RulesConfig { overrides, ..config() });
    let cases = [
        ("low to block", "lowly signal", Verdict::Block),
        ("critical to flag", "release_agent", Verdict::Flag),
        ("ignored", "deploy the payload", Verdict::Clean),
        ("medium to quarantine", "exfiltrate", Verdict::Quarantine),
    ];
    for (name, text, verdict) in cases {
        assert_eq!(scan(&engine, text).verdict, verdict, "{name}");
    }
    assert!(scan(&engine, "deploy the payload").findings.is_empty());
    // The overridden low rule keeps its line against a medium rule.
    let shared = scan(&engine, "lowly signal, exfiltrate");
    assert_eq!(hits(&shared), vec![("FX-LOW", 1)]);
    assert_eq!(shared.verdict, Verdict::Block);
}

#[test]
fn disabled_rules_do_not_run() {
    let engine = engine_with(&RulesConfig { disabled: vec!["FX-CRIT".into()], ..config() });
    assert_eq!(scan(&engine, "release_agent").verdict, Verdict::Clean);
}

#[test]
fn block_categories_block_for_that_agent_only() {
    let agents = [(
        "billing-bot".to_string(),
        AgentRules { block_categories: vec!["fixture-exfil".into()] },
    )]
    .into();
    let engine = engine_with(&RulesConfig { agents, ..config() });
    let parts = [ContentPart { kind: ContentKind::Message, text: "exfiltrate" }];
    assert_eq!(engine.evaluate(&parts, "billing-bot").verdict, Verdict::Block);
    assert_eq!(engine.evaluate(&parts, "other-bot").verdict, Verdict::Flag);
}

#[test]
fn targets_select_content_kinds() {
    let engine = engine();
    let cases = [
        ("md rule on message", ContentKind::Message, "markdown marker", Some("FX-MD")),
        ("md rule on body", ContentKind::Body, "markdown marker", None),
        (
            "tool rule on arguments",
            ContentKind::ToolArguments,
            r#"{"c": "rm -rf /"}"#,
            Some("FX-TOOL"),
        ),
        ("tool rule on message", ContentKind::Message, "rm -rf /", None),
        ("untargeted rule on tool name", ContentKind::ToolName, "exfiltrate", Some("FX-MED")),
    ];
    for (name, kind, text, want) in cases {
        let evaluation = scan_as(&engine, kind, text);
        assert_eq!(evaluation.findings.first().map(|f| f.rule_id.as_str()), want, "{name}");
        if let Some(finding) = evaluation.findings.first() {
            assert_eq!(finding.kind, kind, "{name}");
        }
    }
}

#[test]
fn findings_are_kept_per_part() {
    let engine = engine();
    let parts = [
        ContentPart { kind: ContentKind::ToolName, text: "exfiltrate" },
        ContentPart { kind: ContentKind::ToolArguments, text: "release_agent" },
    ];
    let evaluation = engine.evaluate(&parts, "agent");
    assert_eq!(hits(&evaluation), vec![("FX-CRIT", 1), ("FX-MED", 1)]);
    assert_eq!(evaluation.findings[0].kind, ContentKind::ToolArguments);
}

#[test]
fn content_is_nfkc_normalised() {
    let evaluation = scan(&engine(), "ｅｃｈｏ ｘ ＞ ｒｅｌｅａｓｅ＿ａｇｅｎｔ");
    assert_eq!(hits(&evaluation), vec![("FX-CRIT", 1)]);
    assert_eq!(evaluation.findings[0].matched, "release_agent");
}

#[test]
fn patterns_with_spaces_match_across_lines() {
    let evaluation = scan(&engine(), "so\nignore\nprevious\n  orders now");
    assert_eq!(hits(&evaluation), vec![("FX-MULTI", 2)]);
}

#[test]
fn non_ascii_text_is_prefiltered_correctly() {
    let evaluation =
        scan(&engine(), "Grüße — bitte DEPLOY THE PAYLOAD über Nacht\nÉtat: exfiltrate");
    assert_eq!(hits(&evaluation), vec![("FX-ANY", 1), ("FX-MED", 2)]);
}

#[test]
fn matched_text_is_redacted_and_bounded() {
    let engine = engine();
    let evaluation = scan(&engine, "use AKIAIOSFODNN7EXAMPLE for it");
    assert_eq!(evaluation.findings[0].matched, "[REDACTED:AWS_ACCESS_KEY:len=20]");
    let shouting = "A".repeat(5000);
    let evaluation = scan(&engine, &shouting);
    assert_eq!(evaluation.findings[0].rule_id, "FX-NOLIT");
    assert_eq!(evaluation.findings[0].matched.len(), 200);
}

#[test]
fn patterns_without_literals_are_reported() {
    let report = engine().report().clone();
    assert_eq!(report.unfiltered, vec!["FX-NOLIT patterns[0]".to_string()]);
    assert_eq!(report.rules, 12);
    assert!(report.inert.is_empty());
}

#[test]
fn custom_rules_add_to_the_base_rules() {
    let custom = "id: CU-1\nname: Custom\nseverity: critical\ncategory: acme\npatterns:\n  - {type: contains, value: db.internal.acme}\n";
    let engine = engine_with(&RulesConfig { custom: vec![custom.into()], ..config() });
    assert_eq!(engine.report().rules, 13);
    assert_eq!(scan(&engine, "connect to db.internal.acme").verdict, Verdict::Block);
    assert_eq!(scan(&engine, "release_agent").verdict, Verdict::Block);
}

#[test]
fn config_errors_name_the_setting_and_id() {
    let rules = || load_file(fixture()).unwrap();
    let overrides = [("FX-NOPE".to_string(), Override::Block)].into();
    let cases: Vec<(&str, RulesConfig, RuleError)> = vec![
        (
            "override of unknown id",
            RulesConfig { overrides, ..config() },
            RuleError::UnknownRuleId { setting: "rules.overrides".into(), id: "FX-NOPE".into() },
        ),
        (
            "disabled unknown id",
            RulesConfig { disabled: vec!["FX-GONE".into()], ..config() },
            RuleError::UnknownRuleId { setting: "rules.disabled".into(), id: "FX-GONE".into() },
        ),
        (
            "unknown category",
            RulesConfig {
                agents: [("bot".into(), AgentRules { block_categories: vec!["nope".into()] })].into(),
                ..config()
            },
            RuleError::UnknownCategory {
                setting: "rules.agents.bot.block_categories".into(),
                category: "nope".into(),
            },
        ),
        (
            "custom rule reusing an id",
            RulesConfig {
                custom: vec!["id: FX-MED\nname: n\nseverity: low\ncategory: c\npatterns:\n  - {type: contains, value: abc}\n".into()],
                ..config()
            },
            RuleError::DuplicateId {
                id: "FX-MED".into(),
                file: "rules.custom[0]".into(),
                line: 1,
                first_file: fixture().display().to_string(),
                first_line: 59,
            },
        ),
    ];
    for (name, config, want) in cases {
        assert_eq!(Engine::from_rules(rules(), &config).unwrap_err(), want, "{name}");
    }
}

#[test]
fn bad_regex_names_rule_line_and_span() {
    let custom = "id: BAD-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - type: contains\n    value: fine\n  - type: regex\n    value: 'ab(cd'\n";
    let err =
        Engine::from_rules(Vec::new(), &RulesConfig { custom: vec![custom.into()], ..config() })
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules.custom[0]:9: rule BAD-1: patterns[1]: invalid regex: unclosed group\n    ab(cd\n      ^"
    );
}

#[test]
fn re2_only_syntax_gets_a_hint() {
    let custom = "id: RE2-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - type: regex\n    value: 'a\\Q.b\\E'\n";
    let err =
        Engine::from_rules(Vec::new(), &RulesConfig { custom: vec![custom.into()], ..config() })
            .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("rules.custom[0]:7: rule RE2-1: patterns[0]: invalid regex:"),
        "{text}"
    );
    assert!(text.contains("\n    a\\Q.b\\E\n     ^^\n\nhint: RE2's \\Q...\\E"), "{text}");
}

#[test]
fn patterns_matching_the_empty_string_are_refused() {
    let custom = "id: EMPTY-1\nname: n\nseverity: low\ncategory: c\npatterns:\n  - type: regex\n    value: 'x*'\n";
    let err =
        Engine::from_rules(Vec::new(), &RulesConfig { custom: vec![custom.into()], ..config() })
            .unwrap_err();
    match err {
        RuleError::InvalidRegex(details) => {
            assert_eq!(details.rule, "EMPTY-1");
            assert!(details.reason.contains("empty string"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_error_variant_formats() {
    let cases: Vec<(RuleError, &str)> = vec![
        (
            RuleError::Yaml {
                file: "a.yaml".into(),
                line: 3,
                message: "did not find expected key".into(),
            },
            "a.yaml:3: invalid rule yaml: did not find expected key",
        ),
        (
            RuleError::UnknownKey { file: "a.yaml".into(), line: 4, rule: None, key: "k".into() },
            "a.yaml:4: unknown key `k`",
        ),
        (
            RuleError::MissingKey {
                file: "a.yaml".into(),
                line: 1,
                rule: Some("R-1".into()),
                key: "name".into(),
            },
            "a.yaml:1: rule R-1: missing key `name`",
        ),
        (
            RuleError::MissingKey { file: "a.yaml".into(), line: 1, rule: None, key: "id".into() },
            "a.yaml:1: rule document: missing key `id`",
        ),
        (
            RuleError::InvalidValue {
                file: "a.yaml".into(),
                line: 5,
                rule: "R-1".into(),
                key: "match_mode".into(),
                expected: "any or all",
                found: "\"some\"".into(),
            },
            "a.yaml:5: rule R-1: `match_mode`: expected any or all, found \"some\"",
        ),
        (
            RuleError::DuplicateId {
                id: "R-1".into(),
                file: "b.yaml".into(),
                line: 9,
                first_file: "a.yaml".into(),
                first_line: 2,
            },
            "b.yaml:9: duplicate rule id R-1, first defined at a.yaml:2",
        ),
        (
            RuleError::UnknownRuleId { setting: "rules.overrides".into(), id: "X".into() },
            "rules.overrides: unknown rule id `X`",
        ),
        (
            RuleError::UnknownCategory {
                setting: "rules.agents.a.block_categories".into(),
                category: "c".into(),
            },
            "rules.agents.a.block_categories: unknown category `c`",
        ),
        (
            RuleError::TooLarge { what: "prefilter".into(), message: "state id overflow".into() },
            "rule library too large for the prefilter: state id overflow",
        ),
        (RuleError::Io { path: "/x".into(), message: "not found".into() }, "/x: not found"),
        (
            RuleError::FileTooLarge { file: "big.yaml".into(), size: 2_000_000, limit: 1_048_576 },
            "big.yaml: rule file too large: expected at most 1048576 bytes, found 2000000",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}
