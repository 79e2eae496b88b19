"""Validation of player beacons: the body of `POST /analytics/log`, pure and without I/O.

The format is the Livepeer player's (`@livepeer/core` `metrics-new.ts`), posted unchanged,
plus the optional extensions of research/metrics.md section 5. `schema/beacon.schema.json`
describes the same format as a JSON Schema (draft 2020-12) for other tools; this module checks
it by hand, with a fast path: `validate_envelope` first converts the document to msgspec types
built from the same field table (~6 µs for 20 heartbeats, against ~28 µs by hand). Those types
accept only what the hand-written rules accept, and anything they refuse goes through the rules
by hand, which alone word the problems; so the fast path changes the speed, never the answer.
`parse_beacon` goes one step further for the common body: msgspec decodes the bytes straight into
the same types, with unknown fields refused (~13 µs for 20 heartbeats, against ~20 µs for
orjson then the fast path); such a body holds only values the rules accept (bounded numbers,
strings of valid UTF-8), so its events' JSON text is kept as sent and spliced into the Kafka
record instead of decoding and encoding them again. Any other body takes the way above.

A partly bad envelope is handled at two levels:

* Problems with the envelope itself reject the whole envelope: the body is not a JSON object, an
  envelope field is missing or has the wrong type, `events` is missing, not an array, empty or
  longer than `max_events`. `InvalidBeacon` then lists every problem found, including those of
  the events when `events` itself is usable.
* Problems inside an event reject only that event (a `RejectedEvent` listing all its problems);
  the valid events are accepted. When no event is valid, `InvalidBeacon` lists the problems.

Every problem names the field path and the reason, e.g. `events[3].timestamp: must be a number`.

Rules beyond plain JSON types:

* Numbers are JSON numbers: booleans, strings and null are not numbers (null is allowed only
  where stated), NaN and infinities are refused, and magnitudes are capped at `MAX_SAFE_NUMBER`
  (JavaScript's `Number.MAX_SAFE_INTEGER`, the largest integer a player can send exactly; this
  also keeps every value inside int64 downstream).
* Timestamps, heartbeat counters, durations and sizes must not be negative; `offset_ms` (live head
  minus the server clock) and `seek.payload` may be.
* Heartbeat counters are deltas since the previous heartbeat. The player always sends all nine;
  an absent one is accepted and means 0, but null is refused.
* `session_id`, `playback_id`, an event's `id` and `type` must not be empty.
* String lengths are capped by the `MAX_*_CHARS` constants (in code points).
* Unknown event types are kept (they still need `id`, `type`, `timestamp`); unknown fields, in the
  envelope or in an event, are kept unchanged and not checked.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec
import orjson

# Ids become Kafka and Redis keys; the player's are 22-character nanoids.
MAX_ID_CHARS: Final = 256
# URLs and page-URL parts; signed playback URLs carry a JWT in the query string.
MAX_URL_CHARS: Final = 8192
# Short free text: protocol (MIME type), player, version, user_agent, categories, enum-like values.
MAX_TEXT_CHARS: Final = 2048
# Error and warning messages; the player may put a server's response body in them.
MAX_MESSAGE_CHARS: Final = 8192
# JavaScript's Number.MAX_SAFE_INTEGER: the bound of every number a player sends.
MAX_SAFE_NUMBER: Final = 2**53 - 1
# An `InvalidBeacon` lists at most this many problems, then says how many it left out.
MAX_REPORTED_PROBLEMS: Final = 100

HEARTBEAT_COUNTERS: Final = (
    "errors",
    "warnings",
    "stalled_count",
    "waiting_count",
    "time_playing_ms",
    "time_stalled_ms",
    "time_waiting_ms",
    "time_errored_ms",
    "time_warning_ms",
)

RejectReason = Literal["invalid_utf8", "malformed_json", "invalid_envelope", "no_valid_events"]


class InvalidBeacon(Exception):
    """The whole body is refused; `problems` says why, `reason` is a bounded label for metrics."""

    def __init__(self, problems: tuple[str, ...], *, reason: RejectReason) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.reason: RejectReason = reason


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    index: int
    problems: tuple[str, ...]


class Envelope:
    """An accepted envelope: its fields as sent (minus `events`), its valid events, the rejected.

    The events are held either as the objects sent (`validate_envelope`) or as their JSON text
    exactly as sent (`parse_beacon`'s strict path); `events` and `events_json` give either form,
    converting (once) only when asked, and `count` is their number.
    """

    __slots__ = ("_events", "_events_json", "count", "fields", "rejected")

    def __init__(
        self,
        fields: dict[str, Any],
        events: tuple[dict[str, Any], ...] | None = None,
        rejected: tuple[RejectedEvent, ...] = (),
        *,
        events_json: bytes | None = None,
        count: int | None = None,
    ) -> None:
        if (events is None) == (events_json is None):
            raise TypeError("Envelope takes either events or events_json")
        self.fields = fields
        self.rejected = rejected
        self._events = events
        self._events_json = events_json
        if events is not None:
            count = len(events)
        self.count = count if count is not None else len(self.events)

    @property
    def events(self) -> tuple[dict[str, Any], ...]:
        if self._events is None:
            self._events = tuple(orjson.loads(self._events_json or b"[]"))
        return self._events

    @property
    def events_json(self) -> bytes:
        """The events as a JSON array: the text sent, when the envelope came that way."""
        if self._events_json is None:
            self._events_json = orjson.dumps(self._events)
        return self._events_json

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return (self.fields, self.rejected, self.events) == (
            other.fields,
            other.rejected,
            other.events,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Envelope(fields={self.fields!r}, count={self.count}, rejected={self.rejected!r})"


def decode_body(body: bytes) -> Any:
    """Decode strict UTF-8 JSON (no BOM, no NaN); raises InvalidBeacon naming the problem."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body:
            raise InvalidBeacon(("body: empty",), reason="malformed_json") from exc
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as utf8_exc:
            problem = f"body: invalid UTF-8 at byte {utf8_exc.start}"
            raise InvalidBeacon((problem,), reason="invalid_utf8") from utf8_exc
        problem = f"body: malformed JSON (line {exc.lineno} column {exc.colno})"
        raise InvalidBeacon((problem,), reason="malformed_json") from exc


def parse_beacon(body: bytes, *, max_events: int) -> Envelope:
    """Decode and check a body; returns the envelope with its valid events, or raises InvalidBeacon."""
    envelope = _parse_strict(body, max_events)
    if envelope is not None:
        return envelope
    return validate_envelope(decode_body(body), max_events=max_events)


def validate_envelope(doc: Any, *, max_events: int) -> Envelope:
    """Check a decoded body; returns the envelope with its valid events, or raises InvalidBeacon.

    `doc` is not modified; the returned fields and events are the objects that were sent.
    """
    if _all_valid(doc, max_events):
        fields = {key: value for key, value in doc.items() if key != "events"}
        return Envelope(fields=fields, events=tuple(doc["events"]), rejected=())
    return _validate_by_hand(doc, max_events=max_events)


def _validate_by_hand(doc: Any, *, max_events: int) -> Envelope:
    if type(doc) is not dict:
        raise InvalidBeacon(("body: must be a JSON object",), reason="invalid_envelope")
    problems = _problems(doc, _ENVELOPE)
    events = doc.get("events", _MISSING)
    if events is _MISSING:
        problems.append("events: required")
    elif type(events) is not list:
        problems.append("events: must be an array")
    elif not events:
        problems.append("events: must not be empty")
    elif len(events) > max_events:
        problems.append(f"events: must hold at most {max_events} events (got {len(events)})")
    else:
        valid, rejected = _split_events(events)
        if problems or not valid:
            reason: RejectReason = "invalid_envelope" if problems else "no_valid_events"
            problems.extend(p for r in rejected for p in r.problems)
            raise InvalidBeacon(_capped(problems), reason=reason)
        fields = {key: value for key, value in doc.items() if key != "events"}
        return Envelope(fields=fields, events=tuple(valid), rejected=tuple(rejected))
    raise InvalidBeacon(_capped(problems), reason="invalid_envelope")


def _split_events(events: list[Any]) -> tuple[list[dict[str, Any]], list[RejectedEvent]]:
    valid: list[dict[str, Any]] = []
    rejected: list[RejectedEvent] = []
    for index, event in enumerate(events):
        if type(event) is not dict:
            rejected.append(RejectedEvent(index, (f"events[{index}]: must be an object",)))
            continue
        problems = _event_problems(event)
        if problems:
            rejected.append(RejectedEvent(index, tuple(f"events[{index}].{p}" for p in problems)))
        else:
            valid.append(event)
    return valid, rejected


def _capped(problems: list[str]) -> tuple[str, ...]:
    if len(problems) <= MAX_REPORTED_PROBLEMS:
        return tuple(problems)
    left_out = len(problems) - MAX_REPORTED_PROBLEMS
    return (*problems[:MAX_REPORTED_PROBLEMS], f"body: {left_out} more problems not listed")


# A field's check takes a value that is present and says why it is wrong, or returns None. Its
# fast path accepts the common right values inline (a number within bounds, a string within length
# bounds) so that a valid event costs a few comparisons per field; anything else goes to the check,
# which alone decides. A JSON null always goes to the check.
Check = Callable[[Any], str | None]

_MISSING: Final = object()
_NUMBER, _STRING, _OTHER = range(3)
_NOT_NUMBER: Final = "must be a number"
_NOT_NUMBER_OR_NULL: Final = "must be a number or null"


class _Field(NamedTuple):
    fast: int  # _NUMBER: low <= value <= MAX_SAFE_NUMBER; _STRING: low <= len(value) <= high
    low: int
    high: int
    check: Check
    # The msgspec type of the fast path: it must accept only values `check` accepts.
    spec: Any


def _number_reason(value: Any, *, signed: bool, nullable: bool) -> str | None:
    kind = type(value)
    if kind is not int and kind is not float:  # bool is a subclass of int: excluded here
        if value is None and nullable:
            return None
        return _NOT_NUMBER_OR_NULL if nullable else _NOT_NUMBER
    if not math.isfinite(value):
        return "must be a finite number"
    if value < 0 and not signed:
        return "must not be negative"
    if value > MAX_SAFE_NUMBER:
        return f"must be at most {MAX_SAFE_NUMBER}"
    if value < -MAX_SAFE_NUMBER:
        return f"must be at least {-MAX_SAFE_NUMBER}"
    return None


def _number_spec(low: int) -> Any:
    """JSON numbers from `low` to MAX_SAFE_NUMBER; msgspec refuses bools, NaN and infinities."""
    bounds = msgspec.Meta(ge=low, le=MAX_SAFE_NUMBER)
    return Annotated[int, bounds] | Annotated[float, bounds]


def _number(*, signed: bool = False, nullable: bool = False) -> _Field:
    def check(value: Any) -> str | None:
        return _number_reason(value, signed=signed, nullable=nullable)

    low = -MAX_SAFE_NUMBER if signed else 0
    spec = _number_spec(low)
    return _Field(_NUMBER, low, MAX_SAFE_NUMBER, check, spec | None if nullable else spec)


def _string(cap: int, *, nullable: bool = False, non_empty: bool = False) -> _Field:
    def check(value: Any) -> str | None:
        if type(value) is str:
            if len(value) > cap:
                return f"must be at most {cap} characters"
            if non_empty and not value:
                return "must not be empty"
            return None
        if value is None and nullable:
            return None
        return "must be a string or null" if nullable else "must be a string"

    spec = Annotated[str, msgspec.Meta(min_length=1 if non_empty else 0, max_length=cap)]
    return _Field(_STRING, 1 if non_empty else 0, cap, check, spec | None if nullable else spec)


def _bool_or_null(value: Any) -> str | None:
    return None if value is None or type(value) is bool else "must be a boolean or null"


def _integer_or_null(value: Any) -> str | None:
    """A non-negative integer; 3.0 counts as one, as in JSON Schema."""
    reason = _number_reason(value, signed=False, nullable=True)
    if reason == _NOT_NUMBER_OR_NULL or (
        reason is None and type(value) is float and not value.is_integer()
    ):
        return "must be an integer or null"
    return reason


def _text_or_number_or_null(value: Any) -> str | None:
    """`rate.payload` (a rate or "constant") and an error's `code`."""
    if type(value) is str:
        return _TEXT.check(value)
    reason = _number_reason(value, signed=True, nullable=True)
    return "must be a string, a number or null" if reason == _NOT_NUMBER_OR_NULL else reason


def _other(check: Check, spec: Any) -> _Field:
    return _Field(_OTHER, 0, 0, check, spec)


_ID: Final = _string(MAX_ID_CHARS, non_empty=True)
_ID_OR_NULL: Final = _string(MAX_ID_CHARS, nullable=True)
_URL: Final = _string(MAX_URL_CHARS)
_URL_OR_NULL: Final = _string(MAX_URL_CHARS, nullable=True)
_TEXT: Final = _string(MAX_TEXT_CHARS)
_TEXT_OR_NULL: Final = _string(MAX_TEXT_CHARS, nullable=True)
_MESSAGE: Final = _string(MAX_MESSAGE_CHARS)
_NON_NEGATIVE: Final = _number()
_NON_NEGATIVE_OR_NULL: Final = _number(nullable=True)
_NUMBER_OR_NULL: Final = _number(signed=True, nullable=True)
_BOOL_OR_NULL: Final = _other(_bool_or_null, bool | None)
# Integral floats (3.0) are valid too, but left to the rules by hand.
_INTEGER_OR_NULL: Final = _other(
    _integer_or_null, Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_NUMBER)] | None
)
_TEXT_OR_NUMBER_OR_NULL: Final = _other(
    _text_or_number_or_null, _TEXT.spec | _number_spec(-MAX_SAFE_NUMBER) | None
)


