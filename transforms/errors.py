"""The project's own error type for input that cannot be read."""

from __future__ import annotations


class InputFormatError(ValueError):
    """Bad input: names the file, the byte offset or line, and the reason; `length` bytes and
    `records` records (a line of a text format: one) are affected."""

    def __init__(self, source: str, position: str, reason: str, length: int = 0, records: int = 0) -> None:
        super().__init__(f"{source}: {position}: {reason}")
        self.source = source
        self.position = position
        self.reason = reason
        self.length = length
        self.records = records

    def __reduce__(self) -> tuple[type[InputFormatError], tuple[str, str, str, int, int]]:
        # Pickled across processes (Dask workers) with every field, not only the message.
        return (InputFormatError, (self.source, self.position, self.reason, self.length, self.records))
