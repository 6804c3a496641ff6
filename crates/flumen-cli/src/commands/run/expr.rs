//! Arithmetic on a JSON item's numbers, for `compute = { error_rate = "errors / views" }`:
//! `+ - * /`, parentheses, number literals and field paths. Integers stay integers under
//! `+ - *` (until they overflow); `/` always gives a float, as `errors as f64 / views as f64`
//! in Rust. A missing or non-numeric field, or a division by zero, makes the result `null`.

use serde_json::Value;

use super::value::Path;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Int(i64),
    Float(f64),
    Field(Path),
    Bin(Box<Expr>, char, Box<Expr>),
}

/// A number while evaluating.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl Expr {
    /// Parses `text`; the error says what was expected where.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let tokens = tokens(text)?;
        let mut p = Parser { tokens, at: 0 };
        let e = p.sum()?;
        match p.tokens.get(p.at) {
            None => Ok(e),
            Some(t) => Err(format!("{text:?}: unexpected {t} (expected an operator)")),
        }
    }

    /// The value of the expression on `item`: a JSON number, or `null`.
    pub fn eval(&self, item: &Value) -> Value {
        match self.num(item) {
            Some(Num::Int(i)) => Value::from(i),
            Some(Num::Float(f)) => {
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
            None => Value::Null,
        }
    }

    fn num(&self, item: &Value) -> Option<Num> {
        Some(match self {
            Expr::Int(i) => Num::Int(*i),
            Expr::Float(f) => Num::Float(*f),
            Expr::Field(p) => match p.get(item)? {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Num::Int(i),
                    None => Num::Float(n.as_f64()?),
                },
                _ => return None,
            },
            Expr::Bin(a, op, b) => {
                let (a, b) = (a.num(item)?, b.num(item)?);
                match (op, a, b) {
                    ('/', _, _) if b.f() == 0.0 => return None,
                    ('/', _, _) => Num::Float(a.f() / b.f()),
                    ('+', Num::Int(x), Num::Int(y)) if x.checked_add(y).is_some() => {
                        Num::Int(x + y)
                    }
                    ('-', Num::Int(x), Num::Int(y)) if x.checked_sub(y).is_some() => {
                        Num::Int(x - y)
                    }
                    ('*', Num::Int(x), Num::Int(y)) if x.checked_mul(y).is_some() => {
                        Num::Int(x * y)
                    }
                    ('+', _, _) => Num::Float(a.f() + b.f()),
                    ('-', _, _) => Num::Float(a.f() - b.f()),
                    _ => Num::Float(a.f() * b.f()),
                }
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Num(Expr),
    Field(String),
    Op(char),
    Open,
    Close,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Num(Expr::Int(i)) => write!(f, "number {i}"),
            Token::Num(Expr::Float(x)) => write!(f, "number {x}"),
            Token::Num(_) => f.write_str("number"),
            Token::Field(p) => write!(f, "field {p}"),
            Token::Op(c) => write!(f, "`{c}`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
        }
    }
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '+' | '-' | '*' | '/' => {
                out.push(Token::Op(c));
                chars.next();
            }
            '(' => {
                out.push(Token::Open);
                chars.next();
            }
            ')' => {
                out.push(Token::Close);
                chars.next();
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let s = &text[i..end];
                let n = match s.parse::<i64>() {
                    Ok(n) => Expr::Int(n),
                    Err(_) => Expr::Float(
                        s.parse::<f64>()
                            .map_err(|_| format!("{text:?}: {s:?} is not a number"))?,
                    ),
                };
                out.push(Token::Num(n));
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '.' || d == '$' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Field(text[i..end].to_owned()));
            }
            other => {
                return Err(format!(
                    "{text:?}: unexpected {other:?} (expected a field, a number, + - * / or parentheses)"
                ));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_op(&self, ops: &[char]) -> Option<char> {
        match self.tokens.get(self.at) {
            Some(Token::Op(c)) if ops.contains(c) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.product()?;
        while let Some(op) = self.peek_op(&['+', '-']) {
            self.at += 1;
            e = Expr::Bin(Box::new(e), op, Box::new(self.product()?));
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while let Some(op) = self.peek_op(&['*', '/']) {
            self.at += 1;
            e = Expr::Bin(Box::new(e), op, Box::new(self.atom()?));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        match t {
            Some(Token::Num(n)) => Ok(n),
            Some(Token::Field(f)) => Ok(Expr::Field(Path::parse(&f))),
            Some(Token::Open) => {
                let e = self.sum()?;
                match self.tokens.get(self.at) {
                    Some(Token::Close) => {
                        self.at += 1;
                        Ok(e)
                    }
                    _ => Err("expected `)`".to_owned()),
                }
            }
            Some(t) => Err(format!("unexpected {t} (expected a field or a number)")),
            None => Err("expected a field or a number at the end".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arithmetic_on_fields_keeps_integers_and_divides_as_floats() {
        let item = json!({"errors": 3, "views": 40, "ms": 2.5, "s": "x", "a": {"b": 2}});
        let eval = |e: &str| Expr::parse(e).expect(e).eval(&item);
        assert_eq!(eval("errors / views"), json!(3.0 / 40.0));
        assert_eq!(eval("errors + views * 2"), json!(83));
        assert_eq!(eval("(errors + 1) * a.b"), json!(8));
        assert_eq!(eval("views / 40"), json!(1.0));
        assert_eq!(eval("ms - 0.5"), json!(2.0));
        assert_eq!(eval("errors / 0"), Value::Null);
        assert_eq!(eval("s + 1"), Value::Null);
        assert_eq!(eval("missing * 2"), Value::Null);
        assert!(Expr::parse("errors /").is_err());
        assert!(Expr::parse("(errors").is_err());
        assert_eq!(
            Expr::parse("errors views").expect_err("two operands"),
            "\"errors views\": unexpected field views (expected an operator)"
        );
        assert!(Expr::parse("errors % 2").is_err());
    }
}
