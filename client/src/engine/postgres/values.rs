//! Values across the PostgreSQL boundary, and the SQL dialect's one
//! difference the client papers over.
//!
//! * Parameters go in PostgreSQL's **text** format ([`TextParam`]): the
//!   server parses them for whatever type the statement needs (integers,
//!   numerics, timestamps, UUIDs, JSON...), exactly as it parses a literal,
//!   so a rusqlite [`Value`] binds to any column and a bad one is the
//!   server's own clear error.
//! * Results come back in the driver's binary format and are turned into
//!   [`Value`]s by type ([`AnyValue`]): integers, floats and booleans as
//!   numbers, text-like types, numerics, UUIDs and date/times as text,
//!   `bytea` as a blob. Any other type is an error that says to cast it.
//! * SQLite-style placeholders (`?1`, `?`) become `$1` ([`placeholders`]).

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres::GenericClient;
use postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::Value;

use super::errors::error;
use crate::error::{Error, Result};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A rusqlite value bound as a PostgreSQL parameter, in text format.
#[derive(Debug)]
pub(crate) struct TextParam<'a>(pub(crate) &'a Value);

impl ToSql for TextParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Integer(i) => out.put_slice(i.to_string().as_bytes()),
            Value::Real(r) => {
                let text = if r.is_nan() {
                    "NaN".to_string()
                } else if r.is_infinite() {
                    if *r > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
                } else {
                    format!("{r:?}")
                };
                out.put_slice(text.as_bytes());
            }
            Value::Text(t) => out.put_slice(t.as_bytes()),
            Value::Blob(b) if *ty == Type::BYTEA => {
                out.put_slice(b"\\x");
                for byte in b {
                    out.put_slice(format!("{byte:02x}").as_bytes());
                }
            }
            Value::Blob(b) => {
                return Err(format!("a blob of {} bytes cannot be a {ty} value", b.len()).into());
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The parameters as the driver takes them.
pub(crate) fn params(values: &[Value]) -> Vec<TextParam<'_>> {
    values.iter().map(TextParam).collect()
}

/// Any result column, read as a rusqlite value.
pub(crate) struct AnyValue(pub(crate) Value);

