//! Where a CEL string or bytes literal ends in expression text, for the
//! passes that read expression text before (or instead of) the parser:
//! `unary_runs` and the native rendering's variable renames. Both must step
//! over literals so that an operator or a name inside quotes is left alone.

/// The index just past the string literal whose opening quote is at `start`.
/// A raw prefix (`r`, `R`, possibly with `b`) turns escapes off; an
/// unterminated literal runs to the end (the parser reports it).
pub fn string_literal_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let raw = start > 0 && matches!(bytes[start - 1], b'r' | b'R');
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && !raw {
            i += 2;
            continue;
        }
        if b == quote {
            if !triple {
                return i + 1;
            }
            if bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote) {
                return i + 3;
            }
        } else if b == b'\n' && !triple {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}
