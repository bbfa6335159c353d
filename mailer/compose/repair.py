"""Undo mojibake: UTF-8 text that was decoded as Mac Roman or Windows-1252 / Latin-1."""

from __future__ import annotations

import bisect
import codecs
import contextlib
import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass

_MAC = "mac_roman"
_WIN = "cp1252"
_CODECS = (_WIN, _MAC)  # cp1252 first: a tie goes to the commoner damage


@dataclass(frozen=True)
class Repair:
    """What repair_mojibake changed: how many characters, undoing which wrong decoding."""

    count: int  # how many damaged sequences were fixed (one per restored character)
    encoding: str | None  # "mac_roman" or "cp1252" (the wrong decoding undone), None if count == 0


def _byte_map(codec: str) -> dict[str, int]:
    """Each non-ASCII character the wrong codec produces -> the byte it came from."""
    table: dict[str, int] = {}
    for byte in range(0x80, 0x100):
        with contextlib.suppress(UnicodeDecodeError):  # cp1252 leaves five bytes undefined
            table[bytes([byte]).decode(codec)] = byte
    if codec == _WIN:
        # Latin-1 damage shows 0x80-0x9F as C1 controls, and cp1252's five undefined bytes
        # come out of a lenient decoder as those controls or as surrogate escapes.
        for byte in range(0x80, 0xA0):
            table.setdefault(chr(byte), byte)
        for byte in (0x81, 0x8D, 0x8F, 0x90, 0x9D):
            table[chr(0xDC00 + byte)] = byte
    return table


def _char_class(table: dict[str, int], low: int, high: int) -> str:
    """A regex character class of the characters standing for bytes low..high."""
    return "[" + "".join(re.escape(c) for c, b in table.items() if low <= b <= high) + "]"


_TABLES = {codec: _byte_map(codec) for codec in (_MAC, _WIN)}
# A lead byte's character and the continuation characters after it. One class for all leads
# lets the regex engine skip to candidates fast (3x faster than an alternation by length);
# the length each lead needs is checked afterwards.
_SEQUENCES = {
    codec: re.compile(_char_class(table, 0xC2, 0xF4) + _char_class(table, 0x80, 0xBF) + "+")
    for codec, table in _TABLES.items()
}
_SIZES = {
    codec: {c: 2 if b < 0xE0 else 3 if b < 0xF0 else 4 for c, b in table.items() if b >= 0xC2}
    for codec, table in _TABLES.items()
}
_REPERTOIRE = {
    codec: re.compile(_char_class(table, 0x80, 0xFF)) for codec, table in _TABLES.items()
}


def _charmap_table(codec: str) -> str:
    """A codec's 256 characters in byte order, its undefined bytes read as C1 controls."""
    return "".join(bytes([b]).decode(codec, "ignore") or chr(b) for b in range(0x100))


# The wrong decodings as charmaps (decoding table, encoding map: what the stdlib's own
# single-byte codecs are built from) to undo at C speed a text damaged throughout: Mac Roman;
# Latin-1; cp1252 as browsers read it, its five undefined bytes shown as C1 controls.
_WHOLE = {
    codec: [(table, codecs.charmap_build(table)) for table in map(_charmap_table, readings)]
    for codec, readings in ((_MAC, [_MAC]), (_WIN, ["latin-1", _WIN]))
}

# How sure a sequence alone makes us that it is damage.
_AMBIGUOUS, _LIKELY, _CERTAIN = range(3)
# Characters correct text never holds: C1 controls, surrogates, Mac Roman's Apple logo (0xF0).
_NEVER_IN_TEXT = re.compile("[\x80-\x9f\ud800-\udfff\uf8ff]")
# Non-letters a damaged 3-byte sequence often stands for that are not punctuation or symbols:
# variation selectors and the keycap mark, both parts of emoji.
_EMOJI_PARTS = frozenset(chr(cp) for cp in (*range(0xFE00, 0xFE10), 0x20E3))
# Share of the codec's characters in a text that sequences must explain before the less than
# certain ones are trusted: damaged text is explained whole (less a few bytes a lenient decoder
# dropped), correct text leaves most of its accented letters and quotes unexplained.
_EXPLAINED = 0.8
_NON_ASCII = re.compile("[^\x00-\x7f]+")


