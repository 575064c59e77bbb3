"""Scraped-article cleanup: drop page furniture lines before translation (opt-in, `clean: true`).

Pages scraped from news sites carry lines that are not part of the article: a weather widget
("- ℃ 11 تركيا"), date stamps ("- 10 يناير 2025", "- 16 أبريل 2024, 10:12:02 ص"), the headline
repeated by the page template, and UI notices ("- تم نسخ عنوان المقال إلى الحافظة").

The rules are deliberately conservative, so that the article body is never dropped:

* only WHOLE lines are dropped, never part of a line;
* only lines of at most `MAX_FURNITURE_CHARS` characters;
* a line is dropped only when all of it matches one furniture pattern (`fullmatch`): a date line
  is a date and nothing else, a weather line is a temperature plus at most `_MAX_WEATHER_WORDS`
  words (a place name), a clipboard line is one of the known notices;
* a duplicate is a line identical (after normalization) to the previous non-blank line.

Every dropped line is reported (`DroppedLine`: 1-based line number in the text as sent, the line,
the reason) so an editor can see what was removed. Line numbers count lines the way
`str.splitlines` does, which treats the same characters as line breaks as `normalize_text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import regex

from model_server.text.normalize import normalize_text

__all__ = ["MAX_FURNITURE_CHARS", "Cleaned", "DroppedLine", "clean_scraped", "furniture_reason"]

# Longest line that may be dropped: widgets, stamps, notices and headlines are short; body paragraphs
# are not. A longer line is always kept, whatever it looks like.
MAX_FURNITURE_CHARS = 200

# Reasons, as reported in `dropped[].reason` (part of the API: never rename one).
WEATHER, DATE, DUPLICATE, CLIPBOARD = "weather", "date", "duplicate_line", "clipboard_notice"

_DIGIT = r"[0-9\u0660-\u0669\u06F0-\u06F9]"
_NUMBER = rf"{_DIGIT}+"

# A list bullet or dash that scrapers put in front of widget lines ("- ", "• ", "* "). Possessive:
# bullets and spaces do not overlap, so there is nothing to give back (and nothing to retry).
_BULLET_RE = re.compile(r"\A(?:[-\u2013\u2014\u2022\u00b7*>|]++\s*+)++")

_GREGORIAN = ("يناير", "فبراير", "مارس", "أبريل", "ابريل", "إبريل", "مايو", "يونيو", "يونيه", "يوليو", "يوليه",
              "أغسطس", "اغسطس", "سبتمبر", "أكتوبر", "اكتوبر", "نوفمبر", "ديسمبر")
_LEVANTINE = ("كانون الثاني", "شباط", "آذار", "اذار", "نيسان", "أيار", "ايار", "حزيران", "تموز", "آب", "اب", "أيلول",
              "ايلول", "تشرين الأول", "تشرين الاول", "تشرين الثاني", "كانون الأول", "كانون الاول")
_HIJRI = ("محرم", "صفر", "ربيع الأول", "ربيع الاول", "ربيع الآخر", "ربيع الثاني", "جمادى الأولى", "جمادى الاولى",
          "جمادى الآخرة", "جمادى الاخرة", "رجب", "شعبان", "رمضان", "شوال", "ذو القعدة", "ذو الحجة")
_ENGLISH = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
            "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
_WEEKDAYS = ("الإثنين", "الاثنين", "الثلاثاء", "الأربعاء", "الاربعاء", "الخميس", "الجمعة", "السبت", "الأحد", "الاحد",
             "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))


# "أبريل" or "أبريل/نيسان" (both calendars, as Arabic news sites write them).
_MONTH = rf"(?:{_alternation(_GREGORIAN + _LEVANTINE + _HIJRI + _ENGLISH)})\.?"
_MONTHS = rf"{_MONTH}(?:\s*/\s*{_MONTH})?"
_YEAR_SUFFIX = r"(?:\s*(?:هـ|ه|م|AD|AH)\b\.?)?"
_DAY_MONTH_YEAR = rf"{_NUMBER}\s+{_MONTHS}(?:\s*,?\s*{_NUMBER}{_YEAR_SUFFIX})?"
_MONTH_DAY_YEAR = rf"{_MONTHS}\s+{_NUMBER}(?:\s*,\s*|\s+){_NUMBER}"        # "April 16, 2024"
_NUMERIC_DATE = rf"{_NUMBER}\s*[/.\-]\s*{_NUMBER}\s*[/.\-]\s*{_NUMBER}"   # 16/04/2024, 2024-04-16
_CLOCK = (rf"{_NUMBER}\s*[:٫]\s*{_NUMBER}(?:\s*[:٫]\s*{_NUMBER})?"
          r"(?:\s*(?:ص|م|صباحا|صباحاً|مساء|مساءً|am|pm|a\.m\.|p\.m\.))?"
          r"(?:\s*(?:gmt|utc|بتوقيت\s+\S+(?:\s+\S+)?)\s*(?:[+\-]\s*\d{1,2}(?::\d{2})?)?)?")
_DATE_LABEL = (r"(?:آخر\s+تحديث|اخر\s+تحديث|تاريخ\s+النشر|تاريخ\s+التحديث|نشر\s+في|نُشر\s+في|نشر\s+بتاريخ|"
               r"published(?:\s+on)?|updated(?:\s+on)?|last\s+updated)\s*:?\s*")
_DATE_LINE_RE = regex.compile(
    rf"(?:{_DATE_LABEL})?(?:(?:{_alternation(_WEEKDAYS)})\s*[،,]?\s*)?"
    rf"(?:(?:{_DAY_MONTH_YEAR}|{_MONTH_DAY_YEAR}|{_NUMERIC_DATE})(?:\s*[،,\-|]?\s*(?:-\s*)?{_CLOCK})?|{_CLOCK})",
    regex.IGNORECASE)

# A temperature written with a symbol, as widgets show it: "℃ 11", "11℃", "11 °C", "-3°" (prose such as
# "25 درجة مئوية" is not a widget and is never matched). The number of the second form is only tried
# where a digit run starts: otherwise a line of 200 digits costs one attempt per digit (quadratic).
_TEMPERATURE_RE = regex.compile(
    rf"(?:[℃℉]|°\s*[CFم]?)\s*[-+\u2212]?{_NUMBER}(?:[.,٫]{_NUMBER})?"
    rf"|[-+\u2212]?(?<!{_DIGIT}){_NUMBER}(?:[.,٫]{_NUMBER})?\s*(?:[℃℉]|°\s*[CFم]?)",
    regex.IGNORECASE)
_MAX_WEATHER_WORDS = 2   # what may stand next to the temperature: a place ("تركيا", "New York")

_CLIPBOARD_RE = regex.compile(
    r"(?:تم\s+)?(?:نسخ|النسخ)(?:\s+(?:عنوان\s+المقال|رابط\s+المقال|الرابط|العنوان|النص|المقال))?"
    r"(?:\s+(?:بنجاح))?(?:\s+(?:إلى|الى|في)\s+الحافظة)?(?:\s+بنجاح)?"
    r"|(?:the\s+)?(?:article\s+)?(?:link|url|title|text)?\s*(?:has\s+been\s+|was\s+|is\s+)?copied"
    r"(?:\s+to\s+(?:the\s+|your\s+)?clipboard)?(?:\s+successfully)?",
    regex.IGNORECASE)

# Trailing punctuation and spaces. Only tried where such a run starts (the look-behind), so a long run
# inside a line ("كلمة....كلمة") is one failed attempt, not one per character (quadratic).
_TRAILING_PUNCTUATION_RE = re.compile(r"(?<![\s.!،,:;؛…])[\s.!،,:;؛…]++$")


@dataclass(frozen=True)
class DroppedLine:
    line: int      # 1-based line number in the text as sent
    text: str      # the line as sent, without its line break
    reason: str    # weather | date | duplicate_line | clipboard_notice


@dataclass(frozen=True)
class Cleaned:
    text: str                          # the text without the dropped lines (line breaks of kept lines as sent)
    dropped: tuple[DroppedLine, ...]


def _core(line: str) -> str:
    """A line reduced to what the patterns look at: normalized, without bullets and trailing punctuation."""
    text = normalize_text(line)
    text = _BULLET_RE.sub("", text)
    return _TRAILING_PUNCTUATION_RE.sub("", text).strip()


def furniture_reason(line: str) -> str | None:
    """Why `line` (one line, on its own) is page furniture, or None when it may be content."""
    if len(line) > MAX_FURNITURE_CHARS:
        return None
    core = _core(line)
    if not core:
        return None
    if _DATE_LINE_RE.fullmatch(core):
        return DATE
    if _CLIPBOARD_RE.fullmatch(core) and regex.search(r"\p{L}", core):
        return CLIPBOARD
    temperature = _TEMPERATURE_RE.search(core)
    if temperature is not None:
        rest = (core[:temperature.start()] + " " + core[temperature.end():]).strip(" -|•·،,")
        if len(rest.split()) <= _MAX_WEATHER_WORDS and not regex.search(r"\d", rest):
            return WEATHER
    return None


def clean_scraped(text: str) -> Cleaned:
    """Drop furniture lines and the second of two identical consecutive lines; report what was dropped."""
    kept: list[str] = []
    dropped: list[DroppedLine] = []
    previous: str | None = None   # normalized content of the previous non-blank line
    for number, raw in enumerate(text.splitlines(keepends=True), start=1):
        content = raw.splitlines()[0] if raw.splitlines() else ""
        normalized = _core(content)
        if not normalized:
            kept.append(raw)
            continue
        reason = furniture_reason(content)
        if reason is None and normalized == previous and len(content) <= MAX_FURNITURE_CHARS:
            reason = DUPLICATE
        previous = normalized
        if reason is None:
            kept.append(raw)
        else:
            dropped.append(DroppedLine(line=number, text=content, reason=reason))
    return Cleaned(text="".join(kept), dropped=tuple(dropped))
