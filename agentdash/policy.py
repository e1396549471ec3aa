"""Who decides a proposed tool call: a rule, the tool's own hints, or (when asked) a human.

How a valid call of `tool` with its validated `arguments` is decided:

1. The session's enabled rules, then the global ones, each in position order (then by
   id): the first rule that matches decides. `allow` runs the call, `ask` makes it wait
   for an operator (with the rule's approval options: a required group, two approvals,
   four eyes, its own deadline), `deny` stops it for good: it never runs and the model
   reads which rule said no. One exception: a rule made by "approve and allow for this
   session" (from_approval) yields to a later global rule that denies or asks more than
   one operator's yes (RuleSet.decide).
2. No rule matches: the tool's hints decide. A tool that requires confirmation, is
   destructive or reaches outside the sandbox (open world) waits for an operator; any
   other tool (read-only, or with no hint at all) runs. When hints disagree, asking
   wins: http_fetch is read-only but open-world, so it asks. Nothing fails open.

A rule matches when everything it sets holds: the tool's name matches `tool` (a name or
an fnmatch glob such as ``run_*``), the tool carries `tag`, the tool has the behaviour
`hint`, and every condition holds on the arguments. The four kinds of condition, as
stored in PolicyRule.conditions:

    {"kind": "path", "argument": "path", "glob": "secrets/**"}
    {"kind": "host", "argument": "url", "host": "*.example.com"}
    {"kind": "command", "argument": "command", "pattern": "\\brm\\s+-rf\\b"}
    {"kind": "number", "argument": "timeout_seconds", "min": 0, "max": 60}

(the `argument` shown is each kind's default). A condition on an argument that the call
does not carry (absent or null) does not hold.

Links: the file tools follow symbolic links that stay inside the session's workspace, so
a path condition judges both the path as written and the path it really leads to there
(Workspace.resolve, as the tools do, with the links as they are when the call is decided
or previewed). A deny or ask rule matches when either does: "secrets/**" also catches
"docs/x" when docs links to secrets. An allow rule matches only when both do, so a link
never widens an allow: "docs/**" does not allow "docs/x" that leads into secrets/. A path
the workspace refuses (a link out, a loop, a hard link) is judged as written; the tool
refuses it anyway. Rules are checked when saved
(`validate_rule`, run by PolicyRule.clean() and so by every ModelForm): a bad pattern,
a tool that does not exist or a condition on an argument no matched tool has is a form
error, never an error at decision time.

Every decision names its rule as the audit log records it: "rule:<id>" with the rule's
name, or "default:<hint>".

Speed: the runner asks `rules_for(session)` once per model reply, which costs one
query for the current PolicyVersion token; the compiled rules are cached per process
under that token, and any change to any rule changes the token (models/policy.py).
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import math
import posixpath
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlsplit

import pydantic
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Min, Q
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter

# `sessions` as a module: it imports the runner, which imports this module.
from agentdash import audit, sessions, toolbox
from agentdash.models import PolicyRule, PolicyVersion, ToolCall
from tools import Tool
from tools.builtin.workspace import Workspace, WorkspaceError

logger = logging.getLogger(__name__)

Action = Literal["allow", "ask", "deny"]

# --- conditions ---------------------------------------------------------------------


class _Condition(BaseModel, abc.ABC):
    """A test on one named argument of a call."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The JSON Schema types an argument must admit for this kind of condition to apply.
    accepts: ClassVar[frozenset[str]]

    argument: str = Field(min_length=1)

    def check(
        self, arguments: Mapping[str, Any], links: RealPaths | None = None, *, allows: bool = False
    ) -> bool:
        """Whether the condition holds on the call's arguments. Only a path condition
        uses `links` (the session's workspace) and `allows` (the rule allows the call)."""
        value = arguments.get(self.argument)
        return value is not None and self.holds(value)

    @abc.abstractmethod
    def holds(self, value: Any) -> bool:
        """Whether the argument's (present) value satisfies the condition."""


