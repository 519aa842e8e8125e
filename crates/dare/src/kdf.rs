//! scrypt (RFC 7914) in bounded memory.
//!
//! scrypt's memory-hard step, ROMix, fills a table `V` of `N` blocks of `128 * r` bytes and then
//! reads `N` of them back in an order that depends on the data. With the passphrase envelope's
//! parameters (`N = 32768`, `r = 16`) that table is 64 MiB, which alone would exceed the memory
//! a backup, a restore or the WAL archiver may use. ROMix admits a time-memory trade-off: keep
//! only every `k`-th block of `V` (a checkpoint) and, when the second loop asks for block `j`,
//! recompute it from checkpoint `j / k` by applying BlockMix `j % k` times, exactly as the first
//! loop produced it. The output is bit for bit the same function; only the cost changes.
//!
//! [`ROMIX_MEMORY_LIMIT`] fixes the table's size, and `k` follows from it: for the envelope's
//! parameters `k = 4`, so the table is 16 MiB and the derivation runs BlockMix `N` times to
//! fill it and on average `N * (1 + 1.5)` times to read it, 1.75 times scrypt's `2N`.
//!
//! Salsa20/8 comes from the `salsa20` crate and both PBKDF2-HMAC-SHA256 steps from `pbkdf2`;
//! BlockMix and the ROMix loop are written here because the `scrypt` crate does not expose them.

use pbkdf2::pbkdf2_hmac;
use salsa20::SalsaCore;
use salsa20::cipher::StreamCipherCore as _;
use salsa20::cipher::typenum::U4;
use sha2::Sha256;
use zeroize::Zeroize as _;

/// The most memory ROMix's table of checkpoints may take, in bytes (16 MiB).
pub const ROMIX_MEMORY_LIMIT: usize = 16 * 1024 * 1024;

/// Salsa20/8: the Salsa20 core with 4 double rounds, as scrypt's BlockMix uses it.
type Salsa20_8 = SalsaCore<U4>;

/// Size in bytes of a Salsa20 block.
const SALSA_BLOCK: usize = 64;

/// Parameters scrypt cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScryptParams {
    /// `log_n` must be at least 1 and below 64 (and `N` must fit in memory addresses).
    #[error("scrypt's log2(N) must be between 1 and 63")]
    LogN,
    /// `r` and `p` must be positive, and `p * r * 128` must fit in memory.
    #[error("scrypt's r and p must be positive and p * r * 128 bytes must fit in memory")]
    BlockSize,
    /// The output must be 1 to `(2^32 - 1) * 32` bytes long.
    #[error("scrypt's output must be 1 to (2^32 - 1) * 32 bytes")]
    OutputLength,
}

/// Fills `output` with `scrypt(passphrase, salt, N = 2^log_n, r, p)`, with ROMix's table held to
/// [`ROMIX_MEMORY_LIMIT`] bytes (plus three blocks of `128 * r` bytes and the `p * 128 * r`
/// bytes of PBKDF2's output). Equal, for every input, to RFC 7914's scrypt.
pub fn scrypt(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
    output: &mut [u8],
) -> Result<(), InvalidScryptParams> {
    if log_n == 0 || u32::from(log_n) >= usize::BITS {
        return Err(InvalidScryptParams::LogN);
    }
    if output.is_empty() || output.len() as u64 / 32 > u64::from(u32::MAX) {
        return Err(InvalidScryptParams::OutputLength);
    }
    let block_len = (r as usize)
        .checked_mul(128)
        .filter(|&len| len > 0)
        .ok_or(InvalidScryptParams::BlockSize)?;
    let blocks_len = block_len
        .checked_mul(p as usize)
        .filter(|&len| len > 0)
        .ok_or(InvalidScryptParams::BlockSize)?;
    let n = 1usize << log_n;

    let mut blocks = vec![0u8; blocks_len];
    pbkdf2_hmac::<Sha256>(passphrase, salt, 1, &mut blocks);
    let mut romix = RoMix::new(n, block_len);
    for block in blocks.chunks_exact_mut(block_len) {
        romix.run(block);
    }
    romix.wipe();
    pbkdf2_hmac::<Sha256>(passphrase, &blocks, 1, output);
    blocks.zeroize();
    Ok(())
}

/// How many blocks of `V` each checkpoint stands for, so that the checkpoints of `n` blocks of
/// `block_len` bytes fit in [`ROMIX_MEMORY_LIMIT`].
fn checkpoint_interval(n: usize, block_len: usize) -> usize {
    let table = n.saturating_mul(block_len);
    table.div_ceil(ROMIX_MEMORY_LIMIT).max(1)
}

/// ROMix's working memory, reused for each of scrypt's `p` blocks.
struct RoMix {
    /// scrypt's `N`, a power of two.
    n: usize,
    /// `128 * r`.
    block_len: usize,
    /// `k`: the table keeps `V[0], V[k], V[2k], ...`.
    interval: usize,
    /// The checkpoints, `ceil(N / k)` blocks back to back.
    checkpoints: Vec<u8>,
    /// ROMix's running `X`.
    x: Vec<u8>,
    /// The block of `V` the second loop asks for, rebuilt from its checkpoint.
    v: Vec<u8>,
    /// BlockMix's output, swapped with its input after each call.
    scratch: Vec<u8>,
}

impl RoMix {
    fn new(n: usize, block_len: usize) -> Self {
        let interval = checkpoint_interval(n, block_len);
        RoMix {
            n,
            block_len,
            interval,
            checkpoints: vec![0; n.div_ceil(interval) * block_len],
            x: vec![0; block_len],
            v: vec![0; block_len],
            scratch: vec![0; block_len],
        }
    }

