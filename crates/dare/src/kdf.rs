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
//! Both PBKDF2-HMAC-SHA256 steps come from the `pbkdf2` crate. BlockMix and the ROMix loop are
//! written here because the `scrypt` crate does not expose them, and so is Salsa20/8: the
//! `salsa20` crate's core works one word at a time on bytes, while ROMix spends nearly all of
//! the derivation in it. Here every block stays in words, in an order where Salsa20/8's rounds
//! are four-lane vector operations (see [`DIAGONAL_ORDER`]), as the `scrypt` crate's own SIMD
//! BlockMix does. `tests/kdf.rs` checks the result against the `scrypt` crate and RFC 7914's
//! vectors.

use pbkdf2::pbkdf2_hmac;
use sha2::Sha256;
use zeroize::Zeroize as _;

/// The most memory ROMix's table of checkpoints may take, in bytes (16 MiB).
pub const ROMIX_MEMORY_LIMIT: usize = 16 * 1024 * 1024;

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

/// ROMix's working memory, reused for each of scrypt's `p` blocks. Every block is held as
/// 32-bit words with each 64-byte Salsa20 block in [`DIAGONAL_ORDER`], from the moment ROMix
/// reads its input until it writes its output, so BlockMix neither converts bytes nor reorders
/// words.
struct RoMix {
    /// scrypt's `N`, a power of two.
    n: usize,
    /// `32 * r`: a block's length in words.
    block_words: usize,
    /// `k`: the table keeps `V[0], V[k], V[2k], ...`.
    interval: usize,
    /// The checkpoints, `ceil(N / k)` blocks back to back.
    checkpoints: Vec<u32>,
    /// ROMix's running `X`.
    x: Vec<u32>,
    /// The block of `V` the second loop asks for, rebuilt from its checkpoint.
    v: Vec<u32>,
    /// BlockMix's output, swapped with its input after each call.
    scratch: Vec<u32>,
}

impl RoMix {
    fn new(n: usize, block_len: usize) -> Self {
        let interval = checkpoint_interval(n, block_len);
        let block_words = block_len / 4;
        RoMix {
            n,
            block_words,
            interval,
            checkpoints: vec![0; n.div_ceil(interval) * block_words],
            x: vec![0; block_words],
            v: vec![0; block_words],
            scratch: vec![0; block_words],
        }
    }