@dataclass(frozen=True, slots=True)
class _Shape:
    """The known fields of an object, and which of them must be present.

    `numbers` and `strings` hold the fast-path bounds of the fields that have them (see `_Field`).
    """

    fields: dict[str, _Field]
    required: tuple[str, ...]
    required_set: frozenset[str]
    numbers: dict[str, int]
    strings: dict[str, tuple[int, int]]
    checks: dict[str, Check]

    @classmethod
    def of(cls, *, required: Mapping[str, _Field], optional: Mapping[str, _Field]) -> _Shape:
        fields = {**required, **optional}
        return cls(
            fields=fields,
            required=tuple(required),
            required_set=frozenset(required),
            numbers={name: f.low for name, f in fields.items() if f.fast == _NUMBER},
            strings={name: (f.low, f.high) for name, f in fields.items() if f.fast == _STRING},
            checks={name: f.check for name, f in fields.items()},
        )

    def extend(
        self,
        *,
        required: Mapping[str, _Field] | None = None,
        optional: Mapping[str, _Field] | None = None,
    ) -> _Shape:
        required = {**{name: self.fields[name] for name in self.required}, **(required or {})}
        return _Shape.of(required=required, optional={**self.fields, **(optional or {})})


_ENVELOPE: Final = _Shape.of(
    required={
        "session_id": _ID,
        "playback_id": _ID,
        "protocol": _TEXT,
        "source_url": _URL,
        "player": _TEXT,
        "version": _TEXT,
        "user_agent": _TEXT,
    },
    optional={
        "uid": _ID_OR_NULL,
        "domain": _URL_OR_NULL,
        "path": _URL_OR_NULL,
        "params": _URL_OR_NULL,
        "hash": _URL_OR_NULL,
        "live": _BOOL_OR_NULL,
        "player_instance_id": _ID_OR_NULL,
        "view_seq": _INTEGER_OR_NULL,
    },
)

