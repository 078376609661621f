//! Rule self-tests: every true-positive example must fire its rule, no
//! false-positive example may. This is what `cargo test -p warrant-rules`
//! runs over the built-in library and what `warrant-audit rules test DIR`
//! runs over a user's rules.
//!
//! Each example is read as the first content kind the rule targets (in the
//! order of [`ContentKind::ALL`]: message, tool arguments, tool name, body),
//! and the rule is evaluated on its own, with its exclude patterns, code
//! fences and blob decoding, but without other rules competing for the line.
//! The report also counts, across all rules, the false-positive examples
//! that trip *any* rule: a library-wide measure of precision.

use std::fmt;

use crate::config::RulesConfig;
use crate::content::TargetSet;
use crate::engine::Engine;
use crate::error::RuleError;
use crate::rule::Rule;
use crate::ContentKind;

/// The outcome of [`test_rules`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestReport {
    /// Rules tested.
    pub rules: usize,
    /// True-positive examples checked.
    pub true_positives: usize,
    /// False-positive examples checked.
    pub false_positives: usize,
    /// Every rule/example pair that did not behave as declared.
    pub failures: Vec<TestFailure>,
    /// False-positive examples (of any rule) on which some rule fires.
    pub tripping: Vec<Tripping>,
}

/// One example that did not behave as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    /// The rule.
    pub rule_id: String,
    /// Where the rule is defined.
    pub file: String,
    /// Its line.
    pub line: u32,
    /// What went wrong.
    pub problem: Problem,
    /// The example text (empty for [`Problem::NoContentKind`]).
    pub example: String,
}

/// What went wrong with an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A true-positive example did not fire the rule.
    MissedTruePositive,
    /// A false-positive example fired the rule.
    FiredOnFalsePositive,
    /// The rule's `targets` select no content kind, so it can never fire.
    NoContentKind,
}

/// A false-positive example on which at least one rule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripping {
    /// The rule the example belongs to.
    pub rule_id: String,
    /// The example.
    pub example: String,
    /// Ids of the rules that fire on it.
    pub fired: Vec<String>,
}

impl TestReport {
    /// Whether every example behaved as declared.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The share (0 to 1) of false-positive examples on which any rule
    /// fires; 0 when there are none.
    pub fn false_positive_share(&self) -> f64 {
        if self.false_positives == 0 {
            return 0.0;
        }
        self.tripping.len() as f64 / self.false_positives as f64
    }
}

impl fmt::Display for TestReport {
    /// One line per failure, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "{failure}")?;
        }
        write!(
            f,
            "{} rules, {} true-positive and {} false-positive examples, {} failures; \
             {} of {} false-positive examples ({:.1}%) trip some rule",
            self.rules,
            self.true_positives,
            self.false_positives,
            self.failures.len(),
            self.tripping.len(),
            self.false_positives,
            self.false_positive_share() * 100.0
        )
    }
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.problem {
            Problem::MissedTruePositive => "true-positive example does not fire",
            Problem::FiredOnFalsePositive => "false-positive example fires",
            Problem::NoContentKind => "targets select no content kind, the rule never fires",
        };
        write!(f, "{}:{}: rule {}: {what}", self.file, self.line, self.rule_id)?;
        if !self.example.is_empty() {
            write!(f, ": {:?}", self.example)?;
        }
        Ok(())
    }
}

/// Compiles `rules` on their own and checks every example.
///
/// # Errors
/// The rules do not compile (see [`Engine::from_rules`]).
pub fn test_rules(rules: &[Rule]) -> Result<TestReport, RuleError> {
    let config = RulesConfig { builtin: false, ..RulesConfig::default() };
    let engine = Engine::from_rules(rules.to_vec(), &config)?;
    let mut report = TestReport { rules: rules.len(), ..TestReport::default() };
    for rule in rules {
        let failure = |problem, example: &str| TestFailure {
            rule_id: rule.id.clone(),
            file: rule.source.file.clone(),
            line: rule.source.line,
            problem,
            example: example.to_string(),
        };
        let targets = TargetSet::from_targets(&rule.targets);
        let Some(kind) = ContentKind::ALL.into_iter().find(|k| targets.contains(*k)) else {
            report.failures.push(failure(Problem::NoContentKind, ""));
            continue;
        };
        for example in &rule.examples.true_positive {
            report.true_positives += 1;
            if engine.rule_fires(&rule.id, example, kind) != Some(true) {
                report.failures.push(failure(Problem::MissedTruePositive, example));
            }
        }
        for example in &rule.examples.false_positive {
            report.false_positives += 1;
            if engine.rule_fires(&rule.id, example, kind) != Some(false) {
                report.failures.push(failure(Problem::FiredOnFalsePositive, example));
            }
            let fired = engine.rules_firing(example, kind);
            if !fired.is_empty() {
                report.tripping.push(Tripping {
                    rule_id: rule.id.clone(),
                    example: example.clone(),
                    fired: fired.into_iter().map(str::to_string).collect(),
                });
            }
        }
    }
    Ok(report)
}