def _sureness(raw: bytes, chars: str, decoded: str) -> int:
    """How sure this sequence alone makes us that it is damage rather than correct text."""
    if len(raw) == 4 or _NEVER_IN_TEXT.search(chars):
        return _CERTAIN
    if len(raw) == 3:
        # The punctuation, symbols and emoji parts that damage shows live under leads E2, E3
        # and EF (â ã ï, ‚ „ Ô), which correct text does not put before two continuation
        # characters. Other leads it can: French spacing puts a no-break space after a word's
        # last letter, so "café\u00a0»" reads as an ideograph, "voilà\u00a0»" as Samaritan.
        category = unicodedata.category(decoded)
        certain = raw[0] in (0xE2, 0xE3, 0xEF) and (
            category[0] in "PSZ" or category == "Cf" or decoded in _EMOJI_PARTS
        )
        return _CERTAIN if certain else _AMBIGUOUS
    # Up to Latin Extended-A the lead is one of ¬ √ ƒ ≈ or Â Ã Ä Å, rare before a continuation
    # character in correct text ("√π" in a formula, "AMANHÃ…"); beyond them the lead is a quote,
    # a dash or a capital ("l’été" would read as Armenian, "—écrit" as Cyrillic, "É»" as IPA).
    return _LIKELY if raw[0] <= 0xC5 else _AMBIGUOUS


@functools.lru_cache(maxsize=4096)
def _decode(codec: str, chars: str) -> tuple[str, int]:
    """One sequence's restored character ("" if it stands for none) and sureness."""
    # Cached: a document repeats the same few hundred sequences thousands of times.
    raw = bytes(_TABLES[codec][c] for c in chars)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:  # overlong, surrogate or beyond U+10FFFF
        return "", _AMBIGUOUS
    category = unicodedata.category(decoded)
    # No controls, surrogates or private use; nothing unassigned either, except in 4 bytes,
    # where emoji newer than this Python's Unicode tables live. Planes 4-13 hold nothing at
    # all: without that check "ÛÜâç" in a list of capitals passes for one 4-byte sequence.
    if category in ("Cc", "Cs", "Co") or (category == "Cn" and len(raw) < 4):
        return "", _AMBIGUOUS
    if "\U00040000" <= decoded < "\U000e0000":
        return "", _AMBIGUOUS
    return decoded, _sureness(raw, chars, decoded)


def _undo_whole(text: str, codec: str) -> tuple[str, str] | None:
    """The whole text decoded back, and the charmap that did it, if all of it is valid UTF-8."""
    for table, encoding_map in _WHOLE[codec]:
        with contextlib.suppress(UnicodeError):
            return codecs.charmap_encode(text, "strict", encoding_map)[0].decode("utf-8"), table
    return None


def _repair_whole(text: str, codec: str) -> tuple[str, int] | None:
    """The text restored in one go if `codec` damaged all of it, else None."""
    # A shortcut giving what _find would: UTF-8 decodes each sequence on its own, so when every
    # odd character belongs to a valid sequence the whole text decodes, and each sequence
    # found is restored. It saves a Python step per sequence when a Chinese or Russian text
    # is damaged throughout (10,000 sequences in 50 KB).
    undone = _undo_whole(text, codec)
    if not undone:
        return None
    restored, table = undone
    vouched = False
    for char in set("".join(_NON_ASCII.findall(restored))):
        damaged = codecs.charmap_decode(char.encode("utf-8"), "strict", table)[0]
        decoded, sure = _decode(codec, damaged)
        if not decoded:
            return None  # a sequence _find would skip: let it weigh the rest
        vouched = vouched or sure > _AMBIGUOUS
    # As in _judge: ambiguous sequences alone need two that touch to be believed.
    if not vouched and not re.search("[^\x00-\x7f]{2}", restored):
        return None
    return restored, len(restored) - len(restored.encode("ascii", "ignore"))


