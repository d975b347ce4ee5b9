//! Parsers for the text arguments of protocol-0 opcodes (`INT`, `LONG`, `FLOAT`, `STRING`,
//! `UNICODE`).
//!
//! They follow the C unpickler (zodbpickle's `_pickle`, on CPython 3.11's string functions),
//! because that is what reads these pickles in ZODB and ZEO today, quirks included: `INT` goes
//! through C `strtol` with base 0 (so `010` is octal 8) and falls back to Python's `int(s, 0)`;
//! a three-byte `INT` line holding 0 or 1 is a bool.

use super::value::Value;

/// Python refuses to convert decimal strings longer than this (CPython 3.11's
/// `sys.int_info.str_digits_check_threshold`), because the conversion is quadratic. We apply the
/// cap to every base, which only matters for absurd hex literals no pickler writes.
pub(crate) const MAX_INT_DIGITS: usize = 4300;

/// Why an integer literal was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IntTextError {
    /// Not a valid literal.
    Invalid,
    /// More than [`MAX_INT_DIGITS`] digits.
    TooManyDigits,
}

/// C `isspace` in the "C" locale, which is also Python's `Py_ISSPACE` on bytes.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The part of a line a C string function sees: up to the first NUL.
fn c_str(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b == 0) {
        Some(n) => s.get(..n).unwrap_or(s),
        None => s,
    }
}

/// Value of an ASCII digit in bases up to 36.
fn digit_value(b: u8) -> Option<u32> {
    char::from(b).to_digit(36)
}

/// `INT`: `line` is the argument including its trailing newline.
pub(crate) fn parse_int_opcode(line: &[u8]) -> Result<Value, IntTextError> {
    let s = c_str(line);
    if let Some((x, end)) = strtol_base0(s) {
        // strtol must have stopped at the newline or at the end of the C string.
        if matches!(s.get(end), Some(b'\n') | None) {
            if line.len() == 3 && (x == 0 || x == 1) {
                return Ok(Value::Bool(x == 1));
            }
            return Ok(Value::Int(x));
        }
    }
    py_int_base0(s)
}

/// `LONG`: `line` includes the trailing newline; the Python 2 `L` suffix is optional.
pub(crate) fn parse_long_opcode(line: &[u8]) -> Result<Value, IntTextError> {
    let body = match line.len().checked_sub(2).and_then(|i| line.get(..i + 2)) {
        Some(l) if l.get(l.len() - 2) == Some(&b'L') => l.get(..l.len() - 2).unwrap_or(l),
        _ => line,
    };
    py_int_base0(c_str(body))
}

/// C `strtol(s, &end, 0)` on a 64-bit `long`: `None` on overflow (`ERANGE`), otherwise the value
/// and the index where parsing stopped (0 when no digits were found, as C resets `end`).
fn strtol_base0(s: &[u8]) -> Option<(i64, usize)> {
    let mut i = s.iter().position(|&b| !is_c_space(b)).unwrap_or(s.len());
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut base = 10;
    if s.get(i) == Some(&b'0') {
        let hex_prefix = matches!(s.get(i + 1), Some(b'x' | b'X'));
        let hex_digit_follows = s.get(i + 2).and_then(|&b| char::from(b).to_digit(16));
        if hex_prefix && hex_digit_follows.is_some() {
            base = 16;
            i += 2;
        } else {
            base = 8;
        }
    }
    let start = i;
    // Accumulate the magnitude in i128 so that i64::MIN can be represented before negation.
    let mut magnitude: i128 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&b| char::from(b).to_digit(base)) {
        magnitude = magnitude * i128::from(base) + i128::from(d);
        if magnitude > i128::from(i64::MAX) + 1 {
            overflow = true;
            magnitude = i128::from(i64::MAX) + 1;
        }
        i += 1;
    }
    if i == start {
        return Some((0, 0));
    }
    let value = if negative { -magnitude } else { magnitude };
    if overflow {
        return None;
    }
    i64::try_from(value).ok().map(|v| (v, i))
}

/// Python's `int(s, 0)` (`PyLong_FromString` with base 0): optional whitespace and sign, a
/// `0x`/`0o`/`0b` prefix or decimal without leading zeros, single underscores between digits.
pub(crate) fn py_int_base0(s: &[u8]) -> Result<Value, IntTextError> {
    let mut i = s.iter().position(|&b| !is_c_space(b)).unwrap_or(s.len());
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut base = 10u32;
    let mut zero_only = false;
    if s.get(i) == Some(&b'0') {
        match s.get(i + 1).map(u8::to_ascii_lowercase) {
            Some(b'x') => base = 16,
            Some(b'o') => base = 8,
            Some(b'b') => base = 2,
            // "Old" C-style octal like 010 is invalid, but 0, 00 and 0_0 are fine.
            _ => zero_only = true,
        }
        if base != 10 {
            i += 2;
            if s.get(i) == Some(&b'_') {
                i += 1;
            }
        }
    }
    if s.get(i) == Some(&b'_') {
        return Err(IntTextError::Invalid);
    }
    let mut digits: Vec<u32> = Vec::new();
    let mut prev_underscore = false;
    while let Some(&b) = s.get(i) {
        if b == b'_' {
            if prev_underscore {
                return Err(IntTextError::Invalid);
            }
            prev_underscore = true;
        } else {
            match digit_value(b).filter(|&d| d < base) {
                Some(d) => digits.push(d),
                None => break,
            }
            prev_underscore = false;
            if digits.len() > MAX_INT_DIGITS {
                return Err(IntTextError::TooManyDigits);
            }
        }
        i += 1;
    }
    if prev_underscore || digits.is_empty() {
        return Err(IntTextError::Invalid);
    }
    if s.get(i..).is_some_and(|rest| rest.iter().any(|&b| !is_c_space(b))) {
        return Err(IntTextError::Invalid);
    }
    if zero_only && digits.iter().any(|&d| d != 0) {
        return Err(IntTextError::Invalid);
    }
    Ok(int_from_digits(&digits, base, negative))
}

