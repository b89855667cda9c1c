"""Message catalogues (en, uk, ru) read from the ``.po`` sources at first use, and the choice of
language: the switch's cookie, else the browser's Accept-Language, else English."""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from starlette.requests import Request

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LANGUAGES = {"en": "English", "uk": "Українська", "ru": "Русский"}
DEFAULT = "en"
LANGUAGE_COOKIE = "stask_lang"


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of ``language``, compiled in memory from its ``.po`` (no build step)."""
    if language == DEFAULT:
        return gettext.NullTranslations()
    source = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    with source.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _accepted(header: str) -> list[str]:
    """The languages of an Accept-Language header, most wanted first."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag:
            ranked.append((-quality, index, tag.split("-")[0].lower()))
    return [tag for quality, _, tag in sorted(ranked) if quality < 0]


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    for tag in _accepted(request.headers.get("accept-language", "")):
        if tag in LANGUAGES:
            return tag
    return DEFAULT
