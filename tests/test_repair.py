"""repair_mojibake: damaged text comes back as the author wrote it, correct text untouched."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from conftest import CORPUS, FIXTURES, SEED_FIXTURE

from mailer.compose.repair import Repair, _repair_parts, _repair_whole, repair_mojibake

SEED = SEED_FIXTURE

# Everything the newsletters hold: accents, CJK, right-to-left, Cyrillic, Greek, emoji with
# skin tones, joiners, flags and keycaps, typographic punctuation and spaces.
SAMPLE = (
    "Café naïve — “quotes” ‘single’ … • © 2024 ½ € 10 °C ±1\n"
    "Ação, não, você, São Paulo, SÃO. Grüße aus der Straße, Ärger. ¿Qué tal? ¡Olé! Año\n"
    "l’été à Paris «\u00a0Ça va\u00a0?\u00a0» Zażółć gęślą jaźń. Příliš žluťoučký kůň. și ţară\n"
    "中文，日本語のテキスト。한국어 العربية עברית Привет, мир! Ελληνικά Tiếng Việt\n"
    "👋 👋🏽 👨\u200d👩\u200d👧 ❤️ 1️⃣ 🇧🇷 🫨 hair\u200aspace zero\u200bwidth\n"
)


def _as_c1(error: UnicodeError) -> tuple[str, int]:
    """Decode cp1252's undefined bytes as Latin-1 does (and browsers do): C1 controls."""
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("test-repair-c1", _as_c1)


def _non_ascii(text: str) -> int:
    return sum(1 for c in text if not c.isascii())


def _newsletter(language: str) -> str:
    return next(p for p in CORPUS if p.stem.endswith(f"-{language}")).read_text(encoding="utf-8")


def test_seed_is_restored_to_the_authors_text() -> None:
    seed = SEED.read_text(encoding="utf-8")

    fixed, result = repair_mojibake(seed)

    assert fixed == seed.encode("mac_roman").decode("utf-8")
    assert result.count > 0
    assert result.encoding == "mac_roman"
    for damage in ("‚Ä", "üë", "Ã©", "\uf8ff"):
        assert damage not in fixed


def test_seed_count_is_one_per_restored_character() -> None:
    seed = SEED.read_text(encoding="utf-8")

    _, result = repair_mojibake(seed)

    assert result.count == _non_ascii(seed.encode("mac_roman").decode("utf-8"))


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 4, f"expected the real newsletters in {FIXTURES / 'corpus'}"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_correct_newsletters_come_back_unchanged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")

    assert repair_mojibake(text) == (text, Repair(0, None))


@pytest.mark.parametrize(
    ("codec", "errors", "encoding"),
    [
        ("cp1252", "test-repair-c1", "cp1252"),
        ("cp1252", "surrogateescape", "cp1252"),
        ("latin-1", "strict", "cp1252"),
        ("mac_roman", "strict", "mac_roman"),
    ],
)
def test_damage_is_undone_exactly(codec: str, errors: str, encoding: str) -> None:
    damaged = SAMPLE.encode("utf-8").decode(codec, errors=errors)
    assert damaged != SAMPLE

    assert repair_mojibake(damaged) == (SAMPLE, Repair(_non_ascii(SAMPLE), encoding))


DAMAGE = [("cp1252", "cp1252"), ("latin-1", "cp1252"), ("mac_roman", "mac_roman")]


@pytest.mark.parametrize(("codec", "encoding"), DAMAGE)
@pytest.mark.parametrize("language", ["zh", "pt-br"])
def test_damaged_newsletter_is_undone_exactly(codec: str, encoding: str, language: str) -> None:
    good = _newsletter(language)
    damaged = good.encode("utf-8").decode(codec, errors="test-repair-c1")

    assert repair_mojibake(damaged) == (good, Repair(_non_ascii(good), encoding))