class PathCondition(_Condition):
    """A workspace path matches a glob: ``*``, ``?`` and ``[...]`` match within one
    segment, a ``**`` segment matches any number of segments ("src/**", "**/*.pem").
    The path is normalised first ("a/./b/../c" is "a/c")."""

    kind: Literal["path"]
    argument: str = Field(default="path", min_length=1)
    glob: str
    accepts: ClassVar[frozenset[str]] = frozenset({"string"})
    _segments: tuple[str, ...] = PrivateAttr()

    @pydantic.field_validator("glob")
    @classmethod
    def _relative(cls, glob: str) -> str:
        glob = glob.strip()
        if not glob:
            raise ValueError("a path glob cannot be empty")
        if glob.startswith("/"):
            raise ValueError("paths are relative to the session's workspace: drop the leading /")
        return glob

    def model_post_init(self, context: Any) -> None:
        self._segments = _segments(self.glob)

    def check(
        self, arguments: Mapping[str, Any], links: RealPaths | None = None, *, allows: bool = False
    ) -> bool:
        value = arguments.get(self.argument)
        if not isinstance(value, str) or links is None:
            return super().check(arguments)
        real = links.real(value)
        if real is None:
            return self.holds(value)
        # Deny and ask catch either path; allow needs both (the module's docstring).
        either_or_both = all if allows else any
        return either_or_both(self.holds(path) for path in (value, real))

    def holds(self, value: Any) -> bool:
        return isinstance(value, str) and _glob_matches(_segments(value), self._segments)


class RealPaths:
    """Where paths lead inside one session's workspace, for the path conditions of one
    decision: the workspace is opened and each path resolved only when a rule asks."""

    def __init__(self, workspace: Path) -> None:
        self.directory = workspace
        self.workspace: Workspace | None = None
        self.found: dict[str, str | None] = {}

    def real(self, path: str) -> str | None:
        """The path `path` leads to, relative to the workspace ("." for itself), or None
        when the workspace refuses it or does not exist."""
        if path not in self.found:
            self.found[path] = self._resolve(path)
        return self.found[path]

    def _resolve(self, path: str) -> str | None:
        try:
            if self.workspace is None:
                self.workspace = Workspace(self.directory)
            return self.workspace.resolve(path).relative_to(self.workspace.root).as_posix()
        except (WorkspaceError, OSError, ValueError):
            # Never fails the decision: judged as written, and the tool refuses it anyway.
            return None


class HostCondition(_Condition):
    """A URL's host is `host`, or for "*.example.com" any host under example.com (not
    example.com itself)."""

    kind: Literal["host"]
    argument: str = Field(default="url", min_length=1)
    host: str
    accepts: ClassVar[frozenset[str]] = frozenset({"string"})

    @pydantic.field_validator("host")
    @classmethod
    def _a_host(cls, host: str) -> str:
        host = host.strip().lower().rstrip(".")
        name = host.removeprefix("*.")
        if not (_HOSTNAME.fullmatch(name) or _is_ip(name)) or (name != host and _is_ip(name)):
            raise ValueError(
                f"{host!r} is not a host name: write example.com or *.example.com, "
                "without scheme, port or path"
            )
        return host

    def holds(self, value: Any) -> bool:
        host = _host_of(value) if isinstance(value, str) else None
        if host is None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


class CommandCondition(_Condition):
    """A regular expression is found in a command (re.search; use ^ to anchor and
    (?i) to ignore case)."""

    kind: Literal["command"]
    argument: str = Field(default="command", min_length=1)
    pattern: str = Field(min_length=1)
    accepts: ClassVar[frozenset[str]] = frozenset({"string"})
    _regex: re.Pattern[str] = PrivateAttr()

    @pydantic.field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return pattern

    def model_post_init(self, context: Any) -> None:
        self._regex = re.compile(self.pattern)

    def holds(self, value: Any) -> bool:
        return isinstance(value, str) and self._regex.search(value) is not None