# A found sequence: start, end, restored character, sureness.
_Found = tuple[int, int, str, int]


def _find(text: str, codec: str) -> list[tuple[int, int, str]]:
    """The sequences damaged by `codec` in this text: (start, end, restored character)."""
    sizes = _SIZES[codec]
    found: list[_Found] = []
    for match in _SEQUENCES[codec].finditer(text):
        start = match.start()
        end = start + sizes[text[start]]
        if end > match.end():
            continue  # too few continuation bytes
        # Continuation characters beyond the lead's count are strays: they stay as they are.
        decoded, sure = _decode(codec, text[start:end])
        if decoded:
            found.append((start, end, decoded, sure))
    repertoire = _REPERTOIRE[codec]
    kept = _judge(found, len(repertoire.findall(text)))
    if kept is not None:
        return kept
    # Most of this text's odd characters are not damage: it is correct text, perhaps with a
    # pasted damaged passage. Certain damage is undone anywhere; the rest only on lines that
    # are explained on their own and show at least two sequences, as a pasted line does and
    # a stray "√π" in a formula or "IRMÃ”" in a heading does not.
    newlines = [m.start() for m in re.finditer("\n", text)]
    kept = []
    for n, line in itertools.groupby(found, key=lambda f: bisect.bisect(newlines, f[0])):
        on_line = list(line)
        judged = None
        if len(on_line) > 1:
            start = newlines[n - 1] + 1 if n else 0
            end = newlines[n] if n < len(newlines) else len(text)
            judged = _judge(on_line, len(repertoire.findall(text, start, end)))
        kept += judged if judged is not None else [f[:3] for f in on_line if f[3] == _CERTAIN]
    return kept


def _judge(found: list[_Found], repertoire: int) -> list[tuple[int, int, str]] | None:
    """Which of a stretch's sequences to restore; None if they explain too few of its odd chars."""
    if all(sure == _CERTAIN for *_, sure in found):
        return [(start, end, decoded) for start, end, decoded, _ in found]
    covered = sum(end - start for start, end, *_ in found)
    if covered < _EXPLAINED * repertoire:
        return None
    # Ambiguous sequences are trusted once the text shows clearer damage, or two sequences
    # touch (a damaged Cyrillic or Chinese word), never for a lone coincidence like the
    # quote and letter of "l’été", the dash and letter of "—écrit".
    trust = any(sure > _AMBIGUOUS for *_, sure in found) or any(
        found[i][1] == found[i + 1][0] for i in range(len(found) - 1)
    )
    return [(start, end, decoded) for start, end, decoded, _ in found] if trust else []


def _repair_parts(text: str, codec: str) -> tuple[str, int]:
    """The text with the sequences _find keeps restored, and how many there were."""
    spans = _find(text, codec)
    parts: list[str] = []
    last = 0
    for start, end, decoded in spans:
        parts += (text[last:start], decoded)
        last = end
    parts.append(text[last:])
    return "".join(parts), len(spans)


def repair_mojibake(text: str) -> tuple[str, Repair]:
    """Undo UTF-8-read-as-Mac-Roman/Windows-1252 damage; text that is already right comes back unchanged."""  # noqa: E501
    if text.isascii():
        return text, Repair(0, None)
    # A document is damaged one way. A wrong decoding that explains all of it settles which;
    # otherwise undo the one that explains more sequences.
    readings = [(c, r) for c in _CODECS if (r := _repair_whole(text, c))]
    if not readings:
        readings = [(c, _repair_parts(text, c)) for c in _CODECS]
    codec, (restored, count) = max(readings, key=lambda reading: reading[1][1])
    if not count:
        return text, Repair(0, None)
    return restored, Repair(count, codec)
