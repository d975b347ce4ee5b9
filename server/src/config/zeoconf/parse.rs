//! ZConfig's file syntax, as runzeo reads `zeo.conf`: the structure only (sections, keys, `%define`,
//! `%include`, substitution), with no knowledge of what the keys mean (that is `super`).
//!
//! The rules are ZConfig's (`cfgparser.py`, `substitution.py`):
//! - every line is stripped; blank lines and lines starting with `#` are skipped (a `#` later in
//!   a line is part of the value);
//! - `<type name>` opens a section, `<type name/>` is an empty one, `</type>` closes it; section
//!   types, section names and keys are case-insensitive (kept in lower case);
//! - `key value`: the key runs to the first blank or parenthesis, the value is the rest;
//! - `%define NAME value` sets `$NAME`/`${NAME}` for the lines after it (names are case-insensitive;
//!   redefining a name with another value is an error); `$(NAME)` is the environment variable NAME;
//!   `$$` is a literal `$`; an undefined name is an error naming the line;
//! - `%include PATH` reads another file into the current section, relative to the including file;
//!   the defines are shared with it;
//! - `%import` loads Python schema code, which zeo-server cannot do: it is refused.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Includes nested deeper than this are taken to be a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a line came from; `line` 0 is the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) file: Arc<Path>,
    pub(crate) line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// A syntax error (or an unreadable file), with the line it is on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) loc: Loc,
    pub(crate) message: String,
}

type Result<T> = std::result::Result<T, SyntaxError>;

fn error<T>(loc: &Loc, message: impl Into<String>) -> Result<T> {
    Err(SyntaxError { loc: loc.clone(), message: message.into() })
}

/// `key value`, after substitution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// In lower case.
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) loc: Loc,
}

/// A section; the file itself is the root section, with an empty `kind`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Section {
    /// The section type in lower case (`zeo`, `filestorage`, ...).
    pub(crate) kind: String,
    /// The section name in lower case (`1` in `<filestorage 1>`), as ZConfig normalizes it.
    pub(crate) name: Option<String>,
    /// The line of the section header (line 0 for the root).
    pub(crate) loc: Option<Loc>,
    pub(crate) keys: Vec<Key>,
    pub(crate) sections: Vec<Section>,
}

/// Reads `path` (and what it includes) into its root section. `env` resolves `$(NAME)`.
pub(crate) fn parse_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Section> {
    let mut parser = Parser { defines: HashMap::new(), env, depth: 0 };
    let mut root = Section::default();
    let whole = Loc { file: Arc::from(path), line: 0 };
    parser.read_into(path, &whole, &mut root)?;
    Ok(root)
}