class NumberCondition(_Condition):
    """A number lies within [min, max] (either bound may be left out, not both)."""

    kind: Literal["number"]
    min: float | None = None
    max: float | None = None
    accepts: ClassVar[frozenset[str]] = frozenset({"number", "integer"})

    @pydantic.model_validator(mode="after")
    def _bounded(self) -> NumberCondition:
        if self.min is None and self.max is None:
            raise ValueError("give a minimum, a maximum or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"the minimum {self.min:g} is above the maximum {self.max:g}")
        return self

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


Condition = Annotated[
    PathCondition | HostCondition | CommandCondition | NumberCondition,
    Field(discriminator="kind"),
]
_CONDITIONS = TypeAdapter(list[Condition])

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def parse_conditions(raw: Any) -> tuple[Condition, ...]:
    """The conditions of a rule, from their JSON. Raises pydantic.ValidationError."""
    return tuple(_CONDITIONS.validate_python(raw))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host_of(url: str) -> str | None:
    # A URL without a scheme ("example.com/x") still names its host.
    parts = urlsplit(url if "//" in url else f"//{url}")
    try:
        host = parts.hostname
    except ValueError:  # a malformed [IPv6] part
        return None
    return host.rstrip(".") if host else None


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in posixpath.normpath(path).split("/") if part not in ("", "."))


def _glob_matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Match path segments against glob segments, `**` standing for zero or more whole
    segments. Walks the pattern as a small automaton (the set of pattern positions still
    possible), so no pattern can make it backtrack exponentially."""

    def past_globstars(positions: Iterable[int]) -> set[int]:
        reachable = set()
        for position in positions:
            reachable.add(position)
            while position < len(pattern) and pattern[position] == "**":
                position += 1
                reachable.add(position)
        return reachable

    positions = past_globstars({0})
    for part in parts:
        following = set()
        for position in positions:
            if position == len(pattern):
                continue
            if pattern[position] == "**":
                following.add(position)
            elif fnmatchcase(part, pattern[position]):
                following.add(position + 1)
        positions = past_globstars(following)
        if not positions:
            return False
    return len(pattern) in positions


# --- decisions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What the policy decided for one call, and (for `ask`) what it asks of approvers."""

    action: Action
    reason: str
    rule: str  # "rule:<id>" or "default:<hint>"
    rule_id: int | None = None
    rule_name: str = ""
    description: str = ""
    required_group: str = ""
    approvals_required: int = 1
    four_eyes: bool = False
    expires_after: timedelta | None = None  # None: AGENTDASH_APPROVAL_TIMEOUT_SECONDS

    def audit_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"rule": self.rule, "action": self.action, "reason": self.reason}
        if self.rule_id is not None:
            payload |= {"rule_id": self.rule_id, "rule_name": self.rule_name}
        if self.action == "ask":
            payload |= {
                "required_group": self.required_group,
                "approvals_required": self.approvals_required,
                "four_eyes": self.four_eyes,
            }
        return payload


_ASKING_HINTS = (
    ("requires_confirmation", "requires confirmation"),
    ("destructive", "destructive"),
    ("open_world", "reaches outside the sandbox"),
)


def stricter_requirements(call: ToolCall, ruling: PolicyDecision) -> dict[str, Any]:
    """The call's approval requirements that `ruling` (an ask) makes stricter than what
    the call holds, as fields to set on it: a required group (the ruling's, when it
    names one the call does not), more approvals, four eyes. Empty when none."""
    stricter: dict[str, Any] = {}
    if ruling.required_group and ruling.required_group != call.required_group:
        stricter["required_group"] = ruling.required_group
    if ruling.approvals_required > call.approvals_required:
        stricter["approvals_required"] = ruling.approvals_required
    if ruling.four_eyes and not call.four_eyes:
        stricter["four_eyes"] = True
    if stricter:
        stricter["policy_rule"] = ruling.rule
    return stricter


