#!/usr/bin/env python3
"""Independent known-answer-test generator for civic-secagg.

Stdlib only. Running `python3 generate.py` from this folder rewrites
kdf.json, prg.json, aead.json and shamir.json deterministically.

Every primitive here (HKDF-SHA256, ChaCha block function, Poly1305,
ChaCha20-Poly1305, Shamir over Z_l) is implemented from the specs and
checked against the published RFC vectors before anything is written.
"""

import hashlib
import hmac
import json
import os
import random
import struct

LABEL = b"civic-secagg/v3"
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

HERE = os.path.dirname(os.path.abspath(__file__))


def hx(b):
    return bytes(b).hex()


def unhex(s):
    return bytes.fromhex(s.replace(" ", "").replace("\n", "").replace(":", ""))


# ---------------------------------------------------------------------------
# 1. HKDF-SHA256 (RFC 5869)
# ---------------------------------------------------------------------------

def hkdf_extract(salt, ikm):
    if not salt:
        salt = b"\x00" * 32
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    assert length <= 255 * 32
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def hkdf(salt, ikm, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def kdf_info(purpose, round_id, first, second):
    assert 0 <= round_id <= U64_MAX and 0 <= first <= U32_MAX and 0 <= second <= U32_MAX
    return purpose.encode("ascii") + b"\x00" + struct.pack(">QII", round_id, first, second)


def kdf(purpose, ikm, round_id, first, second):
    assert len(ikm) == 32
    return hkdf(LABEL, ikm, kdf_info(purpose, round_id, first, second), 32)


def pairwise_ids(u, v):
    return min(u, v), max(u, v)


RFC5869 = [
    # A.1
    dict(ikm="0b" * 22, salt="000102030405060708090a0b0c", info="f0f1f2f3f4f5f6f7f8f9",
         okm="3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
             "34007208d5b887185865"),
    # A.2
    dict(ikm=hx(range(0x00, 0x50)), salt=hx(range(0x60, 0xB0)), info=hx(range(0xB0, 0x100)),
         okm="b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
             "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
             "cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    # A.3
    dict(ikm="0b" * 22, salt="", info="",
         okm="8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
             "9d201395faa4b61a96c8"),
]


def check_rfc5869():
    for tc in RFC5869:
        okm = unhex(tc["okm"])
        got = hkdf(unhex(tc["salt"]), unhex(tc["ikm"]), unhex(tc["info"]), len(okm))
        assert got == okm, "HKDF does not match RFC 5869"


def build_kdf(rng):
    ikm_a = bytes(range(32))
    ikm_b = bytes([0x42] * 32)
    ikm_c = bytes(rng.getrandbits(8) for _ in range(32))
    ikm_z = bytes(32)

    # (purpose, ikm, round_id, first, second)
    cases = [
        ("pairwise-mask", ikm_a, 0, *pairwise_ids(0, 1)),
        ("pairwise-mask", ikm_c, 1, *pairwise_ids(4294967295, 0)),
        ("pairwise-mask", ikm_b, U64_MAX, *pairwise_ids(17, 3)),
        ("share-encryption", ikm_a, 0, 0, 4294967295),
        ("share-encryption", ikm_a, 0, 4294967295, 0),
        ("share-encryption", ikm_c, 1, 5, 9),
        ("share-encryption", ikm_b, U64_MAX, 9, 5),
        ("self-mask", ikm_a, 0, 0, 0),
        ("self-mask", ikm_c, 1, 4294967295, 4294967295),
        ("self-mask", ikm_z, U64_MAX, 7, 7),
    ]
    valid = []
    for purpose, ikm, rid, a, b in cases:
        if purpose == "pairwise-mask":
            assert a <= b
        if purpose == "self-mask":
            assert a == b
        valid.append(dict(purpose=purpose, ikm=hx(ikm), round_id=rid, first=a, second=b,
                          okm=hx(kdf(purpose, ikm, rid, a, b))))

    def inv(why, purpose, ikm, rid, a, b, okm):
        assert kdf(purpose, ikm, rid, a, b) != okm
        return dict(why=why, purpose=purpose, ikm=hx(ikm), round_id=rid, first=a, second=b,
                    okm=hx(okm))

    invalid = [
        inv("okm is share-encryption for (sender=9, recipient=5): direction matters",
            "share-encryption", ikm_c, 1, 5, 9, kdf("share-encryption", ikm_c, 1, 9, 5)),
        inv("okm is for round_id+1",
            "pairwise-mask", ikm_a, 0, 0, 1, kdf("pairwise-mask", ikm_a, 1, 0, 1)),
        inv("okm is for round_id 0 (u64 max must not wrap or truncate)",
            "self-mask", ikm_z, U64_MAX, 7, 7, kdf("self-mask", ikm_z, 0, 7, 7)),
        inv("okm is for purpose self-mask instead of pairwise-mask",
            "pairwise-mask", ikm_b, 3, 3, 3, kdf("self-mask", ikm_b, 3, 3, 3)),
        inv("okm is for a different ikm (last byte flipped)",
            "share-encryption", ikm_a, 0, 0, 4294967295,
            kdf("share-encryption", ikm_a[:31] + bytes([ikm_a[31] ^ 1]), 0, 0, 4294967295)),
        inv("okm uses the bare HKDF salt (empty) instead of the protocol label",
            "pairwise-mask", ikm_a, 0, 0, 1,
            hkdf(b"", ikm_a, kdf_info("pairwise-mask", 0, 0, 1), 32)),
        inv("okm omits the 0x00 separator after the purpose label",
            "self-mask", ikm_a, 0, 0, 0,
            hkdf(LABEL, ikm_a, b"self-mask" + struct.pack(">QII", 0, 0, 0), 32)),
        inv("okm encodes round_id/first/second little-endian",
            "share-encryption", ikm_c, 1, 5, 9,
            hkdf(LABEL, ikm_c, b"share-encryption\x00" + struct.pack("<QII", 1, 5, 9), 32)),
    ]
    return {"rfc5869": RFC5869, "valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# 2. ChaCha block function (20 or 12 rounds) and the PRG
# ---------------------------------------------------------------------------

M32 = 0xFFFFFFFF
CONSTANTS = struct.unpack("<4I", b"expand 32-byte k")


def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & M32


def _qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & M32; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & M32; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32; s[b] = _rotl(s[b] ^ s[c], 7)


def chacha_block_words(state, rounds):
    """state: 16 u32 words. Returns 64-byte block."""
    assert rounds % 2 == 0 and len(state) == 16
    w = list(state)
    for _ in range(rounds // 2):
        _qr(w, 0, 4, 8, 12); _qr(w, 1, 5, 9, 13); _qr(w, 2, 6, 10, 14); _qr(w, 3, 7, 11, 15)
        _qr(w, 0, 5, 10, 15); _qr(w, 1, 6, 11, 12); _qr(w, 2, 7, 8, 13); _qr(w, 3, 4, 9, 14)
    return struct.pack("<16I", *[(w[i] + state[i]) & M32 for i in range(16)])


def chacha_ietf_block(key, counter, nonce, rounds=20):
    """RFC 8439 layout: word 12 = 32-bit counter, words 13..15 = 96-bit nonce."""
    assert len(key) == 32 and len(nonce) == 12 and 0 <= counter <= M32
    state = list(CONSTANTS) + list(struct.unpack("<8I", key)) + [counter] + list(struct.unpack("<3I", nonce))
    return chacha_block_words(state, rounds)


def chacha_rng_block(key, block_counter, stream=0, rounds=12):
    """rand_chacha layout: words 12,13 = 64-bit block counter (low, high), 14,15 = 64-bit stream."""
    assert len(key) == 32 and 0 <= block_counter <= U64_MAX
    state = (list(CONSTANTS) + list(struct.unpack("<8I", key))
             + [block_counter & M32, block_counter >> 32, stream & M32, stream >> 32])
    return chacha_block_words(state, rounds)


RFC8439_A1 = [
    dict(key="00" * 32, counter=0, nonce="00" * 12,
         keystream="76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                   "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"),
    dict(key="00" * 32, counter=1, nonce="00" * 12,
         keystream="9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
                   "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"),
]


def check_rfc8439_a1():
    for tc in RFC8439_A1:
        key, nonce = unhex(tc["key"]), unhex(tc["nonce"])
        exp = unhex(tc["keystream"])
        assert chacha_ietf_block(key, tc["counter"], nonce, 20) == exp, "ChaCha20 block != RFC 8439 A.1"
        # zero nonce + small counter: identical to the 64-bit-counter layout
        assert chacha_rng_block(key, tc["counter"], 0, 20) == exp


# AES-256 (FIPS 197), encryption only, for the mask generator: AES-256-CTR with a 128-bit
# big-endian counter from 0.

def _gf_mul(a, b):
    p = 0
    while b:
        if b & 1:
            p ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else (a << 1)
        b >>= 1
    return p


def _make_sbox():
    sbox = []
    for x in range(256):
        inv = next((y for y in range(1, 256) if _gf_mul(x, y) == 1), 0)
        b = inv
        for shift in range(1, 5):
            b ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
        sbox.append(b ^ 0x63)
    return sbox


SBOX = _make_sbox()


def aes256_round_keys(key):
    assert len(key) == 32
    words = [list(key[4 * i:4 * i + 4]) for i in range(8)]
    rcon = 1
    for i in range(8, 60):
        temp = list(words[i - 1])
        if i % 8 == 0:
            temp = [SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = _gf_mul(rcon, 2)
        elif i % 8 == 4:
            temp = [SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - 8], temp)])
    return [sum(words[4 * r:4 * r + 4], []) for r in range(15)]


def aes256_encrypt_block(round_keys, block):
    s = [a ^ b for a, b in zip(block, round_keys[0])]
    for rnd in range(1, 15):
        s = [SBOX[b] for b in s]
        s = [s[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4)]
        if rnd < 14:
            mixed = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c:4 * c + 4]
                mixed += [
                    _gf_mul(a0, 2) ^ _gf_mul(a1, 3) ^ a2 ^ a3,
                    a0 ^ _gf_mul(a1, 2) ^ _gf_mul(a2, 3) ^ a3,
                    a0 ^ a1 ^ _gf_mul(a2, 2) ^ _gf_mul(a3, 3),
                    _gf_mul(a0, 3) ^ a1 ^ a2 ^ _gf_mul(a3, 2),
                ]
            s = mixed
        s = [a ^ b for a, b in zip(s, round_keys[rnd])]
    return bytes(s)


def prg_keystream(key, nbytes, first_block=0, counter_order="big"):
    keys = aes256_round_keys(key)
    out = b""
    ctr = first_block
    while len(out) < nbytes:
        out += aes256_encrypt_block(keys, ctr.to_bytes(16, counter_order))
        ctr += 1
    return out[:nbytes]


def prg_words(key, width, count, keystream=None):
    assert width in (32, 64)
    n = width // 8
    ks = keystream if keystream is not None else prg_keystream(key, n * count)
    return [int.from_bytes(ks[i * n:(i + 1) * n], "little") for i in range(count)]


# FIPS 197 appendix C.3, and NIST SP 800-38A F.5.5 (CTR-AES256, its first two blocks).
FIPS197_C3 = dict(key="000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                  plaintext="00112233445566778899aabbccddeeff",
                  ciphertext="8ea2b7ca516745bfeafc49904b496089")
SP800_38A_F55 = dict(key="603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                     counter="f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                     keystream="0bdf7df1591716335e9a8b15c860c502"
                               "5a6e699d536119065433863c8f657b94")


def check_aes():
    keys = aes256_round_keys(unhex(FIPS197_C3["key"]))
    assert aes256_encrypt_block(keys, unhex(FIPS197_C3["plaintext"])) == unhex(FIPS197_C3["ciphertext"]), \
        "AES-256 != FIPS 197 C.3"
    start = int(SP800_38A_F55["counter"], 16)
    ks = prg_keystream(unhex(SP800_38A_F55["key"]), 32, first_block=start)
    assert ks == unhex(SP800_38A_F55["keystream"]), "AES-256-CTR != SP 800-38A F.5.5"


PRG_WORDS = 48  # 48 * 8 = 384 bytes (24 blocks) for width 64; 192 bytes (12 blocks) for width 32


def build_prg(rng):
    key_zero = bytes(32)
    key_seq = bytes(range(32))
    key_ff = bytes([0xFF] * 32)
    key_rand = bytes(rng.getrandbits(8) for _ in range(32))

    valid = []
    for key in (key_zero, key_seq, key_ff, key_rand):
        for width in (64, 32):
            words = prg_words(key, width, PRG_WORDS)
            valid.append(dict(key=hx(key), width=width, words=[str(x) for x in words]))

    def inv(why, key, width, words):
        assert prg_words(key, width, PRG_WORDS) != words
        return dict(why=why, key=hx(key), width=width, words=[str(x) for x in words])

    key_seq_flip = bytes([key_seq[0] ^ 1]) + key_seq[1:]
    ks_seq = prg_keystream(key_seq, 8 * PRG_WORDS)
    invalid = [
        inv("words are ChaCha12 (protocol v1), not AES-256-CTR", key_zero, 64,
            prg_words(key_zero, 64, PRG_WORDS, chacha_keystream(key_zero, 8 * PRG_WORDS, 12))),
        inv("words are for a different key (first key byte xor 1)", key_seq, 64,
            prg_words(key_seq_flip, 64, PRG_WORDS)),
        inv("the counter is little-endian instead of big-endian", key_rand, 32,
            prg_words(key_rand, 32, PRG_WORDS,
                      prg_keystream(key_rand, 4 * PRG_WORDS, counter_order="little"))),
        inv("words decoded big-endian instead of little-endian", key_seq, 64,
            [int.from_bytes(ks_seq[i * 8:(i + 1) * 8], "big") for i in range(PRG_WORDS)]),
        inv("words start at counter 1 instead of 0", key_ff, 64,
            prg_words(key_ff, 64, PRG_WORDS, prg_keystream(key_ff, 8 * PRG_WORDS, first_block=1))),
    ]
    return {"fips197_aes256": [FIPS197_C3], "sp800_38a_ctr_aes256": [SP800_38A_F55],
            "valid": valid, "invalid": invalid}


def chacha_keystream(key, nbytes, rounds):
    out = b""
    ctr = 0
    while len(out) < nbytes:
        out += chacha_rng_block(key, ctr, 0, rounds)
        ctr += 1
    return out[:nbytes]


# ---------------------------------------------------------------------------
# 3. Poly1305 and ChaCha20-Poly1305 AEAD (RFC 8439 section 2.8)
# ---------------------------------------------------------------------------

P1305 = (1 << 130) - 5


def poly1305(key, msg):
    assert len(key) == 32
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    acc = 0
    for i in range(0, len(msg), 16):
        n = int.from_bytes(msg[i:i + 16] + b"\x01", "little")
        acc = ((acc + n) * r) % P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def chacha20_xor(key, counter, nonce, data):
    out = bytearray()
    for i in range(0, len(data), 64):
        ks = chacha_ietf_block(key, counter + i // 64, nonce, 20)
        chunk = data[i:i + 64]
        out += bytes(a ^ b for a, b in zip(chunk, ks))
    return bytes(out)


def _pad16(b):
    return b"\x00" * ((16 - len(b) % 16) % 16)


def _aead_tag(key, nonce, aad, ct):
    otk = chacha_ietf_block(key, 0, nonce, 20)[:32]
    mac_data = aad + _pad16(aad) + ct + _pad16(ct) + struct.pack("<QQ", len(aad), len(ct))
    return poly1305(otk, mac_data)


def aead_seal(key, nonce, aad, pt):
    ct = chacha20_xor(key, 1, nonce, pt)
    return ct + _aead_tag(key, nonce, aad, ct)


def aead_open(key, nonce, aad, ct_tag):
    """Returns plaintext or None on authentication failure."""
    if len(ct_tag) < 16:
        return None
    ct, tag = ct_tag[:-16], ct_tag[-16:]
    if not hmac.compare_digest(_aead_tag(key, nonce, aad, ct), tag):
        return None
    return chacha20_xor(key, 1, nonce, ct)


RFC8439_AEAD_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                   b"tip for the future, sunscreen would be it.")
RFC8439_AEAD = dict(
    key=hx(range(0x80, 0xA0)),
    nonce="070000004041424344454647",
    aad="50515253c0c1c2c3c4c5c6c7",
    plaintext=hx(RFC8439_AEAD_PT),
    ciphertext_and_tag=(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
        "1ae10b594f09e26a7e902ecbd0600691"),
)


def check_rfc8439_aead():
    # Poly1305 example from RFC 8439 section 2.5.2
    k = unhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
    assert poly1305(k, b"Cryptographic Forum Research Group") == unhex("a8061dc1305136c6c22b8baf0c0127a9")
    tc = RFC8439_AEAD
    key, nonce, aad, pt = (unhex(tc[x]) for x in ("key", "nonce", "aad", "plaintext"))
    assert aead_seal(key, nonce, aad, pt) == unhex(tc["ciphertext_and_tag"]), "AEAD != RFC 8439 2.8.2"
    assert aead_open(key, nonce, aad, unhex(tc["ciphertext_and_tag"])) == pt


def share_aad(round_id, sender, recipient):
    return LABEL + struct.pack(">QII", round_id, sender, recipient)


def share_plaintext(sender, recipient, b_share, sk_share):
    assert len(b_share) == 32 and len(sk_share) == 32
    return struct.pack(">II", sender, recipient) + b_share + sk_share


def build_aead(rng):
    cases = [
        # ikm, round_id, sender, recipient, nonce, b_share int, sk_share int
        (bytes(range(32)), 0, 0, 1, bytes(12), 1, 2),
        (bytes([0x42] * 32), 1, 4294967295, 0, bytes(range(1, 13)), L - 1, 0),
        (bytes(rng.getrandbits(8) for _ in range(32)), U64_MAX, 7, 3,
         bytes(rng.getrandbits(8) for _ in range(12)), rng.randrange(L), rng.randrange(L)),
        (bytes(rng.getrandbits(8) for _ in range(32)), 123456789, 3, 7,
         bytes(rng.getrandbits(8) for _ in range(12)), rng.randrange(L), rng.randrange(L)),
    ]
    valid = []
    for ikm, rid, snd, rcp, nonce, b, sk in cases:
        key = kdf("share-encryption", ikm, rid, snd, rcp)
        aad = share_aad(rid, snd, rcp)
        pt = share_plaintext(snd, rcp, scalar_bytes(b), scalar_bytes(sk))
        assert len(pt) == 72
        ct = aead_seal(key, nonce, aad, pt)
        assert len(ct) == 72 + 16
        assert aead_open(key, nonce, aad, ct) == pt
        valid.append(dict(ikm=hx(ikm), round_id=rid, sender=snd, recipient=rcp, nonce=hx(nonce),
                          b_share=hx(scalar_bytes(b)), sk_share=hx(scalar_bytes(sk)),
                          key=hx(key), aad=hx(aad), plaintext=hx(pt), ciphertext_and_tag=hx(ct)))

    def inv(why, ikm, rid, snd, rcp, nonce, ct):
        key = kdf("share-encryption", ikm, rid, snd, rcp)
        assert aead_open(key, nonce, share_aad(rid, snd, rcp), ct) is None, why
        return dict(why=why, ikm=hx(ikm), round_id=rid, sender=snd, recipient=rcp,
                    nonce=hx(nonce), ciphertext_and_tag=hx(ct))

    def flip(b, idx, bit=0):
        b = bytearray(b)
        b[idx] ^= 1 << bit
        return bytes(b)

    ikm0, rid0, s0, r0, n0 = cases[2][:5]
    ct0 = unhex(valid[2]["ciphertext_and_tag"])
    ikm1, rid1, s1, r1, n1 = cases[0][:5]
    ct1 = unhex(valid[0]["ciphertext_and_tag"])

    # key derived with swapped ids but aad left as original: isolates key-direction check
    key_sw = kdf("share-encryption", ikm1, rid1, r1, s1)
    ct_keyswap = aead_seal(key_sw, n1, share_aad(rid1, s1, r1), share_plaintext(s1, r1, scalar_bytes(1), scalar_bytes(2)))

    invalid = [
        inv("last tag bit flipped", ikm0, rid0, s0, r0, n0, flip(ct0, len(ct0) - 1, 7)),
        inv("first ciphertext bit flipped", ikm0, rid0, s0, r0, n0, flip(ct0, 0, 0)),
        inv("valid ciphertext for sender=7,recipient=3 presented as sender=3,recipient=7",
            ikm0, rid0, r0, s0, n0, ct0),
        inv("valid ciphertext for round_id 0 presented with round_id 1",
            ikm1, rid1 + 1, s1, r1, n1, ct1),
        inv("round_id u64::MAX presented as 0 (wrapping round_id+1)",
            ikm0, 0, s0, r0, n0, ct0),
        inv("ciphertext truncated (tag missing its last byte)", ikm1, rid1, s1, r1, n1, ct1[:-1]),
        inv("nonce differs from the one used to seal", ikm1, rid1, s1, r1, flip(n1, 11, 0), ct1),
        inv("sealed with key for swapped direction (recipient->sender) but correct aad",
            ikm1, rid1, s1, r1, n1, ct_keyswap),
        inv("valid ciphertext for a different ikm", flip(ikm1, 0, 0), rid1, s1, r1, n1, ct1),
    ]
    return {"rfc8439": [RFC8439_AEAD], "valid": valid, "invalid": invalid}


# ---------------------------------------------------------------------------
# 4. Shamir secret sharing over Z_l
# ---------------------------------------------------------------------------

L = 2 ** 252 + 27742317777372353535851937790883648493


def scalar_bytes(x):
    assert 0 <= x < L
    return x.to_bytes(32, "little")


def scalar_hex(x):
    return hx(scalar_bytes(x))


def scalar_from_hex(s):
    """Returns int, or None if non-canonical / wrong length."""
    b = unhex(s)
    if len(b) != 32:
        return None
    v = int.from_bytes(b, "little")
    return v if v < L else None


def eval_poly(secret, coeffs, x):
    acc = 0
    for c in reversed([secret] + coeffs):
        acc = (acc * x + c) % L
    return acc


def share_secret(secret, coeffs, partners):
    return [(p, eval_poly(secret, coeffs, p + 1)) for p in partners]


class ShamirError(Exception):
    pass


def reconstruct(shares, threshold):
    """shares: list of (partner, value int or None). Raises ShamirError on bad input."""
    if len(shares) < threshold:
        raise ShamirError("insufficient")
    seen = set()
    for p, v in shares:
        if p in seen:
            raise ShamirError("duplicate_partner")
        if v is None:
            raise ShamirError("non_canonical")
        seen.add(p)
    return interpolate_at_zero(shares[:threshold])


def interpolate_at_zero(shares):
    xs = [p + 1 for p, _ in shares]
    acc = 0
    for i, (_, yi) in enumerate(shares):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % L
                den = den * (xj - xs[i]) % L
        acc = (acc + yi * num * pow(den, -1, L)) % L
    return acc


def build_shamir(rng):
    specs = [
        # (secret, threshold, partners)
        (rng.randrange(L), 1, [0, 1, 2]),
        (0, 2, [0, 1, 2, 3]),
        (L - 1, 3, [0, 5, 9, 4294967295, 12]),
        (rng.randrange(L), 11,
         [0, 1, 2, 3, 7, 10, 11, 42, 100, 255, 256, 1000, 65535, 65536, 99999,
          1 << 20, 123456789, 2147483648, 4294967294, 4294967295]),
    ]
    valid = []
    share_sets = []
    for secret, t, partners in specs:
        coeffs = [rng.randrange(L) for _ in range(t - 1)]
        if t == 2:
            coeffs = [1]  # f(x) = x, share values are p + 1 (easy to eyeball)
        shares = share_secret(secret, coeffs, partners)
        assert len(set(partners)) == len(partners)
        # reconstruction from every t-subset (exhaustive when small, sampled otherwise)
        subsets = []
        n = len(shares)
        if t <= 3:
            import itertools
            subsets = [list(c) for c in itertools.combinations(shares, t)]
        else:
            for _ in range(200):
                subsets.append(rng.sample(shares, t))
            subsets.append(shares[:t])
            subsets.append(shares[-t:])
        for sub in subsets:
            assert reconstruct(sub, t) == secret
            assert interpolate_at_zero(sub) == secret
        assert interpolate_at_zero(shares) == secret  # more than t also works
        valid.append(dict(secret=scalar_hex(secret), threshold=t,
                          coefficients=[scalar_hex(c) for c in coeffs],
                          shares=[dict(partner=p, value=scalar_hex(v)) for p, v in shares]))
        share_sets.append((secret, t, shares))

    def js(shares):
        return [dict(partner=p, value=scalar_hex(v)) for p, v in shares]

    reconstruct_cases = []
    # t=1: single share
    s, t, sh = share_sets[0]
    reconstruct_cases.append(dict(threshold=t, shares=js([sh[2]]), secret=scalar_hex(s)))
    # t=2, secret 0, non-adjacent ids
    s, t, sh = share_sets[1]
    reconstruct_cases.append(dict(threshold=t, shares=js([sh[3], sh[0]]), secret=scalar_hex(s)))
    # t=3 including partner 4294967295 (x = 2^32)
    s, t, sh = share_sets[2]
    reconstruct_cases.append(dict(threshold=t, shares=js([sh[3], sh[1], sh[4]]), secret=scalar_hex(s)))
    # t=3 with all 5 shares (more than t)
    reconstruct_cases.append(dict(threshold=t, shares=js(sh), secret=scalar_hex(s)))
    # t=11 unordered subset
    s, t, sh = share_sets[3]
    sub = [sh[i] for i in (19, 0, 5, 13, 2, 17, 8, 11, 3, 15, 9)]
    reconstruct_cases.append(dict(threshold=t, shares=js(sub), secret=scalar_hex(s)))
    # t=11 with 14 shares
    sub = [sh[i] for i in (1, 4, 6, 7, 10, 12, 14, 16, 18, 19, 0, 2, 3, 5)]
    reconstruct_cases.append(dict(threshold=t, shares=js(sub), secret=scalar_hex(s)))
    for rc in reconstruct_cases:
        shares = [(x["partner"], scalar_from_hex(x["value"])) for x in rc["shares"]]
        assert len(shares) >= rc["threshold"]
        assert reconstruct(shares, rc["threshold"]) == scalar_from_hex(rc["secret"])
        assert interpolate_at_zero(shares) == scalar_from_hex(rc["secret"])

    invalid = []

    def add_wrong_secret(why, secret, t, shares):
        assert len(shares) == t - 1
        assert interpolate_at_zero(shares) != secret
        try:
            reconstruct(shares, t)
            raise AssertionError("reconstruct accepted t-1 shares")
        except ShamirError:
            pass
        invalid.append(dict(why=why, expect="wrong_secret", threshold=t, shares=js(shares),
                            secret=scalar_hex(secret)))

    s, t, sh = share_sets[1]
    add_wrong_secret("t-1 = 1 share of a threshold-2 sharing", s, t, [sh[1]])
    s, t, sh = share_sets[2]
    add_wrong_secret("t-1 = 2 shares of a threshold-3 sharing", s, t, [sh[0], sh[3]])
    s, t, sh = share_sets[3]
    add_wrong_secret("t-1 = 10 shares of a threshold-11 sharing", s, t, sh[5:15])

    def raw_share(p, raw_bytes):
        return dict(partner=p, value=hx(raw_bytes))

    def add_bad(why, expect, t, shares_json, secret):
        parsed = [(x["partner"], scalar_from_hex(x["value"])) for x in shares_json]
        try:
            reconstruct(parsed, t)
            raise AssertionError("reconstruct accepted " + expect)
        except ShamirError as e:
            assert str(e) == expect, (str(e), expect)
        invalid.append(dict(why=why, expect=expect, threshold=t, shares=shares_json,
                            secret=scalar_hex(secret)))

    s, t, sh = share_sets[2]
    good = js([sh[0], sh[1], sh[2]])
    add_bad("share value is l itself (little-endian), not reduced", "non_canonical", t,
            [good[0], raw_share(sh[1][0], L.to_bytes(32, "little")), good[2]], s)
    add_bad("share value is 0xff * 32", "non_canonical", t,
            [good[0], good[1], raw_share(sh[2][0], b"\xff" * 32)], s)
    # value + l: same residue, but non-canonical encoding (fits in 32 bytes since value < 2^253 - l)
    v0 = sh[0][1]
    if v0 + L < 2 ** 256:
        add_bad("share value is v + l (same residue, non-canonical encoding)", "non_canonical", t,
                [raw_share(sh[0][0], (v0 + L).to_bytes(32, "little")), good[1], good[2]], s)
    add_bad("share value is 2^255 (high bit set)", "non_canonical", t,
            [good[0], good[1], raw_share(sh[2][0], (1 << 255).to_bytes(32, "little"))], s)
    add_bad("same partner id (and identical share) appears twice", "duplicate_partner", t,
            [good[0], good[1], good[1]], s)
    s2, t2, sh2 = share_sets[3]
    dup = js(sh2[:10]) + [dict(partner=sh2[0][0], value=scalar_hex(sh2[10][1]))]
    add_bad("partner 0 appears twice with different values (11 entries, 10 distinct ids)",
            "duplicate_partner", t2, dup, s2)
    return {"valid": valid, "reconstruct": reconstruct_cases, "invalid": invalid}


# ---------------------------------------------------------------------------

def write(name, obj):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="ascii") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main():
    check_rfc5869()
    check_rfc8439_a1()
    check_aes()
    check_rfc8439_aead()
    # Each section gets its own seeded RNG so editing one section never changes the others.
    write("kdf.json", build_kdf(random.Random(2026)))
    write("prg.json", build_prg(random.Random(2026)))
    write("aead.json", build_aead(random.Random(2026)))
    write("shamir.json", build_shamir(random.Random(2026)))
    print("wrote kdf.json prg.json aead.json shamir.json")


if __name__ == "__main__":
    main()
