"""Reading UTF-8 text files so that a bad byte is reported as one line naming the file and the line."""

from __future__ import annotations

import fsspec

CHUNK_CHARS = 8 << 20


# A byte-order mark starts a "UTF-8 with BOM" file (Windows editors): it is not part of the first line's text.
TEXT_ENCODING = "utf-8-sig"


def undecodable_line_error(path: str, raw: bytes, error: UnicodeDecodeError, first_line: int = 1) -> ValueError:
    head = raw[: error.start]
    # Line breaks as universal newlines count them: \n, \r\n and a lone \r (old Mac files).
    line = first_line + head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n")
    return ValueError(f"{path}:{line}: not valid UTF-8 ({error.reason} at byte {error.start}); expected UTF-8 text")


def read_text(path: str) -> str:
    """A whole (local or fsspec, possibly compressed) UTF-8 file."""
    with fsspec.open(path, "rb", compression="infer") as handle:
        raw = handle.read()
    try:
        return raw.decode(TEXT_ENCODING)
    except UnicodeDecodeError as error:
        raise undecodable_line_error(path, raw, error) from None


def read_lines(path: str) -> list[str]:
    """All lines of a UTF-8 file, newlines stripped, universal newlines like `open()`."""
    text = read_text(path)
    return text.replace("\r\n", "\n").replace("\r", "\n").splitlines() if "\r" in text else text.split("\n")


def count_lines(path: str) -> int:
    """Lines as the `datasets` "text" builder yields them (universal newlines, a last line without "\\n" counts).

    Decodes while counting, so a file that would break the stream halfway through is refused before training.
    """
    lines = 0
    line_before_chunk = 1
    last_char = "\n"
    with fsspec.open(path, "rb", compression="infer") as handle:
        pending = b""
        while chunk := handle.read(CHUNK_CHARS):
            raw = pending + chunk
            # Cut after the last "\n" so neither a multi-byte character nor a "\r\n" is split across chunks.
            cut = raw.rfind(b"\n") + 1
            raw, pending = raw[:cut], raw[cut:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise undecodable_line_error(path, raw, error, line_before_chunk) from None
            newlines = text.count("\n") + text.count("\r") - text.count("\r\n")
            lines += newlines
            line_before_chunk += newlines
            if text:
                last_char = text[-1]
        if pending:
            try:
                text = pending.decode("utf-8")
            except UnicodeDecodeError as error:
                raise undecodable_line_error(path, pending, error, line_before_chunk) from None
            lines += text.count("\n") + text.count("\r") - text.count("\r\n")
            last_char = text[-1]
    return lines + (last_char not in "\r\n")
