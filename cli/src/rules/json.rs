//! A small JSON reader that remembers where every value and key starts (line and column), so
//! the rules file's semantic errors can point at the exact value. It only runs on text that
//! serde_json has already accepted: serde_json stays the judge of what is valid JSON and the
//! source of syntax error messages; this reader only adds positions.

/// Where something starts in the file: 1-based line, 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number,
    String(String),
    Array(Vec<Spanned<Value>>),
    /// Keys in file order, duplicates kept (the caller reports them).
    Object(Vec<(Spanned<String>, Spanned<Value>)>),
}

impl Value {
    /// "a string", "an array": how error messages name what they found.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Why the reader stopped; only reached if serde_json accepted text this reader does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub position: Position,
    pub message: &'static str,
}

pub(crate) fn parse(text: &str) -> Result<Spanned<Value>, SyntaxError> {
    let mut reader = Reader {
        chars: text.char_indices().peekable(),
        line: 1,
        column: 1,
    };
    reader.skip_whitespace();
    let value = reader.value(0)?;
    reader.skip_whitespace();
    match reader.peek() {
        None => Ok(value),
        Some(_) => Err(reader.error("trailing characters")),
    }
}

/// Deeper than this is not a rules file; stop instead of overflowing the stack.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    line: usize,
    column: usize,
}

impl Reader<'_> {
    fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }

    fn error(&self, message: &'static str) -> SyntaxError {
        SyntaxError {
            position: self.position(),
            message,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn expect(&mut self, wanted: char) -> Result<(), SyntaxError> {
        match self.next() {
            Some(c) if c == wanted => Ok(()),
            _ => Err(self.error("unexpected character")),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.next();
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned<Value>, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        let position = self.position();
        let value = match self.peek() {
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::String(self.string()?),
            Some('t') => self.literal("true", Value::Bool(true))?,
            Some('f') => self.literal("false", Value::Bool(false))?,
            Some('n') => self.literal("null", Value::Null)?,
            Some('-' | '0'..='9') => self.number()?,
            _ => return Err(self.error("expected a value")),
        };
        Ok(Spanned { value, position })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, SyntaxError> {
        for wanted in word.chars() {
            self.expect(wanted)?;
        }
        Ok(value)
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let mut any_digit = false;
        while let Some(c) = self.peek() {
            match c {
                '0'..='9' => any_digit = true,
                '-' | '+' | '.' | 'e' | 'E' => {}
                _ => break,
            }
            self.next();
        }
        if any_digit {
            Ok(Value::Number)
        } else {
            Err(self.error("invalid number"))
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(self.error("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => out.push(self.unicode_escape()?),
                    _ => return Err(self.error("invalid escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` when the first is a high surrogate.
    /// A lone surrogate becomes U+FFFD, as serde_json does when it reads into a `String` lossily.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            if self.peek() == Some('\\') {
                self.next();
                self.expect('u')?;
                let second = self.hex4()?;
                if (0xDC00..0xE000).contains(&second) {
                    let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    return Ok(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
            }
            return Ok('\u{FFFD}');
        }
        Ok(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            code = code * 16 + digit;
        }
        Ok(code)
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.expect('[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(']') {
            self.next();
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.next() {
                Some(',') => continue,
                Some(']') => return Ok(Value::Array(items)),
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.expect('{')?;
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some('}') {
            self.next();
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            let position = self.position();
            let key = Spanned {
                value: self.string()?,
                position,
            };
            self.skip_whitespace();
            self.expect(':')?;
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.next() {
                Some(',') => continue,
                Some('}') => return Ok(Value::Object(members)),
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn positions_point_at_keys_and_values() {
        let text = "{\n  \"rules\": [\n    { \"dest\": \"wr\\u00efter\", \"n\": -1.5e3 }\n  ]\n}";
        let root = parse(text).unwrap();
        assert_eq!(root.position, at(1, 1));
        let Value::Object(members) = root.value else {
            panic!("object")
        };
        assert_eq!(members[0].0.position, at(2, 3));
        let Value::Array(rules) = &members[0].1.value else {
            panic!("array")
        };
        assert_eq!(rules[0].position, at(3, 5));
        let Value::Object(rule) = &rules[0].value else {
            panic!("object")
        };
        assert_eq!(rule[0].0.position, at(3, 7));
        assert_eq!(rule[0].1.position, at(3, 15));
        assert_eq!(rule[0].1.value, Value::String("wrïter".into()));
        assert_eq!(rule[1].1.value, Value::Number);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let root = parse("{\"é\": \"x\", \"b\": 1}").unwrap();
        let Value::Object(members) = root.value else {
            panic!("object")
        };
        assert_eq!(members[1].0.position, at(1, 12));
    }

    #[test]
    fn surrogate_pairs_and_duplicates_are_kept() {
        let root = parse(r#"{"a": "\ud83d\ude00", "a": null}"#).unwrap();
        let Value::Object(members) = root.value else {
            panic!("object")
        };
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].1.value, Value::String("😀".into()));
    }
}
