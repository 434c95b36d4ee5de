//! Result sets for the admin console: column names and types as PgBouncer sends them, rows
//! of text values, written as RowDescription, DataRow and CommandComplete.

use bytes::{BufMut, BytesMut};

use crate::proto::backend;

/// A column type, by its Postgres type OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Ty {
    fn oid(self) -> i32 {
        match self {
            Ty::Text => 25,
            Ty::Int4 => 23,
            Ty::Int8 => 20,
            Ty::Numeric => 1700,
        }
    }
    fn len(self) -> i16 {
        match self {
            Ty::Int4 => 4,
            Ty::Int8 => 8,
            Ty::Text | Ty::Numeric => -1,
        }
    }
}

/// One value: text, or NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V(pub Option<String>);

impl V {
    pub(crate) const NULL: V = V(None);
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V(Some(s.to_string()))
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V(Some(s))
    }
}
impl From<&String> for V {
    fn from(s: &String) -> V {
        V(Some(s.clone()))
    }
}
macro_rules! from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for V {
            fn from(n: $t) -> V {
                V(Some(n.to_string()))
            }
        }
    )*};
}
from_number!(i32, i64, u32, u64, usize, u16, f64);
impl<T: Into<V>> From<Option<T>> for V {
    fn from(o: Option<T>) -> V {
        o.map_or(V::NULL, Into::into)
    }
}

/// A result set being built.
pub(crate) struct Table {
    cols: Vec<(&'static str, Ty)>,
    rows: Vec<Vec<V>>,
}

impl Table {
    /// A result set with these columns.
    pub(crate) fn new(cols: &[(&'static str, Ty)]) -> Table {
        Table {
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }

    /// The same columns and more after them (before any row).
    pub(crate) fn with(mut self, cols: &[(&'static str, Ty)]) -> Table {
        debug_assert!(self.rows.is_empty(), "columns added before the rows");
        self.cols.extend_from_slice(cols);
        self
    }

    /// The position of the column called `name`.
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|(n, _)| *n == name)
    }

    /// The rows so far.
    pub(crate) fn rows(&self) -> &[Vec<V>] {
        &self.rows
    }

    /// Keep only the rows `f` accepts.
    pub(crate) fn retain(&mut self, f: impl FnMut(&Vec<V>) -> bool) {
        self.rows.retain(f);
    }

    /// Add a row; it must have one value per column.
    pub(crate) fn row(&mut self, values: Vec<V>) {
        debug_assert_eq!(values.len(), self.cols.len(), "row width");
        self.rows.push(values);
    }

    /// Write RowDescription, the DataRows and CommandComplete "SHOW".
    pub(crate) fn write(&self, out: &mut BytesMut) {
        backend::message(out, b'T', |b| {
            b.put_i16(self.cols.len() as i16);
            for (name, ty) in &self.cols {
                b.put_slice(name.as_bytes());
                b.put_u8(0);
                b.put_i32(0);
                b.put_i16(0);
                b.put_i32(ty.oid());
                b.put_i16(ty.len());
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        for row in &self.rows {
            backend::message(out, b'D', |b| {
                b.put_i16(row.len() as i16);
                for v in row {
                    match &v.0 {
                        Some(s) => {
                            b.put_i32(s.len() as i32);
                            b.put_slice(s.as_bytes());
                        }
                        None => b.put_i32(-1),
                    }
                }
            });
        }
        command_complete(out, "SHOW");
    }
}

/// CommandComplete with `tag`.
pub(crate) fn command_complete(out: &mut BytesMut, tag: &str) {
    backend::message(out, b'C', |b| {
        b.put_slice(tag.as_bytes());
        b.put_u8(0);
    });
}

/// A NoticeResponse (severity NOTICE).
pub(crate) fn notice(out: &mut BytesMut, msg: &str, detail: Option<&str>) {
    backend::message(out, b'N', |b| {
        for (f, v) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', msg),
        ] {
            b.put_u8(f);
            b.put_slice(v.as_bytes());
            b.put_u8(0);
        }
        if let Some(d) = detail {
            b.put_u8(b'D');
            b.put_slice(d.as_bytes());
            b.put_u8(0);
        }
        b.put_u8(0);
    });
}
