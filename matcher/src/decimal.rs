//! Fixed-point decimals: an `i128` mantissa with a scale known from context.
//!
//! ViaBTC keeps every amount as a libmpdec decimal and truncates (ROUND_DOWN) to a stated precision
//! when it parses input and after every balance change. A value at a known precision is exactly an
//! integer mantissa at that scale, so the matcher keeps mantissas and derives scales from the market
//! or asset, which keeps every operation exact and cheap. Output never uses exponent form (SPEC A2).

use std::fmt;

/// The largest mantissa a parsed value may have: 33 digits, inside decimal128's 34.
pub const MANTISSA_MAX: i128 = 10i128.pow(33);

/// Scales above this cannot be represented (10^38 is the largest power of ten in an `i128`).
pub const SCALE_MAX: u32 = 38;

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// 10^n for n ≤ 38.
#[inline]
pub fn pow10(n: u32) -> i128 {
    POW10[n as usize]
}

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number")]
    Syntax,
    #[error("decimal out of range")]
    Range,
}

/// Parses `text` and truncates it toward zero to `prec` fractional digits, returning the mantissa
/// at scale `prec`. Accepts an optional sign, digits with an optional point, and an optional
/// exponent (`1e3`, as libmpdec does). Refuses empty strings, NaN, infinities and anything whose
/// mantissa would exceed [`MANTISSA_MAX`].
pub fn parse(text: &str, prec: u32) -> Result<i128, DecimalError> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (number, exponent) = split_exponent(rest)?;
    let mut digits_total = 0i64;
    let mut frac_len = 0i64;
    let mut seen_point = false;
    for &b in number {
        match b {
            b'0'..=b'9' => {
                digits_total += 1;
                if seen_point {
                    frac_len += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return Err(DecimalError::Syntax),
        }
    }
    if digits_total == 0 {
        return Err(DecimalError::Syntax);
    }
    // value = digits × 10^(exponent − frac_len); we want trunc(value × 10^prec).
    let shift = exponent - frac_len + prec as i64;
    let keep = if shift < 0 { digits_total + shift } else { digits_total };
    let mut mantissa: i128 = 0;
    let mut taken = 0i64;
    for &b in number {
        if b == b'.' {
            continue;
        }
        if taken >= keep {
            break;
        }
        taken += 1;
        mantissa = mantissa * 10 + i128::from(b - b'0');
        if mantissa > MANTISSA_MAX {
            return Err(DecimalError::Range);
        }
    }
    if shift > 0 && mantissa != 0 {
        if shift > SCALE_MAX as i64 {
            return Err(DecimalError::Range);
        }
        mantissa = mantissa.checked_mul(pow10(shift as u32)).ok_or(DecimalError::Range)?;
        if mantissa > MANTISSA_MAX {
            return Err(DecimalError::Range);
        }
    }
    Ok(if negative { -mantissa } else { mantissa })
}

fn split_exponent(bytes: &[u8]) -> Result<(&[u8], i64), DecimalError> {
    let Some(at) = bytes.iter().position(|&b| b == b'e' || b == b'E') else {
        return Ok((bytes, 0));
    };
    let (number, exp) = (&bytes[..at], &bytes[at + 1..]);
    let (negative, digits) = match exp.first() {
        Some(b'-') => (true, &exp[1..]),
        Some(b'+') => (false, &exp[1..]),
        _ => (false, exp),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecimalError::Syntax);
    }
    // Saturate: anything beyond ±10^6 is out of range or zero either way.
    let mut value = 0i64;
    for &d in digits {
        value = (value * 10 + i64::from(d - b'0')).min(1_000_000);
    }
    Ok((number, if negative { -value } else { value }))
}

/// Changes the scale of `m` from `from` to a larger or equal `to`, exactly; `None` on overflow.
#[inline]
pub fn rescale_up(m: i128, from: u32, to: u32) -> Option<i128> {
    debug_assert!(to >= from);
    m.checked_mul(pow10(to - from))
}

/// Changes the scale of `m` from `from` to `to`, truncating toward zero when `to < from`.
#[inline]
pub fn rescale_trunc(m: i128, from: u32, to: u32) -> i128 {
    if to >= from {
        m * pow10(to - from)
    } else {
        m / pow10(from - to)
    }
}

/// Changes the scale of `m` from `from` to `to`, rounding half away from zero when `to < from`:
/// what MySQL does to a value with more decimals than its `DECIMAL` column (`192.256564256` is
/// stored as `192.25656426` at scale 8, `-3.856778015` as `-3.85677802`).
#[inline]
pub fn rescale_round(m: i128, from: u32, to: u32) -> i128 {
    if to >= from {
        return m * pow10(to - from);
    }
    let unit = pow10(from - to);
    let (quotient, rest) = (m / unit, (m % unit).abs());
    // `rest >= unit / 2`, exactly, without the overflow of `2 * rest` at unit 10^38.
    if rest >= unit - rest {
        quotient + m.signum()
    } else {
        quotient
    }
}

