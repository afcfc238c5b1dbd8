"""Learning a meter's GCM authentication key from its own frames.

A GCM tag is ``E(K, IV || 1) xor GHASH_H(AAD, ciphertext)``, and GHASH is linear over GF(2) in
the AAD. The AAD of a Smarty frame is ``0x30 || AK`` (two 16-byte blocks: ``0x30 || AK[0:15]`` and
``AK[15] || 0...``). With the encryption key known, everything but AK can be computed, so the
difference between a frame's tag and the tag the frame would carry under ``AK = 0`` is a linear
function of AK's 128 bits:

    tag xor tag(AK = 0) = (AK[0:15] . H^(n+3)) xor (AK[15] . H^(n+2))     (n: ciphertext blocks)

truncated to the 96 bits a Smarty sends. Every frame therefore gives 96 linear equations on the
128 unknown bits; frames with the same number of blocks give the same left-hand side, frames of
another length add new equations. Gaussian elimination over GF(2) (rows are Python ints, the
right-hand side in bit 128) gives a key that explains every frame seen, and says whether a new
frame is consistent with them.

Field elements are GCM blocks read as big-endian 128-bit ints: the most significant bit is the
coefficient of x^0 (GCM's bit order), so multiplying by x is a right shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# x^128 = x^7 + x^2 + x + 1 in GCM's reflected bit order.
_REDUCTION = 0xE1 << 120
BLOCK_BITS = 128
TAG_BITS = 96
# The 96 tag bits a Smarty sends are the top bits of the 16-byte GCM tag read as an int.
_TAG_SHIFT = BLOCK_BITS - TAG_BITS
_COEFFICIENTS = (1 << BLOCK_BITS) - 1


def gf_times_x(value: int) -> int:
    """value . x in GF(2^128)."""
    return (value >> 1) ^ _REDUCTION if value & 1 else value >> 1


def gf_multiply(a: int, b: int) -> int:
    """a . b in GF(2^128) (NIST SP 800-38D, algorithm 1)."""
    product = 0
    for bit in range(BLOCK_BITS - 1, -1, -1):
        if (a >> bit) & 1:
            product ^= b
        b = gf_times_x(b)
    return product


def gf_power(base: int, exponent: int) -> int:
    """base ^ exponent in GF(2^128)."""
    result = 1 << (BLOCK_BITS - 1)  # the field's 1 (x^0)
    while exponent:
        if exponent & 1:
            result = gf_multiply(result, base)
        base = gf_multiply(base, base)
        exponent >>= 1
    return result


def ciphertext_blocks(length: int) -> int:
    """The number of 16-byte GHASH blocks of a ciphertext of length bytes."""
    return -(-length // 16)


@dataclass(frozen=True, slots=True)
class LearnedAuthKey:
    """An authentication key learned from a meter's frames: a secret, like the decryption key.

    ``block_counts`` are the ciphertext lengths (in 16-byte blocks) it was learned from: it
    verifies frames of those lengths with full strength, and frames of other lengths once enough
    lengths have been seen. Store both (``as_dict``) so that a restart verifies
    from the first frame and keeps learning where it stopped.
    """

    key: bytes = field(repr=False)
    block_counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.key) != 16 or not self.block_counts:
            raise ValueError("a learned authentication key is 16 bytes and has block counts")

    def __repr__(self) -> str:
        return f"LearnedAuthKey(<key hidden>, block_counts={self.block_counts})"

    def as_dict(self) -> dict[str, object]:
        """A JSON form for storage; it holds the secret key."""
        return {"key": self.key.hex().upper(), "block_counts": list(self.block_counts)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LearnedAuthKey:
        """The key stored by ``as_dict``; ValueError when the data is not one."""
        key, counts = data.get("key"), data.get("block_counts")
        if not isinstance(key, str) or not isinstance(counts, list):
            raise ValueError("not a stored authentication key")
        if not all(isinstance(count, int) and count > 0 for count in counts):
            raise ValueError("not a stored authentication key")
        return cls(bytes.fromhex(key), tuple(counts))


class AuthKeySystem:
    """The linear system of every frame learned from; its hash key H is secret and never shown."""

    __slots__ = ("_attainable", "_block_counts", "_hash_key", "_pivots", "_rows")

    def __init__(self, hash_key: int) -> None:
        self._hash_key = hash_key
        # Leading coefficient bit -> row: a row echelon form, kept reduced only as far as needed.
        self._pivots: dict[int, int] = {}
        self._rows: dict[int, tuple[int, ...]] = {}
        self._block_counts: list[int] = []
        self._attainable: int | None = None

    def __repr__(self) -> str:
        return f"AuthKeySystem(rank={self.rank}, block_counts={self.block_counts})"

    @property
    def rank(self) -> int:
        """How many of the key's 128 bits the frames determine."""
        return len(self._pivots)

    @property
    def complete(self) -> bool:
        """Whether the tags of frames of every length are determined.

        Every tag depends on the key only through ``Y = AK[0:15] . H xor AK[15]`` (times a power
        of H): keys whose Y is 0 change no tag at all, so the rank stops short of 128 by the
        dimension of that kernel (0, 1 or 2 bits for most hash keys). Once the system reaches
        the rank of the map to Y, any of its solutions gives every frame the meter's own tag.
        """
        if self._attainable is None:
            pivots: dict[int, int] = {}
            for row in _matrix(self._hash_key, self._hash_key, 1 << (BLOCK_BITS - 1), 0):
                reduced = _reduce(pivots, row)
                if reduced:
                    pivots[reduced.bit_length() - 1] = reduced
            self._attainable = len(pivots)
        return len(self._pivots) == self._attainable

    @property
    def block_counts(self) -> tuple[int, ...]:
        """The ciphertext lengths, in blocks, that have added equations, in the order seen."""
        return tuple(self._block_counts)

    def equations(self, blocks: int) -> tuple[int, ...]:
        """The 96 left-hand sides for frames of blocks ciphertext blocks: bit b of row i is the
        weight of key bit b (of the key read as a big-endian int) in tag bit i.
        """
        rows = self._rows.get(blocks)
        if rows is None:
            hash_key = self._hash_key
            rows = _matrix(
                hash_key, gf_power(hash_key, blocks + 3), gf_power(hash_key, blocks + 2), _TAG_SHIFT
            )
            self._rows[blocks] = rows
        return rows

    def tag_difference(self, blocks: int, key: int) -> int:
        """The 96 tag bits by which key moves the tag of a frame of blocks blocks away from the
        tag under the all-zero key (the right-hand sides a frame under key would give).
        """
        first = gf_multiply(key >> 8, gf_power(self._hash_key, blocks + 3))
        second = gf_multiply((key & 0xFF) << 120, gf_power(self._hash_key, blocks + 2))
        return (first ^ second) >> _TAG_SHIFT

    def add(self, blocks: int, difference: int) -> int | None:
        """Add a frame's equations (difference: its tag xor its tag under the zero key, 96 bits).

        Returns how many of the 96 equations were already implied (the evidence the frame adds
        to what is known), or None when they contradict the system, which then stays unchanged.
        """
        pivots = dict(self._pivots)
        implied = 0
        for bit, row in enumerate(self.equations(blocks)):
            reduced = _reduce(pivots, row | (((difference >> bit) & 1) << BLOCK_BITS))
            if reduced & _COEFFICIENTS:
                pivots[(reduced & _COEFFICIENTS).bit_length() - 1] = reduced
            elif reduced:
                return None
            else:
                implied += 1
        self._pivots = pivots
        if implied < TAG_BITS and blocks not in self._block_counts:
            self._block_counts.append(blocks)
        return implied

    def key(self) -> int:
        """A key that satisfies every equation (undetermined bits are 0)."""
        solution = 0
        for pivot in sorted(self._pivots):
            row = self._pivots[pivot]
            others = row & _COEFFICIENTS & ~(1 << pivot)
            if ((row >> BLOCK_BITS) ^ (others & solution).bit_count()) & 1:
                solution |= 1 << pivot
        return solution