_EVENT: Final = _Shape.of(
    required={"id": _ID, "type": _ID, "timestamp": _NON_NEGATIVE},
    optional={"playhead_ms": _NON_NEGATIVE_OR_NULL},
)

_HEARTBEAT_SEND_ONCE: Final = (
    "play_to_first_frame_ms",
    "mount_to_play_ms",
    "mount_to_first_frame_ms",
    "duration_ms",
    "oldest_buffer_timestamp",
    "player_height_px",
    "player_width_px",
    "video_height_px",
    "video_width_px",
    "window_height_px",
    "window_width_px",
)

_PROBLEM_EVENT: Final = _EVENT.extend(
    required={"message": _MESSAGE, "category": _TEXT},
    optional={"fatal": _BOOL_OR_NULL, "code": _TEXT_OR_NUMBER_OR_NULL},
)

_EVENT_SHAPES: Final = {
    "heartbeat": _EVENT.extend(
        optional={
            **dict.fromkeys(HEARTBEAT_COUNTERS, _NON_NEGATIVE),
            **dict.fromkeys(_HEARTBEAT_SEND_ONCE, _NON_NEGATIVE_OR_NULL),
            "offset_ms": _NUMBER_OR_NULL,
            "autoplay_status": _TEXT_OR_NULL,
        }
    ),
    "error": _PROBLEM_EVENT,
    "warning": _PROBLEM_EVENT,
    "clip": _EVENT.extend(
        optional={"startTime": _NON_NEGATIVE_OR_NULL, "endTime": _NON_NEGATIVE_OR_NULL}
    ),
    "rate": _EVENT.extend(optional={"payload": _TEXT_OR_NUMBER_OR_NULL}),
    "seek": _EVENT.extend(optional={"payload": _NUMBER_OR_NULL}),
    "video-quality": _EVENT.extend(optional={"payload": _TEXT_OR_NULL}),
}