def default_decision(tool: Tool) -> PolicyDecision:
    """What the tool's hints say when no rule matches (the module's docstring)."""
    asking = [(hint, words) for hint, words in _ASKING_HINTS if getattr(tool, hint)]
    if asking:
        effects = [words for hint, words in asking if hint != "requires_confirmation"]
        detail = f" ({', '.join(effects)})" if effects else ""
        verb = "requires confirmation" if tool.requires_confirmation else "needs an operator"
        return PolicyDecision("ask", f"{tool.name} {verb}{detail}", f"default:{asking[0][0]}")
    if tool.read_only:
        return PolicyDecision(
            "allow", f"{tool.name} does not require confirmation (read-only)", "default:read_only"
        )
    return PolicyDecision("allow", f"{tool.name} does not require confirmation", "default:no_hint")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match, detached from the database (safe to share across threads)."""

    id: int | None
    session_id: int | None
    position: int
    tool: str
    tag: str
    hint: str
    conditions: tuple[Condition, ...]
    decision: PolicyDecision
    from_approval: bool = False

    @classmethod
    def of(cls, rule: PolicyRule) -> CompiledRule:
        words = {"allow": "Allowed", "ask": "Held for an operator", "deny": "Denied"}
        name = f"rule {rule.pk} “{rule.name}”" if rule.pk is not None else f"“{rule.name}”"
        reason = f"{words[rule.action]} by {name}"
        action: Action = rule.action  # type: ignore[assignment]  # a PolicyRule.Action value
        try:
            conditions = parse_conditions(rule.conditions)
        except pydantic.ValidationError as error:
            # Only a rule written around validate_rule() gets here. Ignoring it could let
            # through what it was written to stop: a human decides instead.
            logger.error("policy %s is unreadable, so it asks: %s", name, error)
            conditions, action = (), "ask"
            reason = f"{name} could not be read, so an operator decides"
        decision = PolicyDecision(
            action,
            f"{reason}: {rule.description}" if rule.description else reason,
            rule.label,
            rule_id=rule.pk,
            rule_name=rule.name,
            description=rule.description,
            required_group=rule.required_group.name if rule.required_group_id else "",
            approvals_required=rule.approvals_required,
            four_eyes=rule.four_eyes,
            expires_after=rule.expires_after,
        )
        return cls(
            rule.pk,
            rule.session_id,
            rule.position,
            rule.tool,
            rule.tag,
            rule.hint,
            conditions,
            decision,
            rule.from_approval,
        )

    def selects(self, tool: Tool) -> bool:
        """Whether the rule is about this tool at all, whatever its arguments."""
        return _selects(self.tool, self.tag, self.hint, tool)

    def matches(
        self, tool: Tool, arguments: Mapping[str, Any], links: RealPaths | None = None
    ) -> bool:
        allows = self.decision.action == "allow"
        return self.selects(tool) and all(
            condition.check(arguments, links, allows=allows) for condition in self.conditions
        )

    @property
    def is_strict(self) -> bool:
        """Denies, or asks more than any one operator's yes."""
        decision = self.decision
        return decision.action == "deny" or (
            decision.action == "ask"
            and (
                bool(decision.required_group)
                or decision.approvals_required > 1
                or decision.four_eyes
            )
        )

    @property
    def order(self) -> tuple[bool, int, float]:
        """Session rules first, then by position, then oldest first (unsaved last)."""
        return (self.session_id is None, self.position, self.id or math.inf)


def _selects(pattern: str, tag: str, hint: str, tool: Tool) -> bool:
    return (
        (not pattern or fnmatchcase(tool.name, pattern))
        and (not tag or tag in tool.tags)
        and (not hint or getattr(tool, hint))
    )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules that apply to one session, in the order they are tried."""

    rules: tuple[CompiledRule, ...]

    @classmethod
    def of(cls, rules: Iterable[CompiledRule]) -> RuleSet:
        return cls(tuple(sorted(rules, key=lambda rule: rule.order)))

    def decide(
        self, tool: Tool, arguments: Mapping[str, Any], *, workspace: Path | None = None
    ) -> PolicyDecision:
        """The first matching rule's decision, else the tool's hints'. `workspace`, the
        session's workspace directory, lets path conditions see through its links."""
        links = RealPaths(workspace) if workspace is not None else None
        matching = (rule for rule in self.rules if rule.matches(tool, arguments, links))
        first = next(matching, None)
        if first is None:
            return default_decision(tool)
        if first.from_approval:
            # An operator's "allow for the rest of this session" never loosens what a
            # global rule denies or asks of particular approvers: that is policy, not
            # one operator's shortcut. (A session rule written in the rule editor may.)
            for rule in matching:
                if rule.session_id is None and rule.is_strict:
                    return rule.decision
        return first.decision


