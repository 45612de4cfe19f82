"""The code the synthetic camera draws into each frame, so that a viewer can read back which frame it
shows and when it was made (glass-to-glass latency, frames lost), from the picture alone.

64 bits, most significant first: the frame counter (24 bits), the capture time in ms on the hub's
clock modulo 2**32 (32 bits), and a check byte, ``(sum of the 7 bytes before it + 0x5A) & 0xFF`` (a
black or white region is never a valid code). They are drawn as 16 cells per row in 4 rows, white
(luma 235) for 1 and black (16) for 0, each cell ``cell(width)`` pixels square, the block's top-left
corner at (cell, cell), on a mid-grey quiet zone one cell wide. bridge/console/video.js reads it back
by sampling each cell's centre; keep the two in step (tests/test_framecode.py checks this one).
"""

from __future__ import annotations

COLUMNS = 16
ROWS = 4
BITS = COLUMNS * ROWS
WHITE = 235
BLACK = 16
GREY = 128
#: A 3x5 font for the clock drawn under the code: digits, ':' and '.'; '#' is a lit pixel.
FONT: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    ":": ("...", ".#.", "...", ".#.", "..."), ".": ("...", "...", "...", "...", ".#."),
    " ": ("...", "...", "...", "...", "..."),
}


def cell(width: int) -> int:
    """Cell size in pixels for a frame ``width`` pixels wide (8 at 320, 16 at 640); even."""
    return max(8, (width // 40) & ~1)


def min_size() -> tuple[int, int]:
    """The smallest frame that holds the code, its quiet zone and the clock under it."""
    return 160, 120


def _check(payload: bytes) -> int:
    return (sum(payload) + 0x5A) & 0xFF


def encode(counter: int, ts_ms: int) -> list[int]:
    """The 64 bits (0/1) for frame ``counter`` captured at ``ts_ms``, in drawing order."""
    payload = (counter % (1 << 24)).to_bytes(3, "big") + (ts_ms % (1 << 32)).to_bytes(4, "big")
    value = int.from_bytes(payload + bytes([_check(payload)]), "big")
    return [(value >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def decode(bits: list[int]) -> tuple[int, int] | None:
    """(counter, ts_ms mod 2**32) from 64 bits, or None when the check byte does not match."""
    if len(bits) != BITS:
        return None
    value = 0
    for b in bits:
        value = (value << 1) | (1 if b else 0)
    raw = value.to_bytes(8, "big")
    if _check(raw[:7]) != raw[7]:
        return None
    return int.from_bytes(raw[:3], "big"), int.from_bytes(raw[3:7], "big")
