//! Integer codes the chunks and the snapshot share: zigzag for signed numbers, LEB128 varints,
//! and the adaptive Rice code's parameter.

/// Differences of scaled integers in [`crate::chunk::Format::Compact`]: an adaptive Rice code
/// (as JPEG-LS adapts its Golomb codes): the first in as many bits as it needs, each later one `z` as
/// `z >> k` in unary and its `k` low bits, where `2^k` is about half the mean of recent ones
/// (the Golomb parameter of a geometric distribution with that mean, rounded to a power of two).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rice {
    /// Sum and count of the recent differences (zigzagged), halved every [`Rice::RESET`].
    pub(crate) sum: u64,
    pub(crate) count: u16,
}

impl Rice {
    pub(crate) const RESET: u16 = 16;
    /// Quotients from this one up are escaped: the difference follows in the bits it needs.
    pub(crate) const ESCAPE: u64 = 24;

    pub(crate) fn k(&self) -> u8 {
        let mut k = 0;
        while k < 62 && ((self.count as u64) << (k + 1)) < self.sum {
            k += 1;
        }
        k
    }

    pub(crate) fn update(&mut self, z: u64) {
        self.sum = self.sum.saturating_add(z);
        self.count += 1;
        if self.count >= Rice::RESET {
            self.sum >>= 1;
            self.count >>= 1;
        }
    }
}

pub(crate) fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = input.split_at_checked(n)?;
    *input = tail;
    Some(head)
}

/// LEB128: seven bits a byte, low first, the high bit set on every byte but the last.
pub(crate) fn write_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        n |= ((byte & 0x7f) as u64).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}