    /// RFC 7914's `scryptROMix(r, B, N)`, replacing `block` with its result.
    fn run(&mut self, block: &mut [u8]) {
        let len = self.block_words;
        to_diagonal_words(block, &mut self.x);

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
            let checkpoint = &self.checkpoints[slot * len..(slot + 1) * len];
            let steps = j % self.interval;
            // A checkpoint is V[j] itself: read it in place rather than copy it first.
            let v: &[u32] = if steps == 0 {
                checkpoint
            } else {
                self.v.copy_from_slice(checkpoint);
                for _ in 0..steps {
                    block_mix(&self.v, &mut self.scratch);
                    std::mem::swap(&mut self.v, &mut self.scratch);
                }
                &self.v
            };
            for (x, v) in self.x.iter_mut().zip(v) {
                *x ^= v;
            }
            block_mix(&self.x, &mut self.scratch);
            std::mem::swap(&mut self.x, &mut self.scratch);
        }
        from_diagonal_words(&self.x, block);
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

/// Where each word of a Salsa20 block is kept: position `i` holds word `DIAGONAL_ORDER[i]`.
/// Salsa20 works on the diagonals of its 4x4 matrix; in this order each group of four
/// positions is one of them (words 0, 5, 10, 15, then 4, 9, 14, 3, and so on), so both kinds of
/// round become the same four-lane additions, rotations and XORs, which the compiler turns into
/// vector instructions.
const DIAGONAL_ORDER: [usize; SALSA_WORDS] = [0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11];

/// Words in a Salsa20 block.
const SALSA_WORDS: usize = SALSA_BLOCK / 4;

/// Reads `bytes` as little-endian words into `words`, each Salsa20 block in [`DIAGONAL_ORDER`].
fn to_diagonal_words(bytes: &[u8], words: &mut [u32]) {
    let (bytes, _) = bytes.as_chunks::<SALSA_BLOCK>();
    let (words, _) = words.as_chunks_mut::<SALSA_WORDS>();
    for (block, words) in bytes.iter().zip(words) {
        let (block, _) = block.as_chunks::<4>();
        for (word, &index) in words.iter_mut().zip(&DIAGONAL_ORDER) {
            *word = u32::from_le_bytes(block[index]);
        }
    }
}

/// The inverse of [`to_diagonal_words`].
fn from_diagonal_words(words: &[u32], bytes: &mut [u8]) {
    let (words, _) = words.as_chunks::<SALSA_WORDS>();
    let (bytes, _) = bytes.as_chunks_mut::<SALSA_BLOCK>();
    for (words, block) in words.iter().zip(bytes) {
        let (block, _) = block.as_chunks_mut::<4>();
        for (word, &index) in words.iter().zip(&DIAGONAL_ORDER) {
            block[index] = word.to_le_bytes();
        }
    }
}

/// RFC 7914's `Integerify`: the last 64-byte block's first 32-bit word (little-endian), here at
/// position 0 of that block, and its second one, at position 13. scrypt reduces it mod N, a
/// power of two at most 2^63, so the low word is all that can matter while N ≤ 2^32; the high
/// word is read too for larger N.
fn integerify(x: &[u32]) -> usize {
    let last = &x[x.len() - SALSA_WORDS..];
    let low = u64::from(last[0]);
    let high = u64::from(last[13]);
    // Truncation on 32-bit targets is harmless: N < 2^32 there, and only the low bits count.
    ((high << 32) | low) as usize
}

/// RFC 7914's `scryptBlockMix` on blocks in [`DIAGONAL_ORDER`]: `output` (as long as `input`,
/// `2r` Salsa20 blocks) gets `Y_0, Y_2, ..., Y_{2r-2}, Y_1, Y_3, ..., Y_{2r-1}`, where
/// `Y_i = Salsa20/8(Y_{i-1} xor B_i)` and `Y_{-1} = B_{2r-1}`.
fn block_mix(input: &[u32], output: &mut [u32]) {
    let half = input.len() / 2;
    let (blocks, _) = input.as_chunks::<SALSA_WORDS>();
    let mut y = blocks[blocks.len() - 1];
    for (i, block) in blocks.iter().enumerate() {
        for (y, b) in y.iter_mut().zip(block) {
            *y ^= b;
        }
        salsa20_8(&mut y);
        let position = (i / 2) * SALSA_WORDS + if i % 2 == 0 { 0 } else { half };
        output[position..position + SALSA_WORDS].copy_from_slice(&y);
    }
    y.zeroize();
}

/// Four lanes of 32-bit words: one diagonal of the Salsa20 matrix.
type Lanes = [u32; 4];

/// Salsa20/8 (the Salsa20 core with 8 rounds, without the stream cipher around it) of a block
/// in [`DIAGONAL_ORDER`], in place: the rounds' output plus their input.
///
/// The `salsa20` crate has the same core, but only on words in natural order, one word at a
/// time, with its output as bytes; this form is where the key derivation spends its time.
fn salsa20_8(block: &mut [u32; SALSA_WORDS]) {
    let (diagonals, _) = block.as_chunks::<4>();
    let input = [diagonals[0], diagonals[1], diagonals[2], diagonals[3]];
    let [mut a, mut b, mut c, mut d] = input;
    for _ in 0..8 {
        // One round on the columns (or, after the turn below, on the rows): each step adds two
        // diagonals, rotates the sum and XORs it into a third.
        b = xor_rotated_sum(b, a, d, 7);
        c = xor_rotated_sum(c, b, a, 9);
        d = xor_rotated_sum(d, c, b, 13);
        a = xor_rotated_sum(a, d, c, 18);
        // Turn the matrix over its main diagonal: the next round works on the other direction.
        d = [d[1], d[2], d[3], d[0]];
        c = [c[2], c[3], c[0], c[1]];
        b = [b[3], b[0], b[1], b[2]];
        std::mem::swap(&mut b, &mut d);
    }
    let output = [a, b, c, d];
    for ((out, lanes), input) in block
        .as_chunks_mut::<4>()
        .0
        .iter_mut()
        .zip(output)
        .zip(input)
    {
        *out = std::array::from_fn(|lane| lanes[lane].wrapping_add(input[lane]));
    }
}

/// `target ^ ((x + y) <<< bits)`, lane by lane.
#[inline(always)]
fn xor_rotated_sum(target: Lanes, x: Lanes, y: Lanes, bits: u32) -> Lanes {
    std::array::from_fn(|lane| target[lane] ^ x[lane].wrapping_add(y[lane]).rotate_left(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelopes_table_takes_a_quarter_of_scrypts() {
        // N = 32768, r = 16: V is 64 MiB; every 4th block makes 16 MiB.
        assert_eq!(checkpoint_interval(1 << 15, 16 * 128), 4);
        let romix = RoMix::new(1 << 15, 16 * 128);
        assert_eq!(
            romix.checkpoints.len() * size_of::<u32>(),
            ROMIX_MEMORY_LIMIT
        );
        // Small tables are kept whole.
        assert_eq!(checkpoint_interval(1 << 10, 8 * 128), 1);
    }

    #[test]
    fn salsa20_8_in_diagonal_order_is_the_salsa20_crates_core() {
        use salsa20::SalsaCore;
        use salsa20::cipher::StreamCipherCore as _;
        use salsa20::cipher::typenum::U4;

        let mut state = [0u32; SALSA_WORDS];
        for round in 0..64u32 {
            for (i, word) in state.iter_mut().enumerate() {
                *word = word
                    .wrapping_mul(0x9e37_79b9)
                    .wrapping_add(round ^ i as u32);
            }
            let mut expected = [0u8; SALSA_BLOCK];
            SalsaCore::<U4>::from_raw_state(state).write_keystream_block((&mut expected).into());

            let mut natural = [0u8; SALSA_BLOCK];
            for (bytes, word) in natural.as_chunks_mut::<4>().0.iter_mut().zip(state) {
                *bytes = word.to_le_bytes();
            }
            let mut diagonal = [0u32; SALSA_WORDS];
            to_diagonal_words(&natural, &mut diagonal);
            salsa20_8(&mut diagonal);
            let mut actual = [0u8; SALSA_BLOCK];
            from_diagonal_words(&diagonal, &mut actual);
            assert_eq!(actual, expected, "round {round}");
        }
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