@pytest.mark.parametrize(("codec", "encoding"), DAMAGE)
def test_whole_text_shortcut_agrees_with_sequence_by_sequence(codec: str, encoding: str) -> None:
    for good in (SAMPLE, _newsletter("zh")):
        damaged = good.encode("utf-8").decode(codec, errors="test-repair-c1")

        whole = _repair_whole(damaged, encoding)

        assert whole is not None
        assert whole == _repair_parts(damaged, encoding) == (good, _non_ascii(good))


@pytest.mark.parametrize(
    "text",
    [
        "ação, não, você, São Paulo, SÃO",
        "AÇÃO, IRMÃ, MAÇÃ”",
        "Grüße, Straße, Ärger",
        "ÁÉÍÓÖÚÜáéíóöúüŐőŰű",
        "„Öl“ und ‚Äpfel‘, Gruß“",
        "Ça va ? « Oui », l’été, d’École, à l’Élysée… —écrit",
        "«\u00a0Ça va\u00a0» café\u00a0» thé\u00a0– voilà\u00a0»",
        "…était",
        "CAFÉ’S É» Ü” Ñ» ß“",
        "¿Qué? ¡Olé! Año, niño, Nº 5",
        "中文，日本語のテキスト、ひらがな",
        "العربية لغة جميلة",
        "👋🏽 👨\u200d👩\u200d👧 ❤️ 1️⃣ 🇧🇷",
        "“quotes” — dashes – ‘single’ … •",
        "© 2024",
        "naïve, Hanoï\u00a0»",
        "Ã",
        "Ã\nÃ\n",
        "√π ≈ 3.14, ¬p, ƒ(x)",
        "Привет, мир! Ελληνικά",
        "Zażółć gęślą jaźń. Příliš žluťoučký kůň.",
        "Tiếng Việt có dấu",
        "e\u0301 NFD",
        SAMPLE,
    ],
)
def test_correct_text_comes_back_unchanged(text: str) -> None:
    assert repair_mojibake(text) == (text, Repair(0, None))


def test_ascii_comes_back_unchanged() -> None:
    assert repair_mojibake("plain ASCII\n") == ("plain ASCII\n", Repair(0, None))


@pytest.mark.parametrize(
    ("damaged", "fixed", "encoding"),
    [
        ("The caf\u00c3\u00a9 opens at nine.", "The café opens at nine.", "cp1252"),
        ("Wait \u00e2\u0080\u0094 what?", "Wait — what?", "cp1252"),
        ("Hello \uf8ff\u00fc\u00eb\u00e3 there", "Hello 👋 there", "mac_roman"),
        ("Wait \u201a\u00c4\u00ee what?", "Wait — what?", "mac_roman"),
    ],
)
def test_one_damaged_sequence_in_ascii_text(damaged: str, fixed: str, encoding: str) -> None:
    assert repair_mojibake(damaged) == (fixed, Repair(1, encoding))


def test_each_sequence_stands_alone() -> None:
    # A lead with no continuation after it and a stray continuation stop no neighbour.
    damaged = "CafÃ© â€” rÃ©sumÃ©, naÃ¯ve, Ã alone, Ã©© twice"

    assert repair_mojibake(damaged) == (
        "Café — résumé, naïve, Ã alone, é© twice",
        Repair(6, "cp1252"),
    )


def test_pasted_damaged_line_in_correct_text_is_repaired_alone() -> None:
    good = _newsletter("pt-br")
    line = "Inferência Causal em Ação — veja também\n"
    damaged_line = line.encode("utf-8").decode("cp1252")

    assert repair_mojibake(good + damaged_line) == (good + line, Repair(_non_ascii(line), "cp1252"))


def test_document_is_repaired_one_way() -> None:
    # Mac Roman explains four sequences, cp1252 one: only Mac Roman's damage is undone.
    damaged = "caf√© na√Øve r√©sum√©\nand â€” so on\n"

    assert repair_mojibake(damaged) == (
        "café naïve résumé\nand â€” so on\n",
        Repair(4, "mac_roman"),
    )
