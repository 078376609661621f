//! `warrant-audit rules validate|test|scan`: check rule files and try them,
//! the way the filter would use them.
//!
//! - `validate DIR`: loads every `.yaml`/`.yml` file under DIR
//!   ([`warrant_rules::load_dir`]) and compiles every pattern
//!   ([`Engine::from_rules`], [`Engine::compile_all`]). Exit 1 on the first
//!   problem, printed as `FILE:LINE: rule ID: ...`.
//! - `test DIR`: loads the rules and checks each rule's examples
//!   ([`warrant_rules::test_rules`]): true positives must fire, false
//!   positives must not. Exit 1 if any does not, naming the rule, where it
//!   is and the example.
//! - `scan [--rules DIR] [--json] FILE...`: evaluates each file's text as
//!   the `content` of a message ([`ContentKind::Message`]), with DIR's rules
//!   or the built-in library, and prints the verdict and the findings.
//!
//! Rules with problems are results, not failures to run: they go to stdout
//! with exit 1. A directory or file that cannot be read is exit 2.
//!
//! # `scan --json`
//!
//! JSON Lines, each line `{"type": ..., "data": {...}}`:
//!
//! ```json
//! {"type":"file","data":{"path":"notes.txt","verdict":"quarantine","findings":[
//!   {"rule_id":"CE-009","name":"...","severity":"high","category":"command-execution",
//!    "match":"insmod /tmp/rootkit.ko","line":1,"kind":"message","decoded":null,
//!    "verdict":"quarantine"}]}}
//! {"type":"summary","data":{"files":1,"findings":1,"verdict":"quarantine",
//!   "verdicts":{"clean":0,"flag":0,"quarantine":1,"block":0}}}
//! ```
//!
//! One `file` line per FILE, in the order given, then one `summary` line.
//! `match` is redacted and cut as in audit records; `decoded` is `null`,
//! `"base64"` or `"hex"`; `kind` is always `"message"` here; `verdict` in a
//! finding is what it contributes, in `summary` the strictest over all
//! files.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::{Args, Subcommand};
use serde::Serialize;
use warrant_rules::{
    load_dir, test_rules, ContentKind, ContentPart, Encoding, Engine, Evaluation, Finding, Rule,
    RuleError, RulesConfig, Verdict,
};

/// Check, test and try detection rules.
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// What to do with the rules.
    #[command(subcommand)]
    pub command: RulesCommand,
}