impl<'a> FromSql<'a> for AnyValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let int = |n: usize| -> Result<i64, BoxError> {
            let bytes = raw.get(..n).ok_or("short integer")?;
            Ok(match n {
                2 => i64::from(i16::from_be_bytes(bytes.try_into()?)),
                4 => i64::from(i32::from_be_bytes(bytes.try_into()?)),
                _ => i64::from_be_bytes(bytes.try_into()?),
            })
        };
        let text = || -> Result<Value, BoxError> {
            Ok(Value::Text(std::str::from_utf8(raw)?.to_string()))
        };
        let value = match *ty {
            Type::BOOL => Value::Integer(i64::from(raw.first().copied().unwrap_or(0) != 0)),
            Type::INT2 => Value::Integer(int(2)?),
            Type::INT4 => Value::Integer(int(4)?),
            Type::INT8 => Value::Integer(int(8)?),
            Type::OID => Value::Integer(i64::from(u32::from_be_bytes(
                raw.get(..4).ok_or("short oid")?.try_into()?,
            ))),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(
                raw.get(..4).ok_or("short float")?.try_into()?,
            ))),
            Type::FLOAT8 => Value::Real(f64::from_be_bytes(
                raw.get(..8).ok_or("short float")?.try_into()?,
            )),
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
            | Type::CHAR => text()?,
            Type::JSONB => {
                Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_string())
            }
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::UUID => Value::Text(uuid(raw)?),
            Type::NUMERIC => Value::Text(numeric(raw)?),
            Type::TIMESTAMP => Value::Text(timestamp(int(8)?, false)),
            Type::TIMESTAMPTZ => Value::Text(timestamp(int(8)?, true)),
            Type::DATE => Value::Text(date(int(4)?)),
            Type::TIME => Value::Text(time_of_day(int(8)?)),
            _ if matches!(ty.kind(), postgres::types::Kind::Enum(_)) => text()?,
            _ => {
                return Err(format!(
                    "a {ty} column cannot be read as a SQLite value; cast it in the query (e.g. \
                     SELECT col::text)"
                )
                .into());
            }
        };
        Ok(AnyValue(value))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(AnyValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn uuid(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("a uuid is 16 bytes".into());
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// PostgreSQL's binary `numeric` (base-10000 digits) as decimal text.
fn numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        Ok(u16::from_be_bytes(
            raw.get(2 * i..2 * i + 2)
                .ok_or("short numeric")?
                .try_into()?,
        ))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let digit = |position: i32| -> u16 {
        // position = weight - index
        let index = weight - position;
        if index >= 0 && (index as usize) < digits.len() {
            digits[index as usize]
        } else {
            0
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for position in (0..=weight).rev() {
            let d = digit(position);
            if position == weight {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut fraction = String::new();
        let mut position = -1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(position)));
            position -= 1;
        }
        fraction.truncate(dscale);
        out.push_str(&fraction);
    }
    Ok(out)
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's
/// `civil_from_days`).
///
/// The extension's `clock.rs` has the same ten lines for its own
/// timestamps. They stay twice on purpose: the ext crate's public surface
/// is the lock API only, and the client's other dates go through
/// `humantime`, which cannot write dates before 1970 (PostgreSQL dates go
/// back to 4713 BC). A date library for this one conversion would cost more
/// than the copy.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

fn date(days_since_2000: i64) -> String {
    match days_since_2000 {
        d if d == i64::from(i32::MAX) => "infinity".into(),
        d if d == i64::from(i32::MIN) => "-infinity".into(),
        d => {
            let (y, m, day) = civil(d + PG_EPOCH_DAYS);
            format!("{y:04}-{m:02}-{day:02}")
        }
    }
}

fn time_of_day(micros: i64) -> String {
    let (s, us) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let text = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    if us == 0 {
        text
    } else {
        format!("{text}.{us:06}")
    }
}

/// ISO 8601: `2024-05-01 12:00:00.25` (with `+00` for `timestamptz`, which
/// the server hands over in UTC).
fn timestamp(micros_since_2000: i64, utc: bool) -> String {
    match micros_since_2000 {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let day_us = 86_400_000_000i64;
    let days = micros_since_2000.div_euclid(day_us);
    let in_day = micros_since_2000.rem_euclid(day_us);
    let text = format!("{} {}", date(days), time_of_day(in_day));
    if utc { format!("{text}+00") } else { text }
}

/// SQLite-style placeholders as PostgreSQL's: `?NNN` → `$NNN`, a bare `?`
/// → the next number after the largest so far (SQLite's rule), `??` → a
/// literal `?` (for PostgreSQL operators such as jsonb's `?`). String
/// literals, quoted identifiers, dollar-quoted strings and comments are
/// left alone.
pub(crate) fn placeholders(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                // Up to the matching quote; a doubled quote stays inside.
                out.push(c);
                i += 1;
                while i < chars.len() {
                    out.push(chars[i]);
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            out.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        out.push_str("/*");
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        out.push_str("*/");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(chars[i]);
                        i += 1;
                    }
                }
            }
            '$' => {
                // A dollar-quoted string ($$...$$ or $tag$...$tag$), or a
                // plain $1 placeholder.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|&ch| !(ch.is_alphanumeric() || ch == '_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(end)
                        if chars[end] == '$'
                            && !chars[i + 1..end].first().is_some_and(char::is_ascii_digit) =>
                    {
                        let tag: String = chars[i..=end].iter().collect();
                        out.push_str(&tag);
                        i = end + 1;
                        let rest: String = chars[i..].iter().collect();
                        match rest.find(&tag) {
                            Some(p) => {
                                out.push_str(&rest[..p + tag.len()]);
                                i += rest[..p + tag.len()].chars().count();
                            }
                            None => {
                                out.push_str(&rest);
                                i = chars.len();
                            }
                        }
                    }
                    _ => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            '?' if chars.get(i + 1) == Some(&'?') => {
                out.push('?');
                i += 2;
            }
            '?' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
                let number = if end > start {
                    chars[start..end]
                        .iter()
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0)
                } else {
                    largest + 1
                };
                largest = largest.max(number);
                out.push_str(&format!("${number}"));
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Runs one statement with `params`; the number of rows it changed.
pub(crate) fn execute(
    client: &mut impl GenericClient,
    sql: &str,
    params_: &[Value],
) -> Result<u64> {
    execute_text(client, sql, params_).map_err(error)
}

/// Runs one statement (`?N` or `$N` placeholders) with `values` sent as
/// text parameters; the driver's error as it is, for callers that tell a
/// row's error from the batch's.
pub(crate) fn execute_text<'v>(
    client: &mut impl GenericClient,
    sql: &str,
    values: impl IntoIterator<Item = &'v Value>,
) -> Result<u64, postgres::Error> {
    let bound: Vec<TextParam<'_>> = values.into_iter().map(TextParam).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client.execute(placeholders(sql).as_str(), &refs)
}

/// Every row of one query.
pub(crate) fn query(
    client: &mut impl GenericClient,
    sql: &str,
    params_: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let bound = params(params_);
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = client
        .query(placeholders(sql).as_str(), &refs)
        .map_err(error)?;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, AnyValue>(i)
                        .map(|v| v.0)
                        .map_err(|e| Error::InvalidInput(format!("column {}: {e}", i + 1)))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_sqlite_numbering_outside_quotes() {
        assert_eq!(placeholders("SELECT ?1, ?2"), "SELECT $1, $2");
        assert_eq!(
            placeholders("VALUES (?, ?, ?5, ?)"),
            "VALUES ($1, $2, $5, $6)"
        );
        assert_eq!(
            placeholders("SELECT '?1 it''s', \"a?\" FROM t WHERE x = ?"),
            "SELECT '?1 it''s', \"a?\" FROM t WHERE x = $1"
        );
        assert_eq!(
            placeholders("-- ?\nSELECT /* ? /* ? */ */ ?"),
            "-- ?\nSELECT /* ? /* ? */ */ $1"
        );
        assert_eq!(
            placeholders("SELECT $$ ? $$, $t$ ?1 $t$, ?"),
            "SELECT $$ ? $$, $t$ ?1 $t$, $1"
        );
        assert_eq!(
            placeholders("SELECT j ?? 'k' FROM t WHERE x = $1"),
            "SELECT j ? 'k' FROM t WHERE x = $1"
        );
    }

    #[test]
    fn binary_values_read_as_text() {
        // 1234.5678: ndigits 2, weight 0, sign +, dscale 4, digits 1234 5678
        let raw = [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x16, 0x2e];
        assert_eq!(numeric(&raw).unwrap(), "1234.5678");
        // -0.05: ndigits 1, weight -1, sign -, dscale 2, digit 500
        let raw = [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4];
        assert_eq!(numeric(&raw).unwrap(), "-0.05");
        // 10000: ndigits 1, weight 1, digit 1
        let raw = [0, 1, 0, 1, 0, 0, 0, 0, 0, 1];
        assert_eq!(numeric(&raw).unwrap(), "10000");
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(
            timestamp(86_400_000_000 + 1_500_000, true),
            "2000-01-02 00:00:01.500000+00"
        );
        assert_eq!(
            uuid(&[0x12; 16]).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
    }
}