    /// RFC 7914's `scryptROMix(r, B, N)`, replacing `block` with its result.
    fn run(&mut self, block: &mut [u8]) {
        let len = self.block_len;
        self.x.copy_from_slice(block);

        // First loop: X runs through V[0..N] (V[i] = BlockMix^i(B)); keep every k-th.
        for i in 0..self.n {
            if i % self.interval == 0 {
                let slot = i / self.interval;
                self.checkpoints[slot * len..(slot + 1) * len].copy_from_slice(&self.x);
            }
            block_mix(&self.x, &mut self.scratch);
            std::mem::swap(&mut self.x, &mut self.scratch);
        }

        // Second loop: X = BlockMix(X xor V[Integerify(X) mod N]), with V[j] rebuilt from
        // checkpoint j / k by the j % k BlockMix steps the first loop took after it.
        for _ in 0..self.n {
            let j = integerify(&self.x) & (self.n - 1);
            let slot = j / self.interval;
            self.v
                .copy_from_slice(&self.checkpoints[slot * len..(slot + 1) * len]);
            for _ in 0..j % self.interval {
                block_mix(&self.v, &mut self.scratch);
                std::mem::swap(&mut self.v, &mut self.scratch);
            }
            for (x, v) in self.x.iter_mut().zip(&self.v) {
                *x ^= v;
            }
            block_mix(&self.x, &mut self.scratch);
            std::mem::swap(&mut self.x, &mut self.scratch);
        }
        block.copy_from_slice(&self.x);
    }

    /// Overwrites everything derived from the passphrase.
    fn wipe(&mut self) {
        self.checkpoints.zeroize();
        self.x.zeroize();
        self.v.zeroize();
        self.scratch.zeroize();
    }
}

impl Drop for RoMix {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// RFC 7914's `Integerify`: the last 64-byte block's first 32-bit word, little-endian. scrypt
/// reduces it mod N, a power of two at most 2^63, so the low 32 bits are all that can matter
/// while N ≤ 2^32; the high word is read too for larger N.
fn integerify(x: &[u8]) -> usize {
    let last = &x[x.len() - SALSA_BLOCK..];
    let low = u64::from(u32::from_le_bytes([last[0], last[1], last[2], last[3]]));
    let high = u64::from(u32::from_le_bytes([last[4], last[5], last[6], last[7]]));
    // Truncation on 32-bit targets is harmless: N < 2^32 there, and only the low bits count.
    ((high << 32) | low) as usize
}

/// RFC 7914's `scryptBlockMix`: `output` (as long as `input`, `2r` blocks of 64 bytes) gets
/// `Y_0, Y_2, ..., Y_{2r-2}, Y_1, Y_3, ..., Y_{2r-1}`, where `Y_i = Salsa20/8(Y_{i-1} xor B_i)`
/// and `Y_{-1} = B_{2r-1}`.
fn block_mix(input: &[u8], output: &mut [u8]) {
    let half = input.len() / 2;
    let mut y = [0u8; SALSA_BLOCK];
    y.copy_from_slice(&input[input.len() - SALSA_BLOCK..]);
    for (i, chunk) in input.chunks_exact(SALSA_BLOCK).enumerate() {
        let mut state = [0u32; 16];
        for (word, (y_bytes, b_bytes)) in state
            .iter_mut()
            .zip(y.chunks_exact(4).zip(chunk.chunks_exact(4)))
        {
            let y_word = u32::from_le_bytes([y_bytes[0], y_bytes[1], y_bytes[2], y_bytes[3]]);
            let b_word = u32::from_le_bytes([b_bytes[0], b_bytes[1], b_bytes[2], b_bytes[3]]);
            *word = y_word ^ b_word;
        }
        // The Salsa20 core's keystream block is its state after the rounds plus the state
        // before them: exactly Salsa20/8 of that state.
        Salsa20_8::from_raw_state(state).write_keystream_block((&mut y).into());
        let position = (i / 2) * SALSA_BLOCK + if i % 2 == 0 { 0 } else { half };
        output[position..position + SALSA_BLOCK].copy_from_slice(&y);
    }
    y.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelopes_table_takes_a_quarter_of_scrypts() {
        // N = 32768, r = 16: V is 64 MiB; every 4th block makes 16 MiB.
        assert_eq!(checkpoint_interval(1 << 15, 16 * 128), 4);
        let romix = RoMix::new(1 << 15, 16 * 128);
        assert_eq!(romix.checkpoints.len(), ROMIX_MEMORY_LIMIT);
        // Small tables are kept whole.
        assert_eq!(checkpoint_interval(1 << 10, 8 * 128), 1);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let mut out = [0u8; 32];
        assert_eq!(
            scrypt(b"p", b"s", 0, 8, 1, &mut out),
            Err(InvalidScryptParams::LogN)
        );
        assert_eq!(
            scrypt(b"p", b"s", 64, 8, 1, &mut out),
            Err(InvalidScryptParams::LogN)
        );
        assert_eq!(
            scrypt(b"p", b"s", 4, 0, 1, &mut out),
            Err(InvalidScryptParams::BlockSize)
        );
        assert_eq!(
            scrypt(b"p", b"s", 4, 8, 0, &mut out),
            Err(InvalidScryptParams::BlockSize)
        );
        assert_eq!(
            scrypt(b"p", b"s", 4, 8, 1, &mut []),
            Err(InvalidScryptParams::OutputLength)
        );
    }
}
