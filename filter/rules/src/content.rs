//! What is scanned: [`ContentPart`]s of a request, each of a [`ContentKind`],
//! and how a rule's `targets` select kinds.
//!
//! Every kind has a target name, chosen so that the file-name globs of
//! Aguara rule files keep a sensible meaning:
//!
//! | kind | target name | typical `targets` entries that select it |
//! |---|---|---|
//! | [`ContentKind::Message`] | `message.md` | `*.md`, `message.md` |
//! | [`ContentKind::ToolName`] | `tool.name` | `tool.name` |
//! | [`ContentKind::ToolArguments`] | `tool.arguments` | `tool.arguments` |
//! | [`ContentKind::Body`] | `body.txt` | `*.txt`, `body.txt` |
//!
//! Empty `targets`, or an entry `*`, select every kind. An entry `*.ext`
//! selects the kinds whose name ends in `.ext`; any other entry must equal
//! the name. An entry starting with `!` removes the kinds it selects
//! (Aguara's exclusion syntax), whatever the other entries say.

/// Which part of a request a piece of content came from. Rule `targets`
/// select parts by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// The `content` of a message envelope (target name `message.md`).
    Message,
    /// The tool name of an MCP `tools/call` (target name `tool.name`).
    ToolName,
    /// The arguments of an MCP `tools/call`, as JSON text (`tool.arguments`).
    ToolArguments,
    /// Any other request body, as text (`body.txt`).
    Body,
}

impl ContentKind {
    /// Every kind, in the order rule self-tests try them.
    pub const ALL: [ContentKind; 4] = [
        ContentKind::Message,
        ContentKind::ToolArguments,
        ContentKind::ToolName,
        ContentKind::Body,
    ];

    /// The name `targets` entries are matched against.
    pub fn target_name(self) -> &'static str {
        match self {
            ContentKind::Message => "message.md",
            ContentKind::ToolName => "tool.name",
            ContentKind::ToolArguments => "tool.arguments",
            ContentKind::Body => "body.txt",
        }
    }

    /// Whether Markdown code fences mean something in this kind: only
    /// message text is Markdown, so only there are findings inside a fence
    /// lowered one severity step.
    pub fn is_markdown(self) -> bool {
        self == ContentKind::Message
    }

    fn bit(self) -> u8 {
        match self {
            ContentKind::Message => 1,
            ContentKind::ToolName => 2,
            ContentKind::ToolArguments => 4,
            ContentKind::Body => 8,
        }
    }
}

/// One piece of content to scan.
#[derive(Debug, Clone, Copy)]
pub struct ContentPart<'a> {
    /// Where it came from.
    pub kind: ContentKind,
    /// The text.
    pub text: &'a str,
}

/// The set of kinds a rule's `targets` select, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TargetSet(u8);

impl TargetSet {
    /// Reads a rule's `targets` list.
    pub(crate) fn from_targets(targets: &[String]) -> TargetSet {
        let mut include = 0u8;
        let mut exclude = 0u8;
        let mut any_positive = false;
        for entry in targets {
            let entry = entry.trim();
            match entry.strip_prefix('!') {
                Some(negated) => exclude |= selected(negated),
                None => {
                    any_positive = true;
                    include |= selected(entry);
                }
            }
        }
        if !any_positive {
            include = selected("*");
        }
        TargetSet(include & !exclude)
    }

    /// Whether `kind` is in the set.
    pub(crate) fn contains(self, kind: ContentKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether no kind is in the set: the rule can never fire here.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The kinds one `targets` entry selects.
fn selected(entry: &str) -> u8 {
    let mut bits = 0;
    for kind in ContentKind::ALL {
        let name = kind.target_name();
        let hit = match entry.strip_prefix('*') {
            _ if entry == "*" => true,
            Some(suffix) => suffix.starts_with('.') && name.ends_with(suffix),
            None => entry == name,
        };
        if hit {
            bits |= kind.bit();
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(targets: &[&str]) -> Vec<ContentKind> {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let set = TargetSet::from_targets(&targets);
        ContentKind::ALL.into_iter().filter(|k| set.contains(*k)).collect()
    }

    #[test]
    fn targets_select_kinds_by_name_and_extension() {
        use ContentKind::*;
        let cases: &[(&str, &[&str], &[ContentKind])] = &[
            ("empty means all", &[], &[Message, ToolArguments, ToolName, Body]),
            ("star means all", &["*"], &[Message, ToolArguments, ToolName, Body]),
            ("md selects message", &["*.md"], &[Message]),
            ("txt selects body", &["*.txt", "*.py"], &[Body]),
            ("exact names", &["tool.name", "tool.arguments"], &[ToolArguments, ToolName]),
            ("other files select nothing", &["*.py", "SKILL.md"], &[]),
            ("negation removes", &["*", "!body.txt"], &[Message, ToolArguments, ToolName]),
            ("only negation starts from all", &["!*.md"], &[ToolArguments, ToolName, Body]),
        ];
        for (name, targets, want) in cases {
            assert_eq!(set(targets), *want, "{name}");
        }
    }
}
