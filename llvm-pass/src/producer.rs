//! Which LLVM wrote a bitcode file, read from its identification block.
//!
//! LLVM does not promise that an older LLVM reads newer bitcode, and when it cannot, its own
//! message rarely says why. The identification block (the first block LLVM 3.8 and later write)
//! holds the producer string, such as `LLVM22.1.2-rust-1.95.0-stable`; this module reads just
//! that block with a minimal bitstream reader, so the error can name both versions.

/// The producer string of a bitcode file, if the file has an identification block.
pub fn producer(bytes: &[u8]) -> Option<String> {
    let bitcode = unwrap_wrapper(bytes)?;
    let body = bitcode.strip_prefix(b"BC\xC0\xDE")?;
    let mut r = Bits { bytes: body, pos: 0 };
    // The top level uses 2-bit abbreviation ids; the first entry must enter block 13.
    if r.fixed(2)? != 1 || r.vbr(8)? != IDENTIFICATION_BLOCK {
        return None;
    }
    let width = r.vbr(4)? as u32;
    r.align32();
    r.fixed(32)?; // block length in words
    let mut abbrevs: Vec<Vec<Op>> = Vec::new();
    loop {
        match r.fixed(width)? {
            0 => return None, // END_BLOCK before a STRING record
            1 => return None, // no sub-blocks are expected here
            2 => abbrevs.push(r.define_abbrev()?),
            3 => {
                let code = r.vbr(6)?;
                let n = r.vbr(6)?;
                let ops: Option<Vec<u64>> = (0..n).map(|_| r.vbr(6)).collect();
                if code == STRING_RECORD {
                    return text(&ops?);
                }
            }
            id => {
                let abbrev = abbrevs.get((id as usize).checked_sub(4)?)?.clone();
                let values = r.read_abbreviated(&abbrev)?;
                if values.first() == Some(&STRING_RECORD) {
                    return text(&values[1..]);
                }
            }
        }
    }
}

/// The major version in a producer string such as `LLVM22.1.2-rust-1.95.0-stable`.
pub fn major_version(producer: &str) -> Option<u32> {
    let digits: String = producer.trim_start_matches("LLVM").chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

const IDENTIFICATION_BLOCK: u64 = 13;
const STRING_RECORD: u64 = 1;

#[derive(Debug, Clone, Copy)]
enum Op {
    Literal(u64),
    Fixed(u32),
    Vbr(u32),
    Array,
    Char6,
    Blob,
}

fn unwrap_wrapper(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.starts_with(&[0xDE, 0xC0, 0x17, 0x0B]) {
        let word = |i: usize| Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?) as usize);
        let (offset, size) = (word(8)?, word(12)?);
        return bytes.get(offset..offset.checked_add(size)?);
    }
    Some(bytes)
}

fn text(values: &[u64]) -> Option<String> {
    values.iter().map(|&v| u8::try_from(v).ok().map(char::from)).collect()
}

struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn fixed(&mut self, width: u32) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..width {
            let byte = *self.bytes.get(self.pos / 8)?;
            let bit = (byte >> (self.pos % 8)) & 1;
            value |= u64::from(bit) << i;
            self.pos += 1;
        }
        Some(value)
    }

    fn vbr(&mut self, width: u32) -> Option<u64> {
        let high = 1u64 << (width - 1);
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let chunk = self.fixed(width)?;
            value |= (chunk & (high - 1)).checked_shl(shift)?;
            if chunk & high == 0 {
                return Some(value);
            }
            shift += width - 1;
            if shift > 64 {
                return None;
            }
        }
    }

    fn align32(&mut self) {
        self.pos = self.pos.div_ceil(32) * 32;
    }

    fn define_abbrev(&mut self) -> Option<Vec<Op>> {
        let n = self.vbr(5)?;
        let mut ops = Vec::new();
        for _ in 0..n {
            let op = if self.fixed(1)? == 1 {
                Op::Literal(self.vbr(8)?)
            } else {
                match self.fixed(3)? {
                    1 => Op::Fixed(self.vbr(5)? as u32),
                    2 => Op::Vbr(self.vbr(5)? as u32),
                    3 => Op::Array,
                    4 => Op::Char6,
                    5 => Op::Blob,
                    _ => return None,
                }
            };
            ops.push(op);
        }
        Some(ops)
    }

    fn scalar(&mut self, op: Op) -> Option<u64> {
        match op {
            Op::Literal(v) => Some(v),
            Op::Fixed(w) => self.fixed(w),
            Op::Vbr(w) => self.vbr(w),
            Op::Char6 => {
                let v = self.fixed(6)? as u8;
                Some(u64::from(match v {
                    0..=25 => b'a' + v,
                    26..=51 => b'A' + v - 26,
                    52..=61 => b'0' + v - 52,
                    62 => b'.',
                    _ => b'_',
                }))
            }
            Op::Array | Op::Blob => None,
        }
    }

    fn read_abbreviated(&mut self, abbrev: &[Op]) -> Option<Vec<u64>> {
        let mut values = Vec::new();
        let mut i = 0;
        while i < abbrev.len() {
            match abbrev[i] {
                Op::Array => {
                    let element = *abbrev.get(i + 1)?;
                    let n = self.vbr(6)?;
                    for _ in 0..n {
                        values.push(self.scalar(element)?);
                    }
                    i += 2;
                }
                Op::Blob => {
                    let n = self.vbr(6)? as usize;
                    self.align32();
                    for _ in 0..n {
                        values.push(self.fixed(8)?);
                    }
                    self.align32();
                    i += 1;
                }
                op => {
                    values.push(self.scalar(op)?);
                    i += 1;
                }
            }
        }
        Some(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions() {
        assert_eq!(major_version("LLVM22.1.2-rust-1.95.0-stable"), Some(22));
        assert_eq!(major_version("LLVM23.0.0git"), Some(23));
        assert_eq!(major_version("gcc"), None);
    }

    #[test]
    fn garbage_has_no_producer() {
        assert_eq!(producer(b""), None);
        assert_eq!(producer(b"BC\xC0\xDE"), None);
        assert_eq!(producer(b"BC\xC0\xDE\xff\xff\xff\xff\xff\xff\xff\xff"), None);
        assert_eq!(producer(b"not bitcode at all"), None);
    }
}
