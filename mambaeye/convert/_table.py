"""Key tables: ordered (official pattern, our template) pairs applied with full-match regular expressions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import Tensor

__all__ = ["KeyTable", "UnmappedKeysError"]


class UnmappedKeysError(KeyError):
    """Checkpoint keys that no row of the key table maps; ``.keys`` lists them."""

    def __init__(self, family: str, keys: list[str]) -> None:
        self.keys = keys
        shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
        super().__init__(f"{family}: checkpoint keys not in the key table (unused): {shown}")

    def __str__(self) -> str:
        return self.args[0]


class KeyTable:
    """An explicit, ordered key table. Each row maps official names matching ``pattern`` to ``template``
    (``re`` back-references \\1, \\2, ...). The first matching row wins; a key matching no row is unmapped."""

    def __init__(self, family: str, rows: Iterable[tuple[str, str]]) -> None:
        self.family = family
        self.rows = [(re.compile(pattern), template) for pattern, template in rows]

    def map_key(self, key: str) -> str | None:
        for pattern, template in self.rows:
            match = pattern.fullmatch(key)
            if match is not None:
                return match.expand(template)
        return None

    def apply(self, state_dict: Mapping[str, Tensor], strict: bool = True) -> tuple[dict[str, Tensor], list[str]]:
        """Rename every key. Returns (renamed, unmapped keys); ``strict`` raises on unmapped keys instead.
        Two official keys landing on one name (an old and a new alias in the same file) is an error."""
        out: dict[str, Tensor] = {}
        source: dict[str, str] = {}
        unmapped = []
        for key, value in state_dict.items():
            new = self.map_key(key)
            if new is None:
                unmapped.append(key)
                continue
            if new in out:
                raise ValueError(f"{self.family}: checkpoint keys {source[new]!r} and {key!r} both map to {new!r}")
            out[new] = value
            source[new] = key
        if unmapped and strict:
            raise UnmappedKeysError(self.family, unmapped)
        return out, unmapped