/// Builds the int from its digits by schoolbook multiply-add on 32-bit limbs (digit count is
/// capped, so quadratic time is fine), then converts to canonical [`Value`] form.
fn int_from_digits(digits: &[u32], base: u32, negative: bool) -> Value {
    let mut limbs: Vec<u32> = Vec::new();
    for &d in digits {
        let mut carry = u64::from(d);
        for limb in limbs.iter_mut() {
            let t = u64::from(*limb) * u64::from(base) + carry;
            *limb = t as u32; // Keep the low 32 bits; the rest carries.
            carry = t >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32); // carry < 2^32 since base and limb are below 2^32.
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // Sign byte, so the magnitude reads as non-negative.
    if negative {
        negate_le(&mut bytes);
    }
    Value::int_from_le_bytes(&bytes)
}

/// Two's-complement negation in place: invert and add one.
fn negate_le(bytes: &mut [u8]) {
    let mut carry = true;
    for b in bytes.iter_mut() {
        let (sum, overflow) = (!*b).overflowing_add(u8::from(carry));
        *b = sum;
        carry = overflow;
    }
}

/// `FLOAT`: C `PyOS_string_to_double` must consume everything up to the newline (or a NUL). No
/// surrounding whitespace, no underscores; a finite literal that overflows is an error, as in
/// Python, while `inf`/`nan` spelled out are accepted.
pub(crate) fn parse_float_opcode(line: &[u8]) -> Option<f64> {
    let s = c_str(line);
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    let text = std::str::from_utf8(s).ok()?;
    if text.contains('_') {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let spelled_inf = text.trim_start_matches(['+', '-']).starts_with(['i', 'I']);
    if value.is_infinite() && !spelled_inf {
        return None;
    }
    Some(value)
}

/// `STRING`: strip trailing control bytes (zodbpickle compares a signed `char` with `' '`, so
/// bytes ≥ 0x80 are stripped too), require matching outer quotes, then undo `repr` escapes
/// (`codecs.escape_decode`).
pub(crate) fn parse_string_opcode(line: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut len = line.len();
    while len > 0 && line.get(len - 1).is_some_and(|&b| b <= b' ' || b >= 0x80) {
        len -= 1;
    }
    let s = line.get(..len).unwrap_or_default();
    let inner = match (s.first(), s.last()) {
        (Some(&q @ (b'"' | b'\'')), Some(&end)) if len > 1 && end == q => s.get(1..len - 1).unwrap_or_default(),
        _ => return Err("insecure string pickle"),
    };
    escape_decode(inner)
}

/// CPython's `_PyBytes_DecodeEscape` (strict): the escapes of a Python 2 `repr(str)`.
pub(crate) fn escape_decode(s: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            return Err("trailing \\ in string");
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'a' => out.push(0x07),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8); // C stores it in a char: values above 0o377 wrap.
            }
            b'x' => {
                let hi = s.get(i).and_then(|&b| char::from(b).to_digit(16));
                let lo = s.get(i + 1).and_then(|&b| char::from(b).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8); // Two hex digits: below 256.
                        i += 2;
                    }
                    _ => return Err("invalid \\x escape"),
                }
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// `UNICODE`: Python's `raw-unicode-escape` codec. Only `\uXXXX` and `\UXXXXXXXX` are escapes;
/// every other byte is a Latin-1 code point. `None` for bad or truncated escapes, code points
/// above U+10FFFF, and lone surrogates (valid in Python, impossible in a Rust `String`).
pub(crate) fn raw_unicode_escape_decode(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(char::from(c));
            continue;
        }
        let count = match s.get(i) {
            Some(b'u') => 4,
            Some(b'U') => 8,
            Some(&other) => {
                // A backslash before anything else is literal, and so is that character: this
                // is why `\\u0041` stays as written.
                out.push('\\');
                out.push(char::from(other));
                i += 1;
                continue;
            }
            None => {
                out.push('\\');
                continue;
            }
        };
        i += 1;
        let hex = s.get(i..i + count)?;
        let mut code: u32 = 0;
        for &h in hex {
            code = code * 16 + char::from(h).to_digit(16)?;
        }
        out.push(char::from_u32(code)?);
        i += count;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(line: &str) -> Result<Value, IntTextError> {
        parse_int_opcode(line.as_bytes())
    }

    #[test]
    fn int_opcode_follows_c_unpickler() {
        assert_eq!(int("00\n"), Ok(Value::Bool(false)));
        assert_eq!(int("01\n"), Ok(Value::Bool(true)));
        assert_eq!(int("-0\n"), Ok(Value::Bool(false)));
        assert_eq!(int("1\n"), Ok(Value::Int(1)));
        assert_eq!(int("010\n"), Ok(Value::Int(8)));
        assert_eq!(int(" 12 \n"), Ok(Value::Int(12)));
        assert_eq!(int("000\n"), Ok(Value::Int(0)));
        assert_eq!(int("0x_1f\n"), Ok(Value::Int(31)));
        assert_eq!(int("+5\n"), Ok(Value::Int(5)));
        assert_eq!(int("0_1\n"), Err(IntTextError::Invalid));
        assert_eq!(int("1_\n"), Err(IntTextError::Invalid));
        assert_eq!(int("_1\n"), Err(IntTextError::Invalid));
        assert_eq!(int("1__0\n"), Err(IntTextError::Invalid));
        assert_eq!(int("0999\n"), Err(IntTextError::Invalid));
        assert_eq!(int("-\n"), Err(IntTextError::Invalid));
        assert_eq!(int("-9223372036854775808\n"), Ok(Value::Int(i64::MIN)), "strtol's own limit");
        assert_eq!(int("9223372036854775808\n"), Ok(Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])));
        assert_eq!(
            int("-9223372036854775809\n"),
            Ok(Value::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]))
        );
    }

    #[test]
    fn long_opcode() {
        assert_eq!(parse_long_opcode(b"12L\n"), Ok(Value::Int(12)));
        assert_eq!(parse_long_opcode(b"12\n"), Ok(Value::Int(12)));
        assert_eq!(parse_long_opcode(b"0x10L\n"), Ok(Value::Int(16)));
        assert_eq!(parse_long_opcode(b"-1L\n"), Ok(Value::Int(-1)));
        assert_eq!(parse_long_opcode(b"L\n"), Err(IntTextError::Invalid));
        assert_eq!(parse_long_opcode(b"\n"), Err(IntTextError::Invalid));
        let huge = format!("{}L\n", "9".repeat(MAX_INT_DIGITS + 1));
        assert_eq!(parse_long_opcode(huge.as_bytes()), Err(IntTextError::TooManyDigits));
        let ok = format!("{}L\n", "9".repeat(MAX_INT_DIGITS));
        assert!(matches!(parse_long_opcode(ok.as_bytes()), Ok(Value::BigInt(_))));
    }

    #[test]
    fn float_opcode() {
        assert_eq!(parse_float_opcode(b"1.5\n"), Some(1.5));
        assert_eq!(parse_float_opcode(b"-inf\n"), Some(f64::NEG_INFINITY));
        assert!(parse_float_opcode(b"nan\n").is_some_and(f64::is_nan));
        assert_eq!(parse_float_opcode(b" inf\n"), None);
        assert_eq!(parse_float_opcode(b"1_0\n"), None);
        assert_eq!(parse_float_opcode(b"1e500\n"), None);
        assert_eq!(parse_float_opcode(b"1e\n"), None);
    }

    #[test]
    fn string_opcode() {
        assert_eq!(parse_string_opcode(b"'abc'\n"), Ok(b"abc".to_vec()));
        assert_eq!(parse_string_opcode(b"\"a'b\"\n"), Ok(b"a'b".to_vec()));
        assert_eq!(parse_string_opcode(b"'\\x00\\n\\\\\\'\\q\\400\\1a'\n"), Ok(b"\x00\n\\'\\q\x00\x01a".to_vec()));
        assert!(parse_string_opcode(b"abc\n").is_err());
        assert!(parse_string_opcode(b"'\n").is_err());
        assert!(parse_string_opcode(b"'a\\x4'\n").is_err());
        assert!(parse_string_opcode(b"'abc\\'\n").is_err());
    }

    #[test]
    fn raw_unicode_escape() {
        let d = |s: &[u8]| raw_unicode_escape_decode(s);
        assert_eq!(d(b"abc\\").as_deref(), Some("abc\\"));
        assert_eq!(d(b"\\\\u0041").as_deref(), Some("\\\\u0041"));
        assert_eq!(d(b"\\u0041").as_deref(), Some("A"));
        assert_eq!(d(b"\\x41").as_deref(), Some("\\x41"));
        assert_eq!(d(b"\\U0001F600").as_deref(), Some("\u{1F600}"));
        assert_eq!(d(b"\xe9").as_deref(), Some("\u{e9}"));
        assert_eq!(d(b"\\ud800"), None);
        assert_eq!(d(b"\\u12"), None);
        assert_eq!(d(b"\\U00110000"), None);
    }
}