# Event types the fast path knows; an event of any other type sends its envelope the slow way.
_PLAIN_EVENT_TYPES: Final = (
    "play",
    "pause",
    "first-frame",
    "ended",
    "can-play",
    "enter-fullscreen",
    "exit-fullscreen",
    "enter-pip",
    "exit-pip",
)


def _fast_struct(
    name: str,
    shape: _Shape,
    *,
    more: tuple[tuple[str, Any], ...] = (),
    default: Any = None,
    **options: Any,
) -> Any:
    """A msgspec Struct accepting the objects that have no problem against `shape`.

    `more` adds required fields. Unknown fields are ignored (kept in the document, never
    checked), as by hand, unless `options` forbid them; optional fields default to `default`
    (None or UNSET), a default msgspec never checks.
    """
    fields = shape.fields
    return msgspec.defstruct(
        name,
        [
            *((field, fields[field].spec) for field in shape.required),
            *more,
            *((f, v.spec, default) for f, v in fields.items() if f not in shape.required_set),
        ],
        **options,
    )


def _fast_event(kind: str, shape: _Shape, prefix: str = "_FastEvent", **options: Any) -> Any:
    # The event's type is the union's tag, checked by the union, not a field of the struct.
    untyped = _Shape.of(
        required={f: shape.fields[f] for f in shape.required if f != "type"},
        optional={f: v for f, v in shape.fields.items() if f not in shape.required_set},
    )
    return _fast_struct(f"{prefix}_{kind}", untyped, tag_field="type", tag=kind, **options)