# --- the per-process cache ----------------------------------------------------------


class _RuleCache:
    """Compiled rule sets by session, valid for one PolicyVersion token."""

    MAX_SESSIONS = 1024

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token = ""
        self.sets: OrderedDict[int | None, RuleSet] = OrderedDict()

    def get(self, token: str, session_id: int | None) -> RuleSet | None:
        with self.lock:
            if token != self.token:
                return None
            found = self.sets.get(session_id)
            if found is not None:
                self.sets.move_to_end(session_id)
            return found

    def put(self, token: str, session_id: int | None, rules: RuleSet) -> None:
        with self.lock:
            if token != self.token:
                self.token, self.sets = token, OrderedDict()
            self.sets[session_id] = rules
            while len(self.sets) > self.MAX_SESSIONS:
                self.sets.popitem(last=False)


_cache = _RuleCache()


def rules_for(session_id: int | None) -> RuleSet:
    """The rules that decide the calls of a session (None: the global rules alone)."""
    # The token is read before the rules: rules read after it are at least that new, so
    # a change committed in between only makes the cached set newer than its token.
    token = PolicyVersion.current()
    if (cached := _cache.get(token, session_id)) is not None:
        return cached
    stored = PolicyRule.objects.filter(enabled=True).select_related("required_group")
    stored = stored.filter(Q(session__isnull=True) | Q(session_id=session_id))
    rules = RuleSet.of(CompiledRule.of(rule) for rule in stored)
    _cache.put(token, session_id, rules)
    return rules


def decide_call(
    tool: Tool,
    arguments: Mapping[str, Any],
    *,
    session_id: int | None = None,
    workspace: Path | None = None,
) -> PolicyDecision:
    """What happens to a valid call of `tool` with `arguments` before anything runs."""
    return rules_for(session_id).decide(tool, arguments, workspace=workspace)


# --- checking rules as they are saved -------------------------------------------------


# A call left waiting longer has been forgotten, not deliberated. The bound also keeps
# the deadline (now + the wait) a datetime and the wait inside the database's column:
# SQLite stores it as 64-bit microseconds, which overflow at about 106 million days.
MAX_EXPIRES_AFTER = timedelta(days=365)


def validate_rule(rule: PolicyRule) -> None:
    """Raise ValidationError, by field, for whatever in `rule` could not be applied."""
    errors: dict[str, list[str]] = {}
    try:
        conditions = parse_conditions(rule.conditions)
    except pydantic.ValidationError as invalid:
        errors["conditions"] = [_condition_error(error) for error in invalid.errors()]
        conditions = ()

    if rule.action != PolicyRule.Action.ASK:
        for field, is_set in (
            ("required_group", rule.required_group_id is not None),
            ("approvals_required", rule.approvals_required != 1),
            ("four_eyes", rule.four_eyes),
            ("expires_after", rule.expires_after is not None),
        ):
            if is_set:
                errors[field] = ["Only a rule that asks an operator has approval options."]
    if rule.expires_after is not None and rule.expires_after <= timedelta(0):
        errors["expires_after"] = ["A deadline must lie in the future."]
    elif rule.expires_after is not None and rule.expires_after > MAX_EXPIRES_AFTER:
        errors["expires_after"] = [f"A call can wait {MAX_EXPIRES_AFTER.days} days at most."]

    registry = (
        toolbox.registry_for_session(rule.session) if rule.session_id else toolbox.catalogue()
    )
    known = registry.list_tools()
    tools = [tool for tool in known if _selects(rule.tool, rule.tag, rule.hint, tool)]
    if not tools:
        if rule.tool and not any(_selects(rule.tool, "", "", tool) for tool in known):
            names = ", ".join(tool.name for tool in known)
            errors["tool"] = [f"No tool is called {rule.tool!r}. The tools: {names}."]
        elif rule.tag and not any(rule.tag in tool.tags for tool in known):
            tags = ", ".join(sorted({tag for tool in known for tag in tool.tags}))
            errors["tag"] = [f"No tool has the tag {rule.tag!r}. The tags: {tags}."]
        else:
            errors[NON_FIELD_ERRORS] = ["No tool has this name, tag and hint together."]

    for number, condition in enumerate(conditions, start=1):
        if problem := _condition_misfit(condition, tools):
            errors.setdefault("conditions", []).append(f"Condition {number}: {problem}")
    if errors:
        raise ValidationError(errors)


