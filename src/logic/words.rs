//! Blocked words: a list of words and phrases (one per line of `--blocked-words FILE`) that comments may not carry.
//! A comment holding one is refused (`blocked_text`) or has it masked with `*`, as `--blocked-words-action` says.
//! The list is matched in one pass with Aho-Corasick whatever its length, and reloaded (on SIGHUP) without a
//! restart: a failed reload keeps the list in force.

use std::path::PathBuf;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use clap::ValueEnum;
use parking_lot::RwLock;

use crate::protocol::{ErrorCode, Rejection};

/// What happens to a comment that holds a blocked word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Refuse it with `blocked_text`.
    Block,
    /// Accept it with each blocked word replaced by as many `*`.
    Mask,
}

pub struct BlockedWords {
    file: Option<PathBuf>,
    action: Action,
    matcher: RwLock<Option<Arc<AhoCorasick>>>,
}

impl BlockedWords {
    /// Reads the list from `file` (none: nothing is blocked).
    pub fn load(file: Option<PathBuf>, action: Action) -> Result<Self, String> {
        let words = BlockedWords {
            file,
            action,
            matcher: RwLock::new(None),
        };
        words.reload()?;
        Ok(words)
    }

    /// Reads the file again; answers how many entries are in force. On error the previous list stays.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read blocked words {}: {e}", path.display()))?;
        let entries: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let matcher = if entries.is_empty() {
            None
        } else {
            let built = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&entries)
                .map_err(|e| format!("blocked words {}: {e}", path.display()))?;
            Some(Arc::new(built))
        };
        *self.matcher.write() = matcher;
        Ok(entries.len())
    }

    /// The text to publish, or why it is refused.
    pub fn apply(&self, text: String) -> Result<String, Rejection> {
        let Some(matcher) = self.matcher.read().clone() else {
            return Ok(text);
        };
        if !matcher.is_match(&text) {
            return Ok(text);
        }
        match self.action {
            Action::Block => Err(Rejection::new(
                ErrorCode::BlockedText,
                "the comment contains a word this room does not allow",
            )),
            Action::Mask => {
                let mut out = String::with_capacity(text.len());
                let mut at = 0;
                for m in matcher.find_iter(&text) {
                    out.push_str(&text[at..m.start()]);
                    out.extend(std::iter::repeat_n('*', text[m.range()].chars().count()));
                    at = m.end();
                }
                out.push_str(&text[at..]);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(list: &str, action: Action) -> (BlockedWords, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "danmaku-words-{}-{}",
            std::process::id(),
            list.len()
        ));
        std::fs::write(&path, list).unwrap();
        (
            BlockedWords::load(Some(path.clone()), action).unwrap(),
            path,
        )
    }

    #[test]
    fn blocks_or_masks_whole_entries_case_insensitively() {
        let (w, path) = with("# comment\nspam\n\n坏话\nbad word\n", Action::Mask);
        assert_eq!(w.apply("so SPAMmy".into()).unwrap(), "so ****my");
        assert_eq!(w.apply("说坏话了".into()).unwrap(), "说**了");
        assert_eq!(
            w.apply("a bad word here".into()).unwrap(),
            "a ******** here"
        );
        assert_eq!(w.apply("clean".into()).unwrap(), "clean");
        std::fs::remove_file(path).unwrap();
        let (w, path) = with("spam\n", Action::Block);
        assert_eq!(
            w.apply("spam".into()).unwrap_err().code,
            ErrorCode::BlockedText
        );
        assert_eq!(w.apply("ham".into()).unwrap(), "ham");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_failed_reload_keeps_the_list() {
        let (w, path) = with("spam\n", Action::Block);
        std::fs::remove_file(&path).unwrap();
        assert!(w.reload().is_err());
        assert!(w.apply("spam".into()).is_err(), "still blocked");
        assert!(
            BlockedWords::load(Some(path), Action::Block).is_err(),
            "a missing file at start is an error"
        );
        assert_eq!(
            BlockedWords::load(None, Action::Block)
                .unwrap()
                .apply("x".into())
                .unwrap(),
            "x"
        );
    }
}