def _fast_event_union(prefix: str = "_FastEvent", **options: Any) -> Any:
    return functools.reduce(
        operator.or_,
        [_fast_event(kind, shape, prefix, **options) for kind, shape in _EVENT_SHAPES.items()]
        + [_fast_event(kind, _EVENT, prefix, **options) for kind in _PLAIN_EVENT_TYPES],
    )


_FAST_EVENT: Final = _fast_event_union()
_FAST_ENVELOPE: Final = _fast_struct(
    "_FastEnvelope",
    _ENVELOPE,
    more=(("events", list[_FAST_EVENT]),),  # type: ignore[valid-type]
)

# The strict path of `parse_beacon`: the same types decoded from the bytes, unknown fields
# refused, so that every value of an accepted body was checked; the events are decoded only to
# be checked (gc=False: they hold scalars and are dropped at once), their text kept (`Raw`).
_STRICT_ENVELOPE: Final = msgspec.json.Decoder(
    _fast_struct(
        "_StrictEnvelope",
        _ENVELOPE,
        more=(("events", msgspec.Raw),),
        default=msgspec.UNSET,
        forbid_unknown_fields=True,
        gc=False,
    )
)
_STRICT_EVENTS: Final = msgspec.json.Decoder(
    list[_fast_event_union("_StrictEvent", forbid_unknown_fields=True, gc=False)]  # type: ignore[misc]
)
_ENVELOPE_FIELD_NAMES: Final = tuple(_ENVELOPE.fields)


