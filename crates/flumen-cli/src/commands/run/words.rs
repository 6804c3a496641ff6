//! The first stage of a pipeline file that reads text, splits it into words (changing their
//! case before or after the split, or not) and re-keys by the word: word_count's first
//! stage. Each word goes from the record's bytes to the repartition topic without becoming
//! a JSON `Value`, and a word of an ASCII line is never allocated (it fits inline or not at
//! all in a [`Word`]).
//!
//! What it writes matches the general path ([`run_steps`](super::value::run_steps), then
//! the `key_by` on `$` writing the words as text): words as `str::split_whitespace` cuts
//! them, the case changed as `str::to_lowercase` / `to_uppercase` change it (the whole line
//! before the split, each word after it). A record that is not UTF-8 is refused the same
//! way, by the source.

use flumen_runtime::format::{Encode, FormatError, Owned};

use super::spec::Plan;
use super::value::{Case, Kind, Step, ValueFormat};

/// A word on its way to the repartition.
pub type Word = smallvec::SmallVec<[u8; 24]>;

/// A first stage of case changes, one split and a `key_by` of the whole word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Words {
    /// The case change before the split.
    pub before: Option<Case>,
    /// The case change after the split.
    pub after: Option<Case>,
}

/// When the plan's first stage reads text and is [`Words`]: the repartition's name, and
/// the stage.
pub fn words_first_stage(plan: &Plan) -> Option<(&str, Words)> {
    let (first, name, path) = super::rekeying_first_stage(plan)?;
    if plan.source.kind != Kind::String || !path.0.is_empty() {
        return None;
    }
    let case = |s: &Step| match s {
        Step::Case(p, c) if p.0.is_empty() => Some(*c),
        _ => None,
    };
    let split = first
        .pre
        .iter()
        .position(|s| matches!(s, Step::Split(p) if p.0.is_empty()))?;
    let (before, after) = (&first.pre[..split], &first.pre[split + 1..]);
    let one = |steps: &[Step]| -> Option<Option<Case>> {
        match steps {
            [] => Some(None),
            [s] => case(s).map(Some),
            _ => None,
        }
    };
    Some((
        name,
        Words {
            before: one(before)?,
            after: one(after)?,
        },
    ))
}

/// `char::is_whitespace` for an ASCII byte.
fn space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | b' ')
}

fn change(s: &str, case: Option<Case>) -> std::borrow::Cow<'_, str> {
    match case {
        None => s.into(),
        Some(Case::Lower) => s.to_lowercase().into(),
        Some(Case::Upper) => s.to_uppercase().into(),
    }
}

impl Words {
    /// Calls `emit` with each word of `line`, in order.
    pub fn split(&self, line: &str, mut emit: impl FnMut(Word)) {
        if line.is_ascii() {
            // Both case changes act on each byte alone here: before or after the split,
            // the first one is undone by the second one.
            let case = self.after.or(self.before);
            for word in line.as_bytes().split(|&b| space(b)) {
                if word.is_empty() {
                    continue;
                }
                let mut w = Word::from_slice(word);
                match case {
                    None => {}
                    Some(Case::Lower) => w.make_ascii_lowercase(),
                    Some(Case::Upper) => w.make_ascii_uppercase(),
                }
                emit(w);
            }
        } else {
            for word in change(line, self.before).split_whitespace() {
                emit(Word::from_slice(change(word, self.after).as_bytes()));
            }
        }
    }
}

