//! Linked statistics for Civic: sums over the residents two partners both hold, computed
//! without either learning which of its residents the other holds, and output as additive
//! shares that enter the secure sum with the distributed noise.
//!
//! # One pairwise session
//!
//! A *holder* (a housing association, say) has per resident an identifier w and a small
//! vector t_w of public-bounded values (a one-hot of its own category, or a clamped number).
//! A *matcher* (an acute trust) has per resident an identifier v and a category c(v). The
//! session computes, for every category c, S_c = Σ t_w over residents in both lists whose
//! matcher category is c, as shares: the holder ends with S_c + r_c mod 2⁶⁴, the matcher with
//! −r_c mod 2⁶⁴. Each side adds its shares into its secure-aggregation vector, so the
//! coordinator sees only the sum over every pair and partner, with the noise.
//!
//! 1. Holder: a fresh Paillier key and a fresh exponent k₂; sends, shuffled and padded to its
//!    public capacity, (k₂·H(w), Enc(t_w)) per resident, plus dummy entries (s·B, Enc(0)).
//!    H is [`group::identifier_point`]: RFC 9380's `expand_message_xmd` (SHA-512) with a Civic
//!    tag and the session id, then Elligator (`from_uniform_bytes`).
//! 2. Matcher: a fresh exponent k₁,c per category; sends K_c = k₁,c·B and, shuffled and
//!    padded, k₁,c(v)·H(v) per resident.
//! 3. Holder: returns every matcher point times k₂, shuffled, with each category's dummy
//!    partners s·K_c = k₁,c·(s·B) and padding.
//! 4. Matcher: for each holder entry X and category c, looks up k₁,c·X among the returned
//!    points; a hit means "this holder entry is one of my category-c residents" (or a dummy)
//!    without saying which resident on either side. It multiplies the matched ciphertexts
//!    per category (every entry, by 1 where it did not match), multiplies in Enc(R) with
//!    full randomness (so the product is freshly random), R uniform in [0, N − 2^used), and
//!    sends Enc(S_c + R). R's slots are the r_c. Slots are 41 bits wider than any sum, so a
//!    carry between slots (which would put one cell off) has probability below 2⁻⁴⁰.
//! 5. Holder: decrypts and reads its shares off the slots, checking nothing in the
//!    plaintext (a check would be an oracle for the matcher).
//!
//! # Why this protocol, and what it costs
//!
//! It is Ion et al.'s DDH-based Private Intersection-Sum ("On Deploying Secure Computing:
//! Private Intersection-Sum-with-Cardinality", EuroS&P 2020) with three changes. The sums
//! come out as shares, as in Private-ID's PS3I, so that no party ever sees one pair's
//! un-noised statistic (guarantee 2). The matcher's categories travel as separate keys, not
//! separate lists, so the holder learns nothing of them. And Ion et al.'s cardinality, the
//! one count the matcher learns, is noised by dummy matches (below).
//!
//! The additively homomorphic scheme is Paillier with a 3072-bit N (`paillier`), not
//! exponential ElGamal on Ristretto:
//!
//! - A share must be a masked sum, S + R with R drawn over far more than a discrete
//!   logarithm can search (here, the whole plaintext range).
//! - ElGamal decrypts only by a discrete logarithm, which is feasible up to about 2⁴⁰.
//!   Paillier decrypts any value below N.
//! - Paillier is about 100 times dearer to encrypt. The holder, which should be the smaller
//!   list, encrypts once per record, with short-exponent randomness from a fixed-base table:
//!   32 multiplications mod N² instead of a 3072-bit exponentiation.
//! - The larger list pays only elliptic-curve work: a hash, two scalar multiplications and
//!   two compressions per record.
//! - Measured on the 2-core CI machine: see `benches/README.md` (`cargo bench --bench
//!   linkage`).
//!
//! # What each party learns
//!
//! - **The coordinator** relays messages it cannot read ([`relay`]: sealed end to end under
//!   keys the partners' manifest identities sign). Their lengths depend only on the public
//!   parameters, and padding costs what a record costs; tests check both. Their timing is the
//!   shell's to fix (a schedule).
//! - **The holder** sees random-looking points. It learns nothing of which of its residents
//!   matched: under DDH the matcher's points are pseudorandom. Each masked sum is masked by R
//!   uniform in [0, N − 2^used), so what it decrypts is within 2^(used − |N| + 1) of uniform,
//!   even if it encrypted values outside the bounds. It makes no check after decrypting, so
//!   there is no oracle to query.
//! - **The matcher** learns, per category, how many of its residents are also at the holder,
//!   plus the dummies: D_c = clamp(shift + Z, 0, 2·shift), Z ~ N_Z(0, σ²). Taken with every
//!   other matcher's counts, this is δ-approximately ρ-zCDP with ρ = Δ²/2σ², Δ² the pairs a
//!   resident can be in, and δ from the clamp (see [`params::DummyNoise`]). Its cost (the
//!   policy's `match_counts`) is charged with the query and δ is added to the stated (ε, δ).
//!   An honest matcher cannot tell a dummy match from a real one: both are (X, k₁,c·X)
//!   pairs of pseudorandom points.
//! - Message sizes: the holder's list is its capacity plus 2·shift per category; the
//!   matcher's is its capacity.
//!
//! # Against a party that deviates
//!
//! The protocol is secure against semi-honest partners, under DDH in the random-oracle model
//! for H, and under DCR with short exponents for Paillier. A deviating partner goes further.
//! Nothing here proves correct behaviour (that would take zero-knowledge proofs, not built):
//!
//! - **A matcher** can:
//!   - choose which ciphertexts it multiplies, or raise one to a power, singling out or
//!     amplifying one resident's values in the released sum beyond the plan's sensitivity;
//!   - blind its points with keys other than the ones it announced, so that the dummies
//!     (made with the announced keys) never mix with its real matches. It then learns exact
//!     counts, and with one key per target, exact membership. Proofs that each point uses an
//!     announced key (an OR of discrete-log equalities) would stop it.
//! - **A holder** can encrypt values outside the bounds: that is lying about its own data,
//!   which any partner can do, and the full-range mask keeps it from learning anything by it.
//!   But it can also choose a malformed modulus N (one sharing a factor with φ(N)). The
//!   matcher's r^N then no longer re-randomises the product, so tags hidden in the
//!   ciphertexts' randomness survive into the masked sums, and the holder learns which of its
//!   entries matched. A proof that N is a Paillier modulus (N-th roots of random challenges,
//!   Goldberg, Reyzin, Sagga and Baldimtsi 2019) would stop it. Leaving out the dummies
//!   exposes only its own residents' counts.
//! - **Either side** is refused with a code, and its state is left unchanged, when it sends:
//!   a message for another session (round, pair, parameters or protocol version); a list of
//!   the wrong length; a non-canonical or identity point; a repeated point; a modulus of the
//!   wrong size; or a ciphertext outside [1, N²) (or, in the masked sums, not prime to N).

pub mod error;
pub mod federation;
pub mod group;
pub mod paillier;
pub mod params;
pub mod protocol;
pub mod relay;
pub mod slots;

pub use error::LinkError;
pub use params::{DummyNoise, Params, Setup};
pub use protocol::{
    HolderAwaitingSums, HolderOffer, HolderRecord, HolderStarted, MaskedSums, MatcherOffer,
    MatcherOutput, MatcherRecord, MatcherStarted, Refused, Returned, Shares, holder_start,
    matcher_start,
};