def _parse_strict(body: bytes, max_events: int) -> Envelope | None:
    """The envelope of a body whose every field is known and valid, or None (then the caller
    takes the general way, which alone words problems and keeps unknown fields).

    What this accepts, orjson (the aggregator's decoder) reads as the same values: duplicate
    keys are all checked and the last one counts in both, and the events' text is exactly the
    events checked. Numbers are bounded and strings valid UTF-8 by the types, and unknown fields,
    the only place for unbounded numbers or unchecked strings, are refused.
    """
    try:
        head = _STRICT_ENVELOPE.decode(body)
        count = len(_STRICT_EVENTS.decode(head.events))
    except (msgspec.DecodeError, ValueError, RecursionError):
        # Malformed, refused by the types (ValidationError), invalid UTF-8 (UnicodeDecodeError)
        # or nested too deep: the general way words it.
        return None
    if not 0 < count <= max_events:
        return None
    unset = msgspec.UNSET
    fields = {n: v for n in _ENVELOPE_FIELD_NAMES if (v := getattr(head, n)) is not unset}
    return Envelope(fields, events_json=bytes(head.events), count=count)


def _all_valid(doc: Any, max_events: int) -> bool:
    """True when `doc` is an envelope whose fields and events all pass (the fast path)."""
    if type(doc) is not dict:
        return False
    events = doc.get("events")
    if type(events) is not list or not 0 < len(events) <= max_events:
        return False
    try:
        msgspec.convert(doc, _FAST_ENVELOPE)
    except msgspec.ValidationError:
        return False
    return True


def _event_problems(event: dict[str, Any]) -> list[str]:
    kind = event.get("type")
    shape = _EVENT_SHAPES.get(kind, _EVENT) if type(kind) is str else _EVENT
    return _problems(event, shape)


def _problems(obj: dict[str, Any], shape: _Shape) -> list[str]:
    """Missing required fields first, then wrong known fields in the order they were sent."""
    problems: list[str] = []
    if not shape.required_set <= obj.keys():
        problems = [f"{name}: required" for name in shape.required if name not in obj]
    numbers, strings, checks, high = shape.numbers, shape.strings, shape.checks, MAX_SAFE_NUMBER
    for name, value in obj.items():
        low = numbers.get(name)
        if low is not None:
            kind = type(value)
            if (kind is int or kind is float) and low <= value <= high:
                continue  # NaN and infinities fail the comparison
        else:
            bounds = strings.get(name)
            if bounds is not None:
                if type(value) is str and bounds[0] <= len(value) <= bounds[1]:
                    continue
            elif name not in checks:
                continue  # an unknown field
        reason = checks[name](value)
        if reason is not None:
            problems.append(f"{name}: {reason}")
    return problems
