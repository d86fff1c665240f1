//! Runs of unary `-` and `!`, given cel-go's meaning before the `cel` crate
//! parses them.
//!
//! CEL's grammar reads `--x` and `!!x` as one negation node with several
//! operators; cel-go keeps the operand alone when their count is even and
//! negates once when it is odd, so `!!has(x)` is `has(x)` and `1 - -1` is 2
//! while `1 - - -1` is 0. The `cel` 0.13 parser negates once whatever the
//! count (`!!true` is `false`, `--1` is `-1`) and, in the even case, also
//! visits the operand twice, which makes nested runs exponential:
//! `(1---(1---(…1)))` took a second at 20 levels and the fuzzer's malformed
//! matchCondition 2 s (`tests/fuzz_regressions.rs`).
//!
//! [`normalize`] rewrites every run to what cel-go keeps of it (none or one
//! operator) before parsing, blanking the dropped operators with spaces so
//! that line and column numbers in errors stay the author's.

use super::literals::string_literal_end;
use std::borrow::Cow;

/// `source` with each run of unary `-` or `!` operators cut to its parity
/// (the removed operators become spaces). Borrowed when nothing changes.
pub fn normalize(source: &str) -> Cow<'_, str> {
    let blanks = dropped_operators(source);
    if blanks.is_empty() {
        return Cow::Borrowed(source);
    }
    let mut bytes = source.as_bytes().to_vec();
    for at in blanks {
        bytes[at] = b' ';
    }
    // Only ASCII `-`/`!` bytes outside literals became ASCII spaces, so the
    // text stays UTF-8; the fallback keeps the source if that ever broke.
    String::from_utf8(bytes).map_or(Cow::Borrowed(source), Cow::Owned)
}

/// A significant token as far as runs are concerned.
#[derive(Clone, Copy, PartialEq)]
enum Token {
    Minus(usize),
    Bang(usize),
    /// Anything else; `true` when it ends an operand (an identifier, a
    /// number, a literal, a closing bracket), after which `-` is binary.
    Other {
        ends_operand: bool,
    },
}

/// Byte offsets of the operators to drop: in each run of unary operators of
/// one kind, all but one when the count is odd, all when it is even.
fn dropped_operators(source: &str) -> Vec<usize> {
    let tokens = tokens(source);
    let mut dropped = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (is_minus, start) = match tokens[i] {
            Token::Minus(_) => (true, i),
            Token::Bang(_) => (false, i),
            Token::Other { .. } => {
                i += 1;
                continue;
            }
        };
        let mut end = start;
        while end < tokens.len()
            && matches!(
                (tokens[end], is_minus),
                (Token::Minus(_), true) | (Token::Bang(_), false)
            )
        {
            end += 1;
        }
        // After an operand the first `-` is the binary minus.
        let after_operand = start > 0 && tokens[start - 1] == Token::Other { ends_operand: true };
        let first_unary = if is_minus && after_operand {
            start + 1
        } else {
            start
        };
        let unary = end - first_unary;
        if unary >= 2 {
            let keep = unary % 2;
            for token in &tokens[first_unary + keep..end] {
                if let Token::Minus(at) | Token::Bang(at) = *token {
                    dropped.push(at);
                }
            }
        }
        i = end;
    }
    dropped
}

/// The significant tokens of `source`, coarsely: whitespace and `//`
/// comments skipped, string and bytes literals (quoted, triple-quoted, raw)
/// and names as single operand tokens, `!=` as an operator.
fn tokens(source: &str) -> Vec<Token> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' => {
                tokens.push(Token::Minus(i));
                i += 1;
            }
            b'!' if bytes.get(i + 1) != Some(&b'=') => {
                tokens.push(Token::Bang(i));
                i += 1;
            }
            b'\'' | b'"' => {
                i = string_literal_end(bytes, i);
                tokens.push(Token::Other { ends_operand: true });
            }
            b')' | b']' | b'}' => {
                tokens.push(Token::Other { ends_operand: true });
                i += 1;
            }
            _ if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                // A string prefix (`r'…'`, `b"…"`) is part of the literal.
                if matches!(bytes.get(i), Some(b'\'' | b'"')) {
                    continue;
                }
                // `in` is an operator: `x in -y` has no binary minus.
                let ends_operand = &bytes[start..i] != b"in";
                tokens.push(Token::Other { ends_operand });
            }
            _ => {
                tokens.push(Token::Other {
                    ends_operand: false,
                });
                i += 1;
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn runs_keep_their_parity() {
        for (source, expected) in [
            ("!!x", "  x"),
            ("!!!x", "!  x"),
            ("--1", "  1"),
            ("---1", "-  1"),
            ("1 - -1", "1 - -1"),
            ("1 - - -1", "1 -    1"),
            ("1---(1)", "1-  (1)"),
            ("x in --y", "x in   y"),
            ("!!a && !b != !!c", "  a && !b !=   c"),
            ("f(x)--1", "f(x)--1"),
            ("x[0] - --1", "x[0] -   1"),
        ] {
            assert_eq!(normalize(source), expected, "{source}");
        }
    }

    #[test]
    fn literals_comments_and_numbers_are_left_alone() {
        for source in [
            "'--' + \"!!\" + '''--\n!!''' + r'\\' + b'--'",
            "x // --!!\n",
            "1e-5 - 2.5e-3",
            "x != -1 && !y",
            "a - b - c",
            "-!x",
        ] {
            assert_eq!(normalize(source), source, "{source}");
        }
    }
}
