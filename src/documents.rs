//! Splitting YAML files into documents and decoding them with line numbers.
//!
//! Shared by the policy loader, the PolicyTest runner and the cluster snapshot
//! reader, so that every "file:line" in an error means the same thing.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One YAML document of a file, with the line its text starts on.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// 1-based line of the document's first line in the file.
    pub first_line: usize,
    pub text: String,
}

/// A problem tied to a place in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Located {
    /// `file:line: message`; `file: message` when the problem is the whole
    /// file (line 0: it cannot be read at all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Splits a YAML stream at `---` document markers (and drops `...` end markers).
/// Documents that hold nothing but comments and blank lines are skipped.
pub fn split_documents(file: &Path, text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker || line == "..." {
            push_document(&mut docs, file, start, &current);
            current.clear();
            start = index + 2;
            if let Some(rest) = line.strip_prefix("---").map(str::trim) {
                // `--- {inline: doc}` starts a document on the marker line itself.
                if is_marker && !rest.is_empty() && !rest.starts_with('#') {
                    current.push_str(rest);
                    current.push('\n');
                    start = index + 1;
                }
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    push_document(&mut docs, file, start, &current);
    docs
}

fn push_document(docs: &mut Vec<Document>, file: &Path, first_line: usize, text: &str) {
    let has_content = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    });
    if has_content {
        docs.push(Document {
            file: file.to_path_buf(),
            first_line,
            text: text.to_string(),
        });
    }
}

impl Document {
    /// Decodes the document as `T`, mapping errors to this file and line.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Located> {
        serde_saphyr::from_str::<T>(&self.text).map_err(|e| self.error_from(&e))
    }

    /// Decodes a data document (cluster snapshots, manifests) that may be far
    /// larger than a policy: `kubectl get -A -o yaml` of a big cluster is one
    /// List with millions of nodes. Alias-expansion limits stay in force.
    pub fn decode_data<T: DeserializeOwned>(&self) -> Result<T, Located> {
        serde_saphyr::from_str_with_options::<T>(&self.text, data_options())
            .map_err(|e| self.error_from(&e))
    }

    /// [`Document::decode_data`] and, when the document has an `items`
    /// sequence, [`Document::data_list_item_lines`], in one pass over the text
    /// where it can: YAML parsing is most of the time `audit` takes on a
    /// snapshot. The answer is exactly that of the two calls: when the one
    /// pass fails (the document is not a mapping, `items` is not a sequence,
    /// or the text is malformed), the two calls give it, errors included.
    pub fn decode_data_with_item_lines(
        &self,
    ) -> Result<(serde_json::Value, Option<Vec<usize>>), Located> {
        if let Ok(one_pass) =
            serde_saphyr::from_str_with_options::<DataMapping>(&self.text, data_options())
        {
            let lines = one_pass
                .item_lines
                .map(|lines| lines.into_iter().map(|l| self.line(l)).collect());
            return Ok((serde_json::Value::Object(one_pass.fields), lines));
        }
        let value: serde_json::Value = self.decode_data()?;
        let lines = match value.get("items") {
            Some(serde_json::Value::Array(_)) => Some(self.data_list_item_lines()?),
            _ => None,
        };
        Ok((value, lines))
    }

    /// The absolute line of each item of a `kind: List` data document, in
    /// order (a second, shape-only pass over the text: values are skipped).
    pub fn data_list_item_lines(&self) -> Result<Vec<usize>, Located> {
        #[derive(serde::Deserialize)]
        struct Lines {
            #[serde(default)]
            items: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
        }
        let lines: Lines = serde_saphyr::from_str_with_options(&self.text, data_options())
            .map_err(|e| self.error_from(&e))?;
        Ok(lines
            .items
            .iter()
            .map(|item| self.line(item.referenced.line()))
            .collect())
    }

    /// The objects of a `kind: List` document (what `kubectl get -o yaml` writes), each
    /// as a document of its own that keeps its lines in this file. An item written in
    /// block style is cut out of the text, so errors inside it name their own line; any
    /// other item (flow style, JSON) becomes one line of JSON at the item's first line.
    pub fn list_items(&self) -> Result<Vec<Document>, Located> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            items: Vec<serde_saphyr::Spanned<serde_json::Value>>,
        }
        let list: List = self.decode()?;
        let lines: Vec<&str> = self.text.lines().collect();
        let mut out = Vec::with_capacity(list.items.len());
        for item in list.items {
            let line = item.referenced.line().max(1);
            let column = item.referenced.column().max(1);
            let cut = block_item_text(&lines, line as usize, column as usize).filter(|text| {
                serde_saphyr::from_str::<serde_json::Value>(text)
                    .ok()
                    .as_ref()
                    == Some(&item.value)
            });
            let text = match cut {
                Some(text) => text,
                None => {
                    serde_json::to_string(&item.value)
                        .map_err(|e| self.located(line, format!("cannot read list item: {e}")))?
                        + "\n"
                }
            };
            out.push(Document {
                file: self.file.clone(),
                first_line: self.line(line),
                text,
            });
        }
        Ok(out)
    }

    /// The absolute line of a line number inside this document.
    pub fn line(&self, line_in_document: u64) -> usize {
        self.first_line + (line_in_document.max(1) as usize) - 1
    }

    pub fn located(&self, line_in_document: u64, message: impl Into<String>) -> Located {
        Located {
            file: self.file.clone(),
            line: self.line(line_in_document),
            message: message.into(),
        }
    }

    fn error_from(&self, error: &serde_saphyr::Error) -> Located {
        let line = error.location().map(|l| l.line()).unwrap_or(1);
        Located {
            file: self.file.clone(),
            line: self.line(line),
            message: plain_message(error),
        }
    }
}