/// `warrant-audit rules ...`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Load and compile the rules under DIR; exit 1 on the first problem.
    ///
    /// Reads every .yaml and .yml file under DIR (recursively), checks the
    /// rule format, refuses duplicate ids and compiles every pattern. A
    /// problem is printed as FILE:LINE: rule ID: what is wrong.
    Validate {
        /// The rule directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check every rule's examples; exit 1 if any misbehaves.
    ///
    /// Each true-positive example must fire its rule and no false-positive
    /// example may. Failures are printed as FILE:LINE: rule ID: problem:
    /// "example".
    Test {
        /// The rule directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the verdict and findings the filter would give each file.
    Scan(ScanArgs),
}

/// `warrant-audit rules scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scan with the rules under DIR instead of the built-in library.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Print JSON Lines: one {"type":"file",...} per file, then a
    /// {"type":"summary",...}.
    #[arg(long)]
    pub json: bool,
    /// Files to scan, each as the content of one message; '-' reads stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs `rules ...`.
///
/// # Errors
/// A rule directory or a file to scan cannot be read, or (for `scan`) the
/// rules do not load or compile.
pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::Validate { dir } => validate(&dir),
        RulesCommand::Test { dir } => test(&dir),
        RulesCommand::Scan(args) => scan(&args),
    }
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    // 1. Load: format, names, duplicate ids.
    let rules = match load(dir)? {
        Ok(rules) => rules,
        Err(problem) => return Ok(report_problem(&problem)),
    };

    // 2. Compile every pattern, as the filter would for custom rules.
    let file_count = count_files(&rules);
    let config = RulesConfig { builtin: false, ..RulesConfig::default() };
    let engine = match Engine::from_rules(rules, &config) {
        Ok(engine) => engine,
        Err(problem) => return Ok(report_problem(&problem)),
    };
    if let Err(problem) = engine.compile_all() {
        return Ok(report_problem(&problem));
    }

    // 3. What was compiled, and what deserves a look.
    let report = engine.report();
    for id in &report.inert {
        println!("note: rule {id}: targets select no content kind, the rule never fires");
    }
    for pattern in &report.unfiltered {
        println!("note: {pattern}: no literal to prefilter on, runs on every text");
    }
    println!(
        "{}: {} rules in {file_count} files, {} patterns, {} prefilter literals: ok",
        dir.display(),
        report.rules,
        report.patterns,
        report.literals
    );
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path) -> anyhow::Result<ExitCode> {
    let rules = match load(dir)? {
        Ok(rules) => rules,
        Err(problem) => return Ok(report_problem(&problem)),
    };
    let report = match test_rules(&rules) {
        Ok(report) => report,
        Err(problem) => return Ok(report_problem(&problem)),
    };
    // One line per failure, then the summary.
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    // 1. The engine: DIR's rules, or the library with its default settings.
    let engine = match &args.rules {
        Some(dir) => {
            let rules = load(dir)?.map_err(|e| anyhow!("{}: invalid rules: {e}", dir.display()))?;
            let config = RulesConfig { builtin: false, ..RulesConfig::default() };
            Engine::from_rules(rules, &config)
                .map_err(|e| anyhow!("{}: invalid rules: {e}", dir.display()))?
        }
        None => Engine::new(&RulesConfig::default())
            .map_err(|e| anyhow!("built-in rule library: {e}"))?,
    };

    // 2. Read every file first, so that a bad path prints nothing else.
    let texts =
        args.files.iter().map(|path| read_text(path)).collect::<anyhow::Result<Vec<_>>>()?;

    // 3. Evaluate and print each file, then the summary.
    let mut summary = ScanSummary::default();
    for (path, text) in args.files.iter().zip(&texts) {
        let parts = [ContentPart { kind: ContentKind::Message, text }];
        let evaluation = engine.evaluate(&parts, "");
        summary.add(&evaluation);
        let path = path.display().to_string();
        if args.json {
            let data = FileRecord {
                path: &path,
                verdict: evaluation.verdict.as_str(),
                findings: evaluation.findings.iter().map(FindingRecord::from).collect(),
            };
            println!("{}", serde_json::to_string(&JsonLine { kind: "file", data })?);
        } else {
            print!("{}", render_file(&path, &evaluation));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&JsonLine { kind: "summary", data: &summary })?);
    } else {
        println!("{}", summary.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads DIR: the outer error is "could not run" (exit 2), the inner one a
/// problem with the rules (exit 1).
fn load(dir: &Path) -> anyhow::Result<Result<Vec<Rule>, RuleError>> {
    if !dir.is_dir() {
        return Err(anyhow!("{}: not a directory", dir.display()));
    }
    match load_dir(dir) {
        Err(RuleError::Io { path, message }) => Err(anyhow!("{path}: cannot read: {message}")),
        Ok(rules) if rules.is_empty() => Err(anyhow!(
            "{}: no rules found\n\nhint: rule files end in .yaml or .yml",
            dir.display()
        )),
        other => Ok(other),
    }
}

/// Prints a rule problem as a result and gives exit 1.
fn report_problem(problem: &RuleError) -> ExitCode {
    println!("{problem}");
    ExitCode::from(1)
}

fn count_files(rules: &[Rule]) -> usize {
    let files: std::collections::BTreeSet<&str> =
        rules.iter().map(|r| r.source.file.as_str()).collect();
    files.len()
}

/// Reads a file to scan ('-' is stdin). Invalid UTF-8 is replaced, as the
/// filter only ever scans text.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("-: cannot read stdin")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `PATH: VERDICT, N findings`, then one indented line per finding.
fn render_file(path: &str, evaluation: &Evaluation) -> String {
    let count = evaluation.findings.len();
    let plural = if count == 1 { "" } else { "s" };
    let mut out = format!("{path}: {}, {count} finding{plural}\n", evaluation.verdict.as_str());
    for finding in &evaluation.findings {
        let decoded = match finding.decoded {
            None => "",
            Some(Encoding::Base64) => " (in base64)",
            Some(Encoding::Hex) => " (in hex)",
        };
        out.push_str(&format!(
            "  {:<8}  {:<10}  line {}{decoded}  {}  [{}] {}: {:?}\n",
            finding.severity.as_str(),
            finding.verdict.as_str(),
            finding.line,
            finding.rule_id,
            finding.category,
            finding.name,
            finding.matched,
        ));
    }
    out
}

/// One JSON Lines record: `{"type": kind, "data": data}`.
#[derive(Serialize)]
struct JsonLine<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

/// The `data` of a `file` record.
#[derive(Serialize)]
struct FileRecord<'a> {
    path: &'a str,
    verdict: &'static str,
    findings: Vec<FindingRecord<'a>>,
}

/// One finding in a `file` record.
#[derive(Serialize)]
struct FindingRecord<'a> {
    rule_id: &'a str,
    name: &'a str,
    severity: &'static str,
    category: &'a str,
    #[serde(rename = "match")]
    matched: &'a str,
    line: u32,
    kind: &'static str,
    decoded: Option<&'static str>,
    verdict: &'static str,
}

