//! A small TOML reader: the subset alumet-setup's profiles and upstream's default configs use (tables,
//! arrays of tables, dotted keys, strings, integers, floats, booleans, arrays, inline tables, comments).

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
    Table(Table),
}

/// Keys in file order.
pub type Table = Vec<(String, Value)>;

pub fn get<'a>(t: &'a Table, key: &str) -> Option<&'a Value> {
    t.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub fn remove(t: &mut Table, key: &str) -> Option<Value> {
    let i = t.iter().position(|(k, _)| k == key)?;
    Some(t.remove(i).1)
}

/// Merges `over` into `base`, tables recursively (upstream's merge_override).
pub fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (t_get_mut(base, &k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (Some(slot), v) => *slot = v,
            (None, v) => base.push((k, v)),
        }
    }
}

fn t_get_mut<'a>(t: &'a mut Table, key: &str) -> Option<&'a mut Value> {
    t.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
}

struct Parser<'s> {
    src: &'s str,
    chars: Vec<char>,
    i: usize,
}

pub fn parse(src: &str) -> Result<Table, String> {
    let mut p = Parser { src, chars: src.chars().collect(), i: 0 };
    let mut root: Table = Vec::new();
    let mut current: Vec<String> = Vec::new();
    loop {
        p.skip_blank_lines();
        match p.peek() {
            None => return Ok(root),
            Some('[') => {
                p.i += 1;
                let array = p.peek() == Some('[');
                if array {
                    p.i += 1;
                }
                p.skip_ws();
                let path = p.key_path()?;
                p.expect(']')?;
                if array {
                    p.expect(']')?;
                }
                p.end_of_line()?;
                let (last, parents) = path.split_last().ok_or_else(|| p.error("empty table name"))?;
                let parent = p.table_at(&mut root, parents)?;
                if array {
                    match t_get_mut(parent, last) {
                        Some(Value::Array(items)) => items.push(Value::Table(Vec::new())),
                        Some(_) => return Err(p.error(&format!("duplicate key `{last}`"))),
                        None => parent.push((last.clone(), Value::Array(vec![Value::Table(Vec::new())]))),
                    }
                } else {
                    match t_get_mut(parent, last) {
                        Some(Value::Table(_)) => {}
                        Some(_) => return Err(p.error(&format!("duplicate key `{last}`"))),
                        None => parent.push((last.clone(), Value::Table(Vec::new()))),
                    }
                }
                current = path;
            }
            Some(_) => {
                let path = p.key_path()?;
                p.expect('=')?;
                p.skip_ws();
                let value = p.value()?;
                p.end_of_line()?;
                let mut full = current.clone();
                full.extend(path);
                let (last, parents) = full.split_last().unwrap();
                let table = p.table_at(&mut root, parents)?;
                if get(table, last).is_some() {
                    return Err(p.error(&format!("duplicate key `{last}`")));
                }
                table.push((last.clone(), value));
            }
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn error(&self, msg: &str) -> String {
        let before: String = self.chars[..self.i.min(self.chars.len())].iter().collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let text = self.src.lines().nth(line - 1).unwrap_or("");
        format!("TOML parse error at line {line}, column {column}\n  |\n{line:<2}| {text}\n  |\n{msg}")
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.i += 1;
        }
    }

    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            while !matches!(self.peek(), None | Some('\n')) {
                self.i += 1;
            }
        }
    }

    fn skip_blank_lines(&mut self) {
        loop {
            self.skip_ws();
            self.skip_comment();
            match self.peek() {
                Some('\n' | '\r') => self.i += 1,
                _ => return,
            }
        }
    }

    fn end_of_line(&mut self) -> Result<(), String> {
        self.skip_ws();
        self.skip_comment();
        match self.peek() {
            None | Some('\n') => Ok(()),
            Some('\r') if self.chars.get(self.i + 1) == Some(&'\n') => Ok(()),
            Some(c) => Err(self.error(&format!("expected newline, found `{c}`"))),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    fn key_path(&mut self) -> Result<Vec<String>, String> {
        let mut path = vec![self.key()?];
        loop {
            self.skip_ws();
            if self.peek() != Some('.') {
                return Ok(path);
            }
            self.i += 1;
            self.skip_ws();
            path.push(self.key()?);
        }
    }

    fn key(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('"') => self.basic_string(),
            Some('\'') => self.literal_string(),
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    self.i += 1;
                }
                if start == self.i {
                    return Err(self.error("invalid key"));
                }
                Ok(self.chars[start..self.i].iter().collect())
            }
        }
    }

    fn basic_string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or_else(|| self.error("unterminated string"))?;
            self.i += 1;
            match c {
                '"' => return Ok(out),
                '\n' => return Err(self.error("unterminated string")),
                '\\' => {
                    let e = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    self.i += 1;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'u' | 'U' => {
                            let n = if e == 'u' { 4 } else { 8 };
                            let hex: String = self.chars.get(self.i..self.i + n).unwrap_or(&[]).iter().collect();
                            self.i += n;
                            let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                            out.push(ch.ok_or_else(|| self.error("invalid unicode escape"))?);
                        }
                        _ => return Err(self.error("invalid escape sequence")),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn literal_string(&mut self) -> Result<String, String> {
        self.i += 1;
        let start = self.i;
        while !matches!(self.peek(), None | Some('\'' | '\n')) {
            self.i += 1;
        }
        if self.peek() != Some('\'') {
            return Err(self.error("unterminated string"));
        }
        let s = self.chars[start..self.i].iter().collect();
        self.i += 1;
        Ok(s)
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('"') => self.basic_string().map(Value::Str),
            Some('\'') => self.literal_string().map(Value::Str),
            Some('[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank_lines();
                    if self.peek() == Some(']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_blank_lines();
                    match self.peek() {
                        Some(',') => self.i += 1,
                        Some(']') => {}
                        _ => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            Some('{') => {
                self.i += 1;
                let mut table: Table = Vec::new();
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.i += 1;
                    return Ok(Value::Table(table));
                }
                loop {
                    self.skip_ws();
                    let path = self.key_path()?;
                    self.expect('=')?;
                    self.skip_ws();
                    let v = self.value()?;
                    let (last, parents) = path.split_last().unwrap();
                    let t = self.table_at(&mut table, parents)?;
                    t.push((last.clone(), v));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.i += 1,
                        Some('}') => {
                            self.i += 1;
                            return Ok(Value::Table(table));
                        }
                        _ => return Err(self.error("expected `,` or `}`")),
                    }
                }
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || "+-._:".contains(c)) {
                    self.i += 1;
                }
                let word: String = self.chars[start..self.i].iter().collect();
                let clean = word.replace('_', "");
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => clean
                        .parse::<i64>()
                        .map(Value::Int)
                        .or_else(|_| clean.parse::<f64>().map(Value::Float))
                        .map_err(|_| {
                            self.i = start;
                            self.error("invalid string\nexpected `\"`, `'`")
                        }),
                }
            }
        }
    }

    /// The table at `path` under `root`, created on the way; an array of tables means its last element.
    fn table_at<'t>(&self, root: &'t mut Table, path: &[String]) -> Result<&'t mut Table, String> {
        let mut t = root;
        for key in path {
            if get(t, key).is_none() {
                t.push((key.clone(), Value::Table(Vec::new())));
            }
            t = match t_get_mut(t, key).unwrap() {
                Value::Table(inner) => inner,
                Value::Array(items) => match items.last_mut() {
                    Some(Value::Table(inner)) => inner,
                    _ => return Err(self.error(&format!("`{key}` is not a table"))),
                },
                _ => return Err(self.error(&format!("`{key}` is not a table"))),
            };
        }
        Ok(t)
    }
}
