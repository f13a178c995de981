"""Reading an SMS answer to a human-in-the-loop request, and telling the recipient how to write one.

After the reply code (``hitl/codes.py``), the answer is:

- options: an option's number as listed in the SMS (``1``) or its name in any case (``approve``); when
  the request allows several (``multiple=True``), several separated by commas (``1,3`` or ``red, blue``);
- with ``params`` (``HITLEntryOperator``, or any HITL operator given ``params``): the option first (left
  out when the request has only one, as ``HITLEntryOperator``'s ``OK``), then ``;`` or a new line, then
  the fields as ``name=value`` separated by ``;`` or new lines. A request with exactly one field takes the
  whole text after the option as its value (``K7QX ship it by Friday``). A field left out takes its
  default; values are converted to the field's JSON-schema type (integer, number, boolean, array as
  ``a,b``, object as JSON).

A reply Airflow would refuse is refused here first, with a message saying what to send instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SEGMENTS = re.compile(r"\s*(?:;|\r?\n)\s*")
_COMMAS = re.compile(r"\s*,\s*")
_TRUE, _FALSE = {"true", "yes", "y", "1", "on"}, {"false", "no", "n", "0", "off"}


class AnswerError(ValueError):
    """A reply that cannot be read as an answer; its message is texted back to the sender."""


@dataclass(frozen=True)
class Answer:
    """What Airflow's ``PATCH .../hitlDetails`` takes: ``chosen_options`` and ``params_input``."""

    chosen_options: list[str]
    params_input: dict[str, Any] = field(default_factory=dict)


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def parse_options(text: str, options: Sequence[str], multiple: bool) -> list[str]:
    """``"1,3"`` / ``"approve"`` -> the options they name, in the request's spelling."""
    text = text.strip()
    if not text:
        raise AnswerError(f"Please add your choice: {option_list(options)}.")
    by_name = {_fold(o): o for o in options}
    if _fold(text) in by_name:  # an option whose name has a comma in it
        return [by_name[_fold(text)]]
    chosen: list[str] = []
    for item in (i for i in _COMMAS.split(text) if i):
        if item.isdigit() and 1 <= int(item) <= len(options):
            option = options[int(item) - 1]
        elif _fold(item) in by_name:
            option = by_name[_fold(item)]
        else:
            raise AnswerError(f'"{item[:30]}" is not one of the choices: {option_list(options)}.')
        if option not in chosen:
            chosen.append(option)
    if len(chosen) > 1 and not multiple:
        raise AnswerError(f"Please choose only one of: {option_list(options)}.")
    return chosen


def _schema_type(spec: Mapping[str, Any]) -> str:
    kind = (spec.get("schema") or {}).get("type")
    if isinstance(kind, list):  # ["null", "integer"]
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else "string"


def _convert(name: str, value: str, spec: Mapping[str, Any]) -> Any:
    kind = _schema_type(spec)
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        if kind == "boolean":
            word = value.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise ValueError(value)
        if kind == "array":
            return [v for v in _COMMAS.split(value) if v]
        if kind == "object":
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError(value)
            return parsed
    except ValueError:
        wanted = {"integer": "a whole number", "number": "a number", "boolean": "yes or no",
                  "object": "a JSON object"}[kind]
        raise AnswerError(f"{name} must be {wanted}.") from None
    return value


def parse_fields(segments: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``["amount=5", "reason=late"]`` -> ``params_input`` with every field of ``params`` (defaults for the
    ones left out); one field takes the whole text as its value.
    """
    names = {_fold(n): n for n in params}
    given: dict[str, str] = {}
    if len(params) == 1 and segments:
        (only,) = params
        text = "; ".join(segments)
        head, eq, rest = text.partition("=")
        given[only] = rest.strip() if eq and _fold(head) == _fold(only) else text
    else:
        for segment in segments:
            head, eq, rest = segment.partition("=")
            if not eq or _fold(head) not in names:
                raise AnswerError(f"Write each field as name=value, separated by ';'. Fields: "
                                  f"{', '.join(params)}.")
            given[names[_fold(head)]] = rest.strip()
    values: dict[str, Any] = {}
    for name, spec in params.items():
        if name in given:
            values[name] = _convert(name, given[name], spec)
        elif spec.get("value") is not None:
            values[name] = spec["value"]
        else:
            raise AnswerError(f"Please give {name} (name=value).")
    return values


def parse_answer(text: str, *, options: Sequence[str], multiple: bool,
                 params: Mapping[str, Mapping[str, Any]] | None) -> Answer:
    """The answer a reply's text (after the code) gives to a request; see the module docstring."""
    if not params:
        return Answer(parse_options(text, options, multiple))
    segments = [s for s in _SEGMENTS.split(text.strip()) if s]
    if len(options) == 1:
        return Answer([options[0]], parse_fields(segments, params))
    if not segments:
        raise AnswerError(f"Please add your choice: {option_list(options)}.")
    return Answer(parse_options(segments[0], options, multiple), parse_fields(segments[1:], params))


def option_list(options: Sequence[str]) -> str:
    return ", ".join(f"{i} {o}" for i, o in enumerate(options, 1))


def how_to_answer(code: str, options: Sequence[str], multiple: bool,
                  params: Mapping[str, Any] | None) -> str:
    """The instructions an SMS carries: ``Reply "K7QX 1" for Approve, "K7QX 2" for Reject.``."""
    if params:
        fields = "; ".join(f"{name}=..." for name in params) if len(params) > 1 else "your text"
        if len(options) == 1:
            return f'Reply "{code} {fields}".'
        return f'Reply "{code} <choice>; {fields}". Choices: {option_list(options)}.'
    if multiple:
        return f'Reply "{code}" and your choices, e.g. "{code} 1,2". Choices: {option_list(options)}.'
    return "Reply " + ", ".join(f'"{code} {i}" for {o}' for i, o in enumerate(options, 1)) + "."
