"""A JSON answer spliced from encoded steps: pure, no I/O.

A viewership answer is a JSON array of rows in step order. `RollupReader` keeps each step's rows
already encoded (`encode_step`: the array's elements and the commas between them, without the
brackets) and answers by joining the fragments of every step (`join_steps`), so a request
encodes only the steps whose data moved. orjson writes an array as `[` + its elements' own
encodings joined by `,` + `]`, with no whitespace, so the spliced bytes are the bytes that
encoding the whole answer at once gives (a property test checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson


def without_nulls(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each row without its null fields: a metric with no data, or a dimension whose value is
    unknown, left out instead of `null` (`PLAYPULSE_API_NULLS=omit`: Livepeer's schemas declare
    no nullable field and its JS SDK refuses a null, although Livepeer's server answers one)."""
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def encode_step(rows: Sequence[Mapping[str, Any]], *, omit_nulls: bool = False) -> bytes:
    """One step's rows as the elements of a JSON array, comma-separated, without the brackets
    (`b""` when there are none)."""
    return orjson.dumps(without_nulls(rows) if omit_nulls else rows)[1:-1]


def join_steps(fragments: Iterable[bytes]) -> bytes:
    """The JSON array of every fragment's rows, in order (empty fragments add nothing). One
    copy of the bytes: an answer is hundreds of kilobytes."""
    parts: list[bytes] = []
    for fragment in fragments:
        if fragment:
            parts += (b",", fragment)
    if not parts:
        return b"[]"
    parts[0] = b"["  # the first comma
    parts.append(b"]")
    return b"".join(parts)