/// Parses text as if it were the file `name` (tests; includes are relative to `name`'s directory).
#[cfg(test)]
pub(crate) fn parse_text(name: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Section> {
    let mut parser = Parser { defines: HashMap::new(), env, depth: 0 };
    let mut root = Section::default();
    parser.parse_into(name, text, &mut root)?;
    Ok(root)
}

struct Parser<'a> {
    /// Lower-case name → substituted value; shared with included files, as in ZConfig.
    defines: HashMap<String, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

impl Parser<'_> {
    /// Reads one file into `target`; `from` is the line that asked for it (for the error).
    fn read_into(&mut self, path: &Path, from: &Loc, target: &mut Section) -> Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return error(from, format!("cannot read {}: {e}", path.display())),
        };
        self.parse_into(path, &text, target)
    }

    fn parse_into(&mut self, path: &Path, text: &str, target: &mut Section) -> Result<()> {
        let file: Arc<Path> = Arc::from(path);
        // Sections opened in this file and not yet closed; each included file must balance its own.
        let mut open: Vec<Section> = Vec::new();
        let mut last = 0;
        for (i, raw) in text.lines().enumerate() {
            let loc = Loc { file: file.clone(), line: i + 1 };
            last = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let current = open.last_mut().unwrap_or(&mut *target);
            if let Some(rest) = line.strip_prefix("</") {
                let Some(kind) = rest.strip_suffix('>') else { return error(&loc, "malformed section end") };
                let Some(done) = open.pop() else { return error(&loc, "unexpected section end") };
                if kind.trim().to_lowercase() != done.kind {
                    return error(&loc, format!("unbalanced section end: </{}> closes <{}>", kind.trim(), done.kind));
                }
                open.last_mut().unwrap_or(&mut *target).sections.push(done);
            } else if let Some(rest) = line.strip_prefix('<') {
                let Some(header) = rest.strip_suffix('>') else { return error(&loc, "malformed section start") };
                let (header, empty) = match header.strip_suffix('/') {
                    Some(h) => (h, true),
                    None => (header, false),
                };
                let section = section_start(header, &loc)?;
                if empty {
                    current.sections.push(section);
                } else {
                    open.push(section);
                }
            } else if let Some(rest) = line.strip_prefix('%') {
                self.directive(rest, &loc, current)?;
            } else {
                let (name, value) = key_value(line, &loc, "malformed configuration data")?;
                let value = self.substitute(value, &loc)?;
                current.keys.push(Key { name: name.to_lowercase(), value, loc });
            }
        }
        if let Some(s) = open.last() {
            let at = s.loc.as_ref().map_or(0, |l| l.line);
            return error(&Loc { file, line: last }, format!("unclosed section <{}> (opened on line {at})", s.kind));
        }
        Ok(())
    }

    fn directive(&mut self, rest: &str, loc: &Loc, current: &mut Section) -> Result<()> {
        let (name, arg) = key_value(rest, loc, "missing or unrecognized directive")?;
        match name {
            "define" | "include" | "import" if arg.is_empty() => error(loc, format!("missing argument to %{name}")),
            "define" => {
                let (def, value) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
                let def = def.to_lowercase();
                if !is_name(&def) {
                    return error(loc, format!("not a legal substitution name: {def:?}"));
                }
                let value = self.substitute(value.trim_start(), loc)?;
                if let Some(old) = self.defines.get(&def)
                    && *old != value
                {
                    return error(loc, format!("cannot redefine {def:?}"));
                }
                self.defines.insert(def, value);
                Ok(())
            }
            "include" => {
                let target = self.substitute(arg, loc)?;
                if target.contains("://") {
                    return error(loc, format!("%include {target}: zeo-server includes files only, not URLs"));
                }
                if self.depth >= MAX_INCLUDE_DEPTH {
                    return error(
                        loc,
                        format!("%include nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"),
                    );
                }
                let base = loc.file.parent().unwrap_or(Path::new(""));
                let path: PathBuf = base.join(target);
                self.depth += 1;
                let r = self.read_into(&path, loc, current);
                self.depth -= 1;
                r
            }
            "import" => error(
                loc,
                format!(
                    "%import {arg}: zeo-server cannot load Python schema components; \
                     it reads the <zeo>, storage, <eventlog> and <runner> sections only"
                ),
            ),
            other => error(loc, format!("unknown directive: %{other}")),
        }
    }

    /// ZConfig's substitution: `$$`, `$name`, `${name}`, `$(ENV)`.
    fn substitute(&self, text: &str, loc: &Loc) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, tail, from_env) = match after.chars().next() {
                None => return error(loc, "illegal lone '$' at the end of the value"),
                Some('$') => {
                    out.push('$');
                    rest = &after[1..];
                    continue;
                }
                Some(open @ ('{' | '(')) => {
                    let close = if open == '{' { '}' } else { ')' };
                    let inner = &after[1..];
                    let n = name_len(inner);
                    if n == 0 {
                        return error(loc, format!("'${open}' not followed by a name"));
                    }
                    if !inner[n..].starts_with(close) {
                        return error(loc, format!("'${open}{}' not followed by '{close}'", &inner[..n]));
                    }
                    (&inner[..n], &inner[n + 1..], open == '(')
                }
                Some(_) => {
                    let n = name_len(after);
                    if n == 0 {
                        return error(loc, "'$' not followed by '$' or a name (write $$ for a literal $)");
                    }
                    (&after[..n], &after[n..], false)
                }
            };
            let value = if from_env {
                (self.env)(name).ok_or_else(|| SyntaxError {
                    loc: loc.clone(),
                    message: format!("$({name}): environment variable {name} is not set"),
                })?
            } else {
                self.defines.get(&name.to_lowercase()).cloned().ok_or_else(|| SyntaxError {
                    loc: loc.clone(),
                    message: format!("${name} is not defined (define it with %define {name} VALUE before this line)"),
                })?
            };
            out.push_str(&value);
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `<type>` or `<type name>` (the brackets and the empty-section `/` already removed).
fn section_start(header: &str, loc: &Loc) -> Result<Section> {
    let words: Vec<&str> = header.split_whitespace().collect();
    let legal = |w: &&str| !w.contains(['(', ')']);
    if words.is_empty() || words.len() > 2 || !words.iter().all(legal) {
        return error(loc, format!("malformed section header <{header}>"));
    }
    Ok(Section {
        kind: words[0].to_lowercase(),
        name: words.get(1).map(|n| n.to_lowercase()),
        loc: Some(loc.clone()),
        ..Section::default()
    })
}

/// Splits `key value`: the key runs to the first blank or parenthesis.
fn key_value<'t>(line: &'t str, loc: &Loc, malformed: &str) -> Result<(&'t str, &'t str)> {
    let end = line.find(|c: char| c.is_whitespace() || c == '(' || c == ')').unwrap_or(line.len());
    if end == 0 {
        return error(loc, malformed);
    }
    Ok((&line[..end], line[end..].trim_start()))
}

/// Length of the substitution name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`), 0 if none.
fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.first().is_none_or(|c| !(c.is_ascii_alphabetic() || *c == b'_')) {
        return 0;
    }
    b.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count()
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && name_len(s) == s.len()
}
