"""Reading UTF-8 text files so that a bad byte is reported as one line naming the file and the line."""

from __future__ import annotations

import codecs

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


def split_lines(text: str) -> list[str]:
    """The one line-splitting rule of the package: "\\n", "\\r\\n" and a lone "\\r" end a line, nothing else does.

    U+2028, U+0085, form feeds and the other characters `str.splitlines` also breaks at are text (JSON allows them
    raw inside strings). A final line break ends the last line; it does not start an empty one.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str) -> list[str]:
    """All lines of a UTF-8 file (a leading BOM dropped), split by `split_lines`."""
    return split_lines(read_text(path))


def is_blank(line: str) -> bool:
    """A line that holds no text (empty or only whitespace): corpus files skip it, in counting and streaming alike."""
    return not line.strip()


def count_lines(path: str) -> int:
    """Non-blank lines as `split_lines` cuts them, i.e. the rows the corpus stream yields from a text file.

    Decodes while counting, so a file that would break the stream halfway through is refused before training.
    Linear in the file size whatever its line lengths: the unfinished line at a chunk's end is carried as one flag
    (has it any text yet?), never re-joined with the next chunk.
    """
    decoder = codecs.getincrementaldecoder(TEXT_ENCODING)()
    lines = 0
    breaks_before_chunk = 0  # universal-newline line breaks in the text decoded so far
    open_line_has_text = False
    previous_ended_with_cr = False
    with fsspec.open(path, "rb", compression="infer") as handle:
        while True:
            chunk = handle.read(CHUNK_CHARS)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                head = error.object[: error.start]
                crlf_across = previous_ended_with_cr and head.startswith(b"\n")
                raise undecodable_line_error(path, error.object, error, 1 + breaks_before_chunk - crlf_across) from None
            if text:
                breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
                breaks_before_chunk += breaks - (previous_ended_with_cr and text[0] == "\n")
                previous_ended_with_cr = text[-1] == "\r"
                # "\r\n" read as two breaks around an empty line: empty lines are not counted, so this is exact.
                pieces = text.replace("\r", "\n").split("\n")
                if len(pieces) == 1:
                    open_line_has_text = open_line_has_text or not is_blank(pieces[0])
                else:
                    lines += open_line_has_text or not is_blank(pieces[0])
                    lines += sum(map(bool, map(str.strip, pieces[1:-1])))
                    open_line_has_text = not is_blank(pieces[-1])
            if not chunk:
                break
    return lines + open_line_has_text
