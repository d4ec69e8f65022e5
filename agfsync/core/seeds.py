"""Seeds derived from the config seed and the identity of a record (pure, no torch).

Every random draw in agfsync takes its seed from `derive_seed(global_seed, *identity)`,
so a value depends only on what it is for (e.g. prompt id and candidate index), never on
batch size, shard layout, thread scheduling or which machine ran it.
"""

from __future__ import annotations

import hashlib

_SEP = "\x1f"  # unit separator: ("a", "bc") and ("ab", "c") hash differently


def derive_seed(global_seed: int, *identity: object, bits: int = 63) -> int:
    """A `bits`-bit non-negative integer seed from the global seed and a record identity.

    SHA-256 of the parts joined by a separator, so seeds of neighbouring identities are
    unrelated (no `seed + i` correlations between streams).
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    text = _SEP.join([str(int(global_seed)), *(str(part) for part in identity)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)