/// A data document that is a mapping, decoded in one pass: every top-level
/// field as `serde_json::Value` decodes it, and for an `items` sequence the
/// line (in the document) each item starts on, as `Spanned` reports it.
struct DataMapping {
    fields: serde_json::Map<String, serde_json::Value>,
    item_lines: Option<Vec<u64>>,
}

impl<'de> serde::Deserialize<'de> for DataMapping {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = DataMapping;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DataMapping, A::Error> {
                let mut fields = serde_json::Map::new();
                let mut item_lines = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "items" {
                        if item_lines.is_some() {
                            // A repeated `items`: the two-pass decode says what it means.
                            return Err(serde::de::Error::custom("repeated key 'items'"));
                        }
                        // Not a sequence: an error, and the caller decodes it the
                        // usual way.
                        let items: Vec<serde_saphyr::Spanned<serde_json::Value>> =
                            map.next_value()?;
                        item_lines = Some(items.iter().map(|i| i.referenced.line()).collect());
                        let values = items.into_iter().map(|i| i.value).collect();
                        fields.insert(key, serde_json::Value::Array(values));
                    } else {
                        // A repeated key replaces the earlier value, as in `Value`.
                        fields.insert(key, map.next_value()?);
                    }
                }
                Ok(DataMapping { fields, item_lines })
            }
        }
        // `any`: a document that is not a mapping (null, a scalar, a
        // sequence) is an error here and decoded the usual way by the caller.
        deserializer.deserialize_any(Fields)
    }
}

/// Limits for data documents: no size limits, alias-expansion limits kept.
fn data_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = usize::MAX;
    budget.max_nodes = usize::MAX;
    budget.max_total_scalar_bytes = usize::MAX;
    budget.max_reader_input_bytes = None;
    budget.max_depth = 256;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.emit_comments = false;
    options
}

/// The text of a block-style list item whose node starts at `line`:`column` (1-based):
/// from that column to the end of its line, then every following line indented at
/// least as far, dedented. `None` when the lines do not have that shape.
fn block_item_text(lines: &[&str], line: usize, column: usize) -> Option<String> {
    let indent = column - 1;
    let first = lines.get(line - 1)?;
    let mut text: String = first.chars().skip(indent).collect();
    text.push('\n');
    for l in lines.iter().skip(line) {
        let leading = l.chars().take_while(|c| *c == ' ').count();
        let trimmed = l.trim();
        if trimmed.is_empty() || (trimmed.starts_with('#') && leading < indent) {
            // Blank lines and outdented comments keep their place (line numbers).
            text.push('\n');
            continue;
        }
        if leading < indent {
            break;
        }
        text.extend(l.chars().skip(indent));
        text.push('\n');
    }
    Some(text)
}

/// The error text without the rendered source snippet (we print our own file:line).
fn plain_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim();
    let first = first.strip_prefix("error:").map(str::trim).unwrap_or(first);
    // Drop a trailing " at line X, column Y" that duplicates our own location.
    let first = first.rfind(" at line ").map_or(first, |i| &first[..i]);
    // The YAML library suggests one of its own options; users cannot set it,
    // and kube-apiserver refuses duplicate keys too.
    let first = first
        .strip_suffix(", set DuplicateKeyPolicy in Options if acceptable")
        .unwrap_or(first);
    // A leading "line L column C: " counts lines inside the document, not the
    // file: beside our own file:line it would be a second, different number.
    match document_position(first) {
        Some((rest, column)) => format!("{rest} (column {column})"),
        None => first.to_string(),
    }
}

