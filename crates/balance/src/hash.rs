//! A stable 64-bit hash for consistent-hash keys and ring positions: FNV-1a over the
//! bytes, then a SplitMix64 finaliser so that near-identical keys spread evenly.
//! Stable across processes and versions, unlike `std`'s `DefaultHasher`.

#[inline]
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