def _condition_misfit(condition: Condition, tools: Sequence[Tool]) -> str:
    """Why the condition could never hold for these tools ("" when it can)."""
    if not tools:
        return ""  # the rule's own error says it already
    having = {tool.name: _argument_types(tool, condition.argument) for tool in tools}
    having = {name: types for name, types in having.items() if types is not None}
    if not having:
        names = ", ".join(tool.name for tool in tools)
        return f"{names} {'has' if len(tools) == 1 else 'have'} no argument {condition.argument!r}."
    if not any(not types or types & condition.accepts for types in having.values()):
        wanted = " or ".join(sorted(condition.accepts))
        return (
            f"{condition.argument!r} is not a {wanted} argument, "
            f"so a {condition.kind} condition cannot apply to it."
        )
    return ""


def _argument_types(tool: Tool, argument: str) -> set[str] | None:
    """The JSON Schema types an argument admits (empty: any); None when it has none."""
    schema = tool.parameters.get("properties", {}).get(argument)
    if schema is None:
        return None
    types: set[str] = set()
    for part in (schema, *schema.get("anyOf", ()), *schema.get("oneOf", ())):
        kind = part.get("type")
        types.update([kind] if isinstance(kind, str) else kind or ())
    return types


def _condition_error(error: Mapping[str, Any]) -> str:
    """A Pydantic error about the conditions, in words for the rule's author."""
    location = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:
        return f"Conditions must be a list of objects: {message}"
    where = f"Condition {location[0] + 1}" if isinstance(location[0], int) else "Conditions"
    # Pydantic puts the matched kind in the path ("command", "pattern"): keep the field.
    fields = [str(part) for part in location[1:] if part not in _KINDS]
    return f"{where}: {'.'.join(fields) + ': ' if fields else ''}{message}"


_KINDS = ("path", "host", "command", "number")


# --- preview ------------------------------------------------------------------------


class PreviewRow(NamedTuple):
    """One recorded call, with what the current rules and the rules with the candidate
    decide for it."""

    call: ToolCall
    old: PolicyDecision
    new: PolicyDecision

    @property
    def changed(self) -> bool:
        return (self.old.action, self.old.rule) != (self.new.action, self.new.rule)


