"""Canonical Huffman coding of integer symbols, as ``.esqz`` stores its weight streams: a code length
per symbol (the table the file keeps), and the encoded or decoded stream."""

from __future__ import annotations

import heapq
from typing import Dict, List, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError


def huffman_lengths(counts: np.ndarray, max_len: int = 24) -> np.ndarray:
    """Code length per symbol (0 for unused symbols) of an optimal prefix code."""
    symbols = [int(i) for i in np.nonzero(counts)[0]]
    lengths = np.zeros(len(counts), np.uint8)
    if len(symbols) == 1:
        lengths[symbols[0]] = 1
        return lengths
    heap: List[Tuple[int, int, List[int]]] = [(int(counts[s]), s, [s]) for s in symbols]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        tie += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
    if lengths.max() > max_len:
        raise EdgeSqueezeError("Huffman code too long; use fewer bits")
    return lengths


def canonical_codes(lengths: np.ndarray) -> Dict[int, Tuple[int, int]]:
    """symbol -> (code, length), canonical order: by length, then symbol."""
    order = sorted((int(length), s) for s, length in enumerate(lengths) if length)
    codes: Dict[int, Tuple[int, int]] = {}
    code, prev_len = 0, order[0][0] if order else 0
    for length, s in order:
        code <<= length - prev_len
        codes[s] = (code, length)
        code += 1
        prev_len = length
    return codes


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    codes = canonical_codes(lengths)
    table_code = np.zeros(len(lengths), np.int64)
    table_len = np.zeros(len(lengths), np.int64)
    for s, (c, n) in codes.items():
        table_code[s], table_len[s] = c, n
    lens = table_len[symbols]
    total = int(lens.sum())
    bits = np.zeros(total, np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    max_len = int(lens.max()) if len(lens) else 0
    vals = table_code[symbols]
    for k in range(max_len):  # bit k counted from the most significant bit of each code
        has = lens > k
        shift = lens[has] - 1 - k
        bits[starts[has] + k] = (vals[has] >> shift) & 1
    return np.packbits(bits).tobytes()


def huffman_decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols with a lookup table indexed by the next max-length bits."""
    codes = canonical_codes(lengths)
    width = max(n for _, n in codes.values())
    table_sym = np.zeros(1 << width, np.int64)
    table_len = np.zeros(1 << width, np.int64)
    for s, (c, n) in codes.items():
        lo = c << (width - n)
        table_sym[lo : lo + (1 << (width - n))] = s
        table_len[lo : lo + (1 << (width - n))] = n
    bits = np.concatenate([np.unpackbits(np.frombuffer(data, np.uint8)), np.zeros(width, np.uint8)])
    windows = np.zeros(len(bits) - width, np.int64)
    for k in range(width):  # the width bits starting at every position, as one integer
        windows = (windows << 1) | bits[k : k + len(windows)]
    sym_at = table_sym[windows].tolist()
    len_at = table_len[windows].tolist()
    limit = len(bits) - width
    out = [0] * count
    pos = 0
    for i in range(count):
        if pos >= limit:
            raise EdgeSqueezeError(".esqz file is truncated: its Huffman stream ends early")
        out[i] = sym_at[pos]
        pos += len_at[pos]
    if pos > limit:
        raise EdgeSqueezeError(".esqz file is truncated: its Huffman stream ends early")
    return np.asarray(out, np.int64)