/// A decimal value for output: mantissa and scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    pub m: i128,
    pub scale: u32,
}

impl Dec {
    pub const ZERO: Dec = Dec { m: 0, scale: 0 };

    pub fn new(m: i128, scale: u32) -> Dec {
        Dec { m, scale }
    }
}

impl fmt::Display for Dec {
    /// Plain notation with trailing fractional zeros stripped: `"1.5"`, `"0"`, `"0.00000001"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; TEXT_MAX]))
    }
}

/// The longest text of a [`Dec`]: a sign, 39 digits of an `i128`, a point and the zeros between
/// the point and the digits of a scale up to 38.
pub const TEXT_MAX: usize = 80;

impl Dec {
    /// [`Display`](fmt::Display)'s text, written into `buf` without the formatting machinery
    /// (replies print several decimals per order, and this is most of their cost).
    pub fn text(self, buf: &mut [u8; TEXT_MAX]) -> &str {
        let mut abs = self.m.unsigned_abs();
        let mut scale = self.scale.min(38);
        let mut at = TEXT_MAX;
        // Most values fit 64 bits, whose division is far cheaper than 128-bit division.
        if let Ok(mut v) = u64::try_from(abs) {
            while scale >= 4 && v.is_multiple_of(10_000) {
                v /= 10_000;
                scale -= 4;
            }
            while scale > 0 && v.is_multiple_of(10) {
                v /= 10;
                scale -= 1;
            }
            at = write_digits(buf, at, v, scale);
        } else {
            while scale > 0 && abs.is_multiple_of(10) {
                abs /= 10;
                scale -= 1;
            }
            // Peel 19 digits at a time until the rest fits 64 bits.
            let mut low_scale = scale;
            while u64::try_from(abs).is_err() {
                let chunk = (abs % 10_000_000_000_000_000_000) as u64;
                abs /= 10_000_000_000_000_000_000;
                let mut c = chunk;
                for _ in 0..19 {
                    at -= 1;
                    buf[at] = b'0' + (c % 10) as u8;
                    c /= 10;
                    if low_scale > 0 {
                        low_scale -= 1;
                        if low_scale == 0 {
                            at -= 1;
                            buf[at] = b'.';
                        }
                    }
                }
            }
            at = write_digits(buf, at, abs as u64, low_scale);
        }
        if self.m < 0 {
            at -= 1;
            buf[at] = b'-';
        }
        // Only ASCII digits, '.' and '-' were written.
        std::str::from_utf8(&buf[at..]).unwrap_or("0")
    }
}

/// "00", "01", … "99": two digits per division.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Writes the two digits of `v % 100` ending just before `buf[at]`; returns where they start.
#[inline]
fn write_pair(buf: &mut [u8; TEXT_MAX], at: usize, v: u64) -> usize {
    let d = (v % 100) as usize * 2;
    buf[at - 2..at].copy_from_slice(&PAIRS[d..d + 2]);
    at - 2
}

/// Writes `v / 10^scale` in plain notation ending just before `buf[at]`; returns where it starts.
/// A `scale` of 0 writes no point; the integer part has at least one digit.
fn write_digits(buf: &mut [u8; TEXT_MAX], mut at: usize, mut v: u64, scale: u32) -> usize {
    let mut fraction = scale;
    while fraction >= 2 {
        at = write_pair(buf, at, v);
        v /= 100;
        fraction -= 2;
    }
    if fraction == 1 {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    if scale > 0 {
        at -= 1;
        buf[at] = b'.';
    }
    while v >= 100 {
        at = write_pair(buf, at, v);
        v /= 100;
    }
    if v >= 10 {
        write_pair(buf, at, v)
    } else {
        at -= 1;
        buf[at] = b'0' + v as u8;
        at
    }
}

impl Dec {
    /// The "raw" form: every fractional digit of the scale kept (`"8000.00000000"`), as ViaBTC
    /// prints `market.last` and its Kafka messages; zero is `"0"`.
    pub fn raw(self) -> RawDec {
        RawDec(self)
    }
}

/// [`Dec::raw`]'s display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDec(Dec);

impl fmt::Display for RawDec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Dec { m, scale } = self.0;
        if m == 0 || scale == 0 {
            return write!(f, "{m}");
        }
        let sign = if m < 0 { "-" } else { "" };
        let (abs, unit) = (m.unsigned_abs(), pow10(scale) as u128);
        write!(f, "{sign}{}.{:0width$}", abs / unit, abs % unit, width = scale as usize)
    }
}