def preview_rule(rule: PolicyRule, *, last: int = 50) -> list[PreviewRow]:
    """What the rules would decide, with `rule` as it is now, for the latest `last`
    recorded calls (of its session, for a session rule), beside what they decide today.

    `rule` is unsaved (a form's instance after is_valid()) or a saved rule with edits,
    which then stands in for its stored version. Nothing is saved. Calls are judged on
    their validated arguments; those of tools no longer known are left out. Newest
    call first.
    """
    calls = ToolCall.objects.filter(arguments__isnull=False).order_by("-pk")
    calls = calls.select_related("session")  # each call's workspace, for its links
    if rule.session_id is not None:
        calls = calls.filter(session_id=rule.session_id)
    calls = list(calls[:last])
    session_ids = {call.session_id for call in calls}
    stored = [
        CompiledRule.of(stored)
        for stored in PolicyRule.objects.filter(enabled=True)
        .filter(Q(session__isnull=True) | Q(session_id__in=session_ids))
        .select_related("required_group")
    ]
    candidate = [CompiledRule.of(rule)] if rule.enabled else []
    changed = [r for r in stored if rule.pk is None or r.id != rule.pk] + candidate

    def by_session(rules: list[CompiledRule]) -> dict[int, RuleSet]:
        return {
            sid: RuleSet.of(r for r in rules if r.session_id in (None, sid)) for sid in session_ids
        }

    before, after = by_session(stored), by_session(changed)
    registry = toolbox.catalogue()
    rows = []
    for call in calls:
        tool = registry.get(call.tool_name)
        if tool is None:
            continue
        arguments = call.arguments or {}
        workspace = call.session.workspace
        rows.append(
            PreviewRow(
                call,
                before[call.session_id].decide(tool, arguments, workspace=workspace),
                after[call.session_id].decide(tool, arguments, workspace=workspace),
            )
        )
    return rows


# --- changing rules -----------------------------------------------------------------


def save_rule(rule: PolicyRule, *, user: AbstractBaseUser | None) -> PolicyRule:
    """Check, save and audit a new or changed rule, in one transaction.

    Raises ValidationError (nothing saved) when the rule could not be applied.
    """
    rule.full_clean()
    created = rule.pk is None
    if created and rule.created_by_id is None and user is not None:
        rule.created_by = user
    with transaction.atomic():
        rule.save()
        audit.record(
            "policy.rule_created" if created else "policy.rule_changed",
            actor=sessions.actor_for(user),
            session_id=rule.session_id,
            payload=rule_snapshot(rule),
        )
    return rule


def delete_rule(rule: PolicyRule, *, user: AbstractBaseUser | None) -> None:
    """Delete and audit a rule, in one transaction."""
    with transaction.atomic():
        snapshot = rule_snapshot(rule)
        rule.delete()
        audit.record(
            "policy.rule_deleted",
            actor=sessions.actor_for(user),
            session_id=snapshot["session_id"],
            payload=snapshot,
        )


def allow_for_session(call: ToolCall, *, user: AbstractBaseUser | None, actor: str) -> PolicyRule:
    """A rule above every other of the call's session allowing its tool from now on.

    Runs in the caller's transaction (the approval that asked for it) and audits it.
    """
    top = PolicyRule.objects.filter(session_id=call.session_id).aggregate(Min("position"))
    rule = PolicyRule(
        session_id=call.session_id,
        name=f"Allow {call.tool_name} for this session",
        description=f"{actor} allowed it when approving call {call.pk}.",
        position=(top["position__min"] or 0) - 1,
        tool=call.tool_name,
        action=PolicyRule.Action.ALLOW,
        created_by=user,
        from_approval=True,
    )
    rule.save()
    audit.record(
        "policy.rule_created",
        actor=actor,
        session_id=call.session_id,
        tool_call_id=call.pk,
        payload=rule_snapshot(rule),
    )
    return rule


def rule_snapshot(rule: PolicyRule) -> dict[str, Any]:
    """A rule as the audit log keeps it."""
    return {
        "rule": rule.label,
        "rule_id": rule.pk,
        "name": rule.name,
        "description": rule.description,
        "session_id": rule.session_id,
        "position": rule.position,
        "enabled": rule.enabled,
        "from_approval": rule.from_approval,
        "tool": rule.tool,
        "tag": rule.tag,
        "hint": rule.hint,
        "conditions": rule.conditions,
        "action": rule.action,
        "required_group": rule.required_group.name if rule.required_group_id else "",
        "approvals_required": rule.approvals_required,
        "four_eyes": rule.four_eyes,
        "expires_after_seconds": (
            rule.expires_after.total_seconds() if rule.expires_after is not None else None
        ),
    }