/// Splits `line L column C: rest` into (`rest`, C).
fn document_position(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let (column, rest) = rest.split_once(": ")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(line) && digits(column)).then_some((rest, column))
}

/// The path that means standard input, as in kubectl's `-f -`.
pub const STDIN: &str = "-";

/// The text of `path`, or of standard input when `path` is `-`. Standard input
/// is read once and kept, so commands that read their input twice (audit's
/// state pass, then its evaluation pass) see the same text both times.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    static STDIN_TEXT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    if path.as_os_str() != STDIN {
        return std::fs::read_to_string(path);
    }
    STDIN_TEXT
        .get_or_init(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map(|_| text)
                .map_err(|e| format!("cannot read stdin: {e}"))
        })
        .clone()
        .map_err(std::io::Error::other)
}

/// Reads every `.yaml`, `.yml` and `.json` file below `dir`, sorted by path.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    collect(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // kubelet projects ConfigMaps as `..data` → `..<timestamp>/` plus symlinks:
        // hidden entries would load every file a second and third time.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass decode answers exactly what `decode_data` and
    /// `data_list_item_lines` answer, on lists (block and flow items), on
    /// objects, and on the shapes where it falls back.
    #[test]
    fn one_pass_data_decode_equals_the_two_passes() {
        let texts = [
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- {\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"b\"}}\n\n- &x\n  kind: Secret\n  data: {k: v}\n- *x\n",
            "kind: List\nitems: []\n",
            "kind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n",
            "kind: Weird\nitems: {a: 1}\n",
            "kind: List\nitems:\n- a: 1\nitems:\n- b: 2\n",
            "null\n",
            "- a\n- b\n",
            "just a scalar\n",
            "kind: List\nitems:\n- a: [1\n",
        ];
        for text in texts {
            let doc = Document {
                file: PathBuf::from("f.yaml"),
                first_line: 7,
                text: text.to_string(),
            };
            let two_passes = doc.decode_data::<serde_json::Value>().map(|value| {
                let lines = match value.get("items") {
                    Some(serde_json::Value::Array(_)) => doc.data_list_item_lines().ok(),
                    _ => None,
                };
                (value, lines)
            });
            assert_eq!(doc.decode_data_with_item_lines(), two_passes, "{text}");
        }
    }

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let text = "# leading comment\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n...\n";
        let docs = split_documents(Path::new("f.yaml"), text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 3);
        assert_eq!(docs[0].text, "a: 1\n");
        assert_eq!(docs[1].first_line, 7);
        assert_eq!(docs[1].line(2), 8);
    }

    #[test]
    fn list_items_keep_their_lines() {
        let text = "# header\napiVersion: v1\nkind: List\nitems:\n- apiVersion: a/v1\n  kind: A\n  metadata:\n    name: one\n\n- apiVersion: a/v1\n  kind: B\nmetadata:\n  resourceVersion: \"\"\n";
        let docs = split_documents(Path::new("l.yaml"), text);
        let items = docs[0].list_items().expect("items");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].first_line, 5);
        assert_eq!(items[0].line(4), 8, "{}", items[0].text);
        assert!(
            items[0]
                .text
                .starts_with("apiVersion: a/v1\nkind: A\nmetadata:\n  name: one\n")
        );
        assert_eq!(items[1].first_line, 10);
        assert_eq!(items[1].text, "apiVersion: a/v1\nkind: B\n");
    }

    #[test]
    fn flow_list_items_become_json_on_their_line() {
        let text = "{\"apiVersion\": \"v1\", \"kind\": \"List\",\n \"items\": [{\"kind\": \"A\"},\n {\"kind\": \"B\", \"n\": [1, 2]}]}\n";
        let docs = split_documents(Path::new("l.json"), text);
        let items = docs[0].list_items().expect("items");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text, "{\"kind\":\"A\"}\n");
        assert_eq!(items[1].first_line, 3);
        assert_eq!(items[1].text, "{\"kind\":\"B\",\"n\":[1,2]}\n");
    }

    #[test]
    fn decode_errors_name_file_and_absolute_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let docs = split_documents(Path::new("p.yaml"), "a: 1\n---\na: 1\nbogus: 2\n");
        assert!(docs[0].decode::<T>().is_ok());
        let err = docs[1].decode::<T>().unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("bogus"), "{err}");
    }
}