impl serde::Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text(&mut [0; TEXT_MAX]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half away from zero: …5 up, …4 down, negatives mirrored; exact values and larger scales
    /// unchanged; the largest unit (10^38) without overflow.
    #[test]
    fn rescale_round_rounds_half_away_from_zero() {
        let cases = [
            (192_256_564_256, 9, 8, 19_225_656_426),
            (-3_856_778_015, 9, 8, -385_677_802),
            (-3_856_778_014, 9, 8, -385_677_801),
            (1_000_000_004, 9, 8, 100_000_000),
            (-1_000_000_005, 9, 8, -100_000_001),
            (15, 1, 0, 2),
            (-15, 1, 0, -2),
            (14, 1, 0, 1),
            (7, 0, 3, 7_000),
            (i128::MAX, 38, 0, 2),
            (i128::MIN + 1, 38, 0, -2),
        ];
        for (m, from, to, want) in cases {
            assert_eq!(rescale_round(m, from, to), want, "{m} from {from} to {to}");
        }
    }

    /// What [`Dec::text`] must print, by the formatting machinery.
    fn plain(d: Dec) -> String {
        let (mut abs, mut scale) = (d.m.unsigned_abs(), d.scale);
        while scale > 0 && abs % 10 == 0 {
            abs /= 10;
            scale -= 1;
        }
        let sign = if d.m < 0 { "-" } else { "" };
        if scale == 0 {
            return format!("{sign}{abs}");
        }
        let unit = 10u128.pow(scale);
        format!("{sign}{}.{:0w$}", abs / unit, abs % unit, w = scale as usize)
    }

    #[test]
    fn text_is_plain_notation_for_every_magnitude() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u128;
        let mut cases = vec![
            Dec::new(0, 0),
            Dec::new(0, 8),
            Dec::new(1, 8),
            Dec::new(-1, 20),
            Dec::new(i128::MAX, 0),
            Dec::new(i128::MIN + 1, 38),
            Dec::new(i128::MAX, 20),
            Dec::new(10_000_000_000_000_000_000, 19),
            Dec::new(u64::MAX as i128 + 1, 3),
            Dec::new(-(u64::MAX as i128), 19),
        ];
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every width from one digit to 38, every scale up to 24.
            let digits = i % 39;
            let m = if digits == 0 { 0 } else { (x % 10u128.pow(digits)) as i128 };
            cases.push(Dec::new(if i % 3 == 0 { -m } else { m }, i % 25));
        }
        for d in cases {
            assert_eq!(d.text(&mut [0; TEXT_MAX]), plain(d), "{d:?}");
            assert_eq!(d.to_string(), plain(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", plain(d)));
        }
    }

    #[test]
    fn parses_and_truncates() {
        assert_eq!(parse("1.23456789", 8), Ok(123_456_789));
        assert_eq!(parse("1.234567899", 8), Ok(123_456_789));
        assert_eq!(parse("-1.999", 2), Ok(-199));
        assert_eq!(parse("0.5", 0), Ok(0));
        assert_eq!(parse("7.9", 0), Ok(7));
        assert_eq!(parse("1e3", 2), Ok(100_000));
        assert_eq!(parse("1.5E-2", 4), Ok(150));
        assert_eq!(parse("1e-9", 8), Ok(0));
        assert_eq!(parse("+.5", 1), Ok(5));
        assert_eq!(parse("5.", 1), Ok(50));
        assert_eq!(parse("000123", 0), Ok(123));
        assert_eq!(parse("0.00000000000000000000000000000000000000001", 8), Ok(0));
    }

    #[test]
    fn refuses_bad_text() {
        for bad in
            ["", "-", ".", "abc", "1.2.3", "NaN", "inf", "Infinity", " 1", "1 ", "1e", "1e+", "0x10", "1,5", "--1"]
        {
            assert_eq!(parse(bad, 8), Err(DecimalError::Syntax), "{bad:?}");
        }
        assert_eq!(parse("1e40", 0), Err(DecimalError::Range));
        assert_eq!(parse("1e999999999999", 0), Err(DecimalError::Range));
        assert_eq!(parse("1000000000000000000000000000", 8), Err(DecimalError::Range));
        assert_eq!(parse("0e999999999", 8), Ok(0));
    }

    #[test]
    fn prints_plain_and_stripped() {
        assert_eq!(Dec::new(150_000_000, 8).to_string(), "1.5");
        assert_eq!(Dec::new(0, 8).to_string(), "0");
        assert_eq!(Dec::new(1, 8).to_string(), "0.00000001");
        assert_eq!(Dec::new(10, 8).to_string(), "0.0000001");
        assert_eq!(Dec::new(-2_500, 3).to_string(), "-2.5");
        assert_eq!(Dec::new(800_000_000_000, 8).to_string(), "8000");
        assert_eq!(Dec::new(-1, 20).to_string(), "-0.00000000000000000001");
        assert_eq!(Dec::new(42, 0).to_string(), "42");
    }

    #[test]
    fn rescales() {
        assert_eq!(rescale_up(5, 2, 4), Some(500));
        assert_eq!(rescale_up(i128::MAX / 2, 0, 2), None);
        assert_eq!(rescale_trunc(-1999, 3, 1), -19);
        assert_eq!(rescale_trunc(19, 1, 3), 1900);
    }
}
