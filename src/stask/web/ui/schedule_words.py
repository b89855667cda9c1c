"""A schedule in words in the reader's language. Core's ``describe`` stays English for the CLI
and API; here the template phrases the schedule's fields (``macros.schedule_words``, so its
strings live in the catalogues) and cron-descriptor describes cron expressions in the language."""

from __future__ import annotations

import calendar
import functools
import re
from typing import Any

from babel.dates import get_month_names
from babel.lists import format_list
from cron_descriptor import ExpressionDescriptor, Options

from stask.core.schedule_fields import DAY_WORDS
from stask.core.schedules import Cron, Once, Periodic, Regular, Schedule
from stask.web.ui.i18n import DEFAULT, translations

CRON_LOCALES = {"en": "en_US", "uk": "uk_UA", "ru": "ru_RU"}
# Weekdays as the object of "on", "through" or "every": the accusative in Ukrainian and Russian
# (cron-descriptor names days in English whatever its locale).
DAY_CONTEXT = "weekday, as in: on Monday"


def day_names(language: str) -> tuple[str, ...]:
    catalogue = translations(language)
    return tuple(catalogue.pgettext(DAY_CONTEXT, day) for day in DAY_WORDS)


@functools.cache
def _english_names(language: str) -> tuple[re.Pattern[str], dict[str, str]]:
    """A pattern of the day and month names cron-descriptor writes (the process's C locale),
    and each one's name in ``language``."""
    local: dict[str, str] = dict(zip(calendar.day_name, day_names(language), strict=True))
    months = get_month_names("wide", "stand-alone", language)
    local.update({calendar.month_name[m]: months[m] for m in range(1, 13)})
    pattern = re.compile(r"\b(" + "|".join(sorted(local, key=len, reverse=True)) + r")\b")
    return pattern, local


def cron_words(schedule: Cron, language: str) -> str:
    options = Options()
    options.locale_code = CRON_LOCALES.get(language, CRON_LOCALES[DEFAULT])
    options.use_24hour_time_format = True
    try:
        text = str(ExpressionDescriptor(schedule.standard, options).get_description())
    except Exception:  # a dialect cron-descriptor lacks must not break the page
        return schedule.expression
    if language == DEFAULT:
        return text
    pattern, local = _english_names(language)
    return pattern.sub(lambda found: local[found[0]], text)


def schedule_parts(schedule: Schedule, language: str) -> dict[str, Any]:
    """What ``macros.schedule_words`` phrases: the type, its fields as text, the zone."""
    parts: dict[str, Any] = {
        "type": schedule.type,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
    }
    if isinstance(schedule, Once):
        parts["at"] = f"{schedule.at:%Y-%m-%d %H:%M}"
    elif isinstance(schedule, Periodic):
        names = day_names(language)
        parts.update(
            frequency=schedule.frequency,
            minute=schedule.minute,
            time=f"{schedule.time:%H:%M}",
            days=format_list([names[day] for day in schedule.days], locale=language)
            if schedule.days
            else "",
        )
    elif isinstance(schedule, Regular):
        parts.update(
            start=f"{schedule.start_time:%H:%M}",
            end=f"{schedule.end_time:%H:%M}",
            interval=schedule.interval,
            overnight=schedule.end_time < schedule.start_time,
        )
    elif isinstance(schedule, Cron):
        parts["cron"] = cron_words(schedule, language)
    return parts