/// The repartition after such a stage writes the words (as a JSON string if it writes
/// JSON, which it does not: the words cross as text).
impl Encode<Owned<Word>> for ValueFormat {
    fn encode<'b>(
        &self,
        item: &'b Word,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError> {
        match self.kind {
            Kind::String | Kind::Bytes => Ok(item),
            Kind::Json => {
                let text = std::str::from_utf8(item).map_err(|e| FormatError(e.to_string()))?;
                scratch.clear();
                serde_json::to_writer(&mut *scratch, text)
                    .map_err(|e| FormatError(e.to_string()))?;
                Ok(scratch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::commands::run::spec;
    use crate::commands::run::value::{Path, run_steps};

    fn file(before: &str, after: &str) -> String {
        format!(
            "application_id = \"t\"\n[source]\ntopics = [\"in\"]\nformat = \"string\"\n\
             {before}[[steps]]\nkind = \"split\"\n{after}\
             [[steps]]\nkind = \"key_by\"\npath = \"$\"\nname = \"words\"\n\
             [sink]\ntopic = \"out\"\n"
        )
    }

    const LOWER: &str = "[[steps]]\nkind = \"map\"\nlower = true\n";
    const UPPER: &str = "[[steps]]\nkind = \"map\"\nupper = true\n";

    fn words_of(text: &str) -> Option<Words> {
        let plan = spec::parse("p.toml", text).expect("valid file");
        words_first_stage(&plan).map(|(name, w)| {
            assert_eq!(name, "words");
            w
        })
    }

    #[test]
    fn a_split_with_case_changes_around_it_is_a_words_stage() {
        let w = |before, after| Some(Words { before, after });
        assert_eq!(words_of(&file("", "")), w(None, None));
        assert_eq!(words_of(&file(LOWER, "")), w(Some(Case::Lower), None));
        assert_eq!(words_of(&file("", UPPER)), w(None, Some(Case::Upper)));
        assert_eq!(
            words_of(&file(UPPER, LOWER)),
            w(Some(Case::Upper), Some(Case::Lower))
        );
    }

    #[test]
    fn anything_else_in_the_stage_is_not() {
        // Two case changes on one side, another step, a filter, JSON input.
        assert_eq!(words_of(&file(&format!("{LOWER}{UPPER}"), "")), None);
        let set = "[[steps]]\nkind = \"map\"\nset = { a = 1 }\n";
        assert_eq!(words_of(&file("", set)), None);
        let filter = "[[steps]]\nkind = \"filter\"\nregex = \"x\"\n";
        assert_eq!(words_of(&file(filter, "")), None);
        let json = file("", "").replace("format = \"string\"\n", "");
        assert_eq!(words_of(&json), None);
        // No split, or a key that is not the whole word.
        let no_split = file("", "").replace("kind = \"split\"", "kind = \"map\"\nlower = true");
        assert_eq!(words_of(&no_split), None);
        let field = file("", "").replace("path = \"$\"", "path = \"w\"");
        assert_eq!(words_of(&field), None);
    }

    /// The words of `line` as the general path makes them.
    fn general(before: Option<Case>, after: Option<Case>, line: &str) -> Vec<Vec<u8>> {
        let root = || Path::parse("$");
        let mut steps = Vec::new();
        steps.extend(before.map(|c| Step::Case(root(), c)));
        steps.push(Step::Split(root()));
        steps.extend(after.map(|c| Step::Case(root(), c)));
        let mut out = Vec::new();
        run_steps(
            &steps,
            Value::String(line.to_owned()),
            &mut out,
            &mut Vec::new(),
        );
        out.into_iter()
            .map(|v| match v {
                Value::String(s) => s.into_bytes(),
                other => panic!("not a word: {other}"),
            })
            .collect()
    }

    fn fast(before: Option<Case>, after: Option<Case>, line: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        Words { before, after }.split(line, |w| out.push(w.to_vec()));
        out
    }

    const CASES: [Option<Case>; 3] = [None, Some(Case::Lower), Some(Case::Upper)];

    #[test]
    fn words_are_the_general_paths_words() {
        let lines = [
            "",
            "   ",
            "The quick  brown\tfox\r\njumps",
            "vertical\u{b}tab and\u{c}form feed",
            "a-very-long-word-that-does-not-fit-inline-in-twenty-four-bytes x",
            "ΟΔΟΣ Straße İstanbul",
            "no\u{a0}break\u{2003}em space\u{85}next line",
            "\u{1c}\u{1f} separators",
        ];
        for line in lines {
            for before in CASES {
                for after in CASES {
                    assert_eq!(
                        fast(before, after, line),
                        general(before, after, line),
                        "{line:?} {before:?} {after:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn words_cross_as_text() {
        let word = Word::from_slice(b"say \"hi\"");
        let mut scratch = Vec::new();
        let mut encode = |kind| {
            Encode::<Owned<Word>>::encode(&ValueFormat::new(kind), &word, &mut scratch)
                .expect("encoded")
                .to_vec()
        };
        assert_eq!(encode(Kind::String), b"say \"hi\"");
        let written = encode(Kind::Json);
        assert_eq!(
            serde_json::from_slice::<Value>(&written).expect("JSON"),
            Value::String("say \"hi\"".into())
        );
    }

    proptest! {
        #[test]
        fn any_line_splits_as_the_general_path_splits_it(
            line in "[a-zA-Z \t\r\n\u{b}\u{c}\u{85}\u{a0}ΣσςİßΩ\u{1c}-]{0,40}",
            before in 0..3usize,
            after in 0..3usize,
        ) {
            let (before, after) = (CASES[before], CASES[after]);
            prop_assert_eq!(fast(before, after, &line), general(before, after, &line));
        }
    }
}