def _reduce(pivots: dict[int, int], row: int) -> int:
    """row minus the pivot rows of its leading bits, until its leading bit is a new pivot."""
    while coefficients := row & _COEFFICIENTS:
        pivot = pivots.get(coefficients.bit_length() - 1)
        if pivot is None:
            return row
        row ^= pivot
    return row


def _matrix(hash_key: int, first: int, second: int, shift: int) -> tuple[int, ...]:
    # Key bytes 0..14 fill the first AAD block after 0x30 (weight ``first``); key byte 15 opens
    # the second (weight ``second``). Key bit b (of the big-endian int) is x^(135-b) in the
    # first block for b >= 8 and x^(7-b) in the second: multiplying a weight by x column after
    # column gives the matrix without a single general multiplication.
    columns: list[int] = [0] * BLOCK_BITS
    weight = first
    for power in range(BLOCK_BITS):
        if power >= 8:
            columns[135 - power] = weight
        weight = gf_times_x(weight)
    weight = second
    for power in range(8):
        columns[7 - power] = weight
        weight = gf_times_x(weight)
    # Transposed through binary text: zip does in C what 12288 bit tests would do in Python.
    width = BLOCK_BITS - shift
    text = (format(column >> shift, f"0{width}b") for column in reversed(columns))
    return tuple(int("".join(bits), 2) for bits in reversed(list(zip(*text, strict=True))))
