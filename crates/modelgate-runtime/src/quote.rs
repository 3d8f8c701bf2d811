//! Client-supplied strings and shapes as they appear in error messages.
//!
//! Every name, id, key or shape a client sent that a message quotes goes
//! through here, so a message stays short whatever was sent: a 1 MB model
//! name echoed whole into `grpc-message` makes the client's own HTTP/2 stack
//! refuse the reply (a RESOURCE_EXHAUSTED about metadata size) instead of
//! showing the NOT_FOUND it should have seen.

use std::fmt;

/// Characters of a quoted string shown before it is cut.
pub const QUOTE_CHARS: usize = 128;

/// Dimensions of a shape shown before it is cut.
pub const SHAPE_DIMS: usize = 16;

/// `s` in single quotes; past [`QUOTE_CHARS`] characters it is cut, with an
/// ellipsis and its full length: `'abc…' (1048576 bytes)`.
pub fn quoted(s: &str) -> Quoted<'_> {
    Quoted(s)
}

/// See [`quoted`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_CHARS) {
            None => write!(f, "'{}'", self.0),
            Some((cut, _)) => write!(f, "'{}…' ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// A shape as `[1, 30]`; past [`SHAPE_DIMS`] dimensions it is cut, with its
/// rank: `[1, 1, …] (1000000 dims)`.
pub fn shape(dims: &[i64]) -> Shape<'_> {
    Shape(dims)
}

/// See [`shape`].
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a>(&'a [i64]);

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= SHAPE_DIMS {
            return write!(f, "{:?}", self.0);
        }
        f.write_str("[")?;
        for d in &self.0[..SHAPE_DIMS] {
            write!(f, "{d}, ")?;
        }
        write!(f, "…] ({} dims)", self.0.len())
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), with an
/// ellipsis and its full length when cut: the last guard on a message that
/// lists many client strings.
pub fn truncated(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(quoted("m").to_string(), "'m'");
        let exact = "é".repeat(QUOTE_CHARS);
        assert_eq!(quoted(&exact).to_string(), format!("'{exact}'"));
        let long = "é".repeat(1 << 19);
        let q = quoted(&long).to_string();
        assert_eq!(q, format!("'{}…' (1048576 bytes)", "é".repeat(QUOTE_CHARS)));
    }

    #[test]
    fn shapes_are_cut_after_sixteen_dims() {
        assert_eq!(shape(&[1, 30]).to_string(), "[1, 30]");
        let long = shape(&[1; 1000]).to_string();
        assert!(long.ends_with(", …] (1000 dims)") && long.len() < 80, "{long}");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncated("abc", 3), "abc");
        assert_eq!(truncated("ééé", 3), "é… (6 bytes)");
    }
}