impl<'a> From<&'a Finding> for FindingRecord<'a> {
    fn from(finding: &'a Finding) -> FindingRecord<'a> {
        FindingRecord {
            rule_id: &finding.rule_id,
            name: &finding.name,
            severity: finding.severity.as_str(),
            category: &finding.category,
            matched: &finding.matched,
            line: finding.line,
            kind: match finding.kind {
                ContentKind::Message => "message",
                ContentKind::ToolName => "tool_name",
                ContentKind::ToolArguments => "tool_arguments",
                ContentKind::Body => "body",
            },
            decoded: finding.decoded.map(|encoding| match encoding {
                Encoding::Base64 => "base64",
                Encoding::Hex => "hex",
            }),
            verdict: finding.verdict.as_str(),
        }
    }
}

/// The `data` of the `summary` record.
#[derive(Serialize, Default)]
struct ScanSummary {
    files: u64,
    findings: u64,
    verdict: &'static str,
    verdicts: VerdictCounts,
    #[serde(skip)]
    strictest: Option<Verdict>,
}

/// Files per verdict.
#[derive(Serialize, Default)]
struct VerdictCounts {
    clean: u64,
    flag: u64,
    quarantine: u64,
    block: u64,
}

impl ScanSummary {
    fn add(&mut self, evaluation: &Evaluation) {
        self.files += 1;
        self.findings += evaluation.findings.len() as u64;
        let counter = match evaluation.verdict {
            Verdict::Clean => &mut self.verdicts.clean,
            Verdict::Flag => &mut self.verdicts.flag,
            Verdict::Quarantine => &mut self.verdicts.quarantine,
            Verdict::Block => &mut self.verdicts.block,
        };
        *counter += 1;
        let strictest = self.strictest.map_or(evaluation.verdict, |v| v.max(evaluation.verdict));
        self.strictest = Some(strictest);
        self.verdict = strictest.as_str();
    }

    /// `N files, M findings: A clean, B flag, C quarantine, D block`.
    fn text(&self) -> String {
        let VerdictCounts { clean, flag, quarantine, block } = &self.verdicts;
        format!(
            "{} files, {} findings: {clean} clean, {flag} flag, {quarantine} quarantine, \
             {block} block",
            self.files, self.findings
        )
    }
}
