"""The policy language: parser errors with line:column, evaluation, fuzzing."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.policy import (
    Context,
    PolicyError,
    PolicySet,
    Resource,
    Subject,
    evaluate,
    parse_policy,
)
from tests.fuzzing import examples

ALICE = Subject("alice", "acme", frozenset({"publish:audio", "subscribe"}), mfa=2)
ROOM = Resource("acme", "standup", frozenset({"confidential"}))
NOON_UTC = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC).timestamp()  # a Monday


def decide(text: str, action: str = "join", subject: Subject = ALICE, **context: object):
    policies = PolicySet.parse({"p.policy": text})
    return evaluate(policies, subject, action, ROOM, Context(NOON_UTC, **context))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ('allow "x" when action is jion', 1, 26, "unknown action 'jion'"),
        ("allow x when action is join", 1, 7, "rule's name in quotes"),
        ('allow "x" when subject.mfa >= "2"', 1, 31, "'>=' compares numbers"),
        ('allow "x"\n  when subject.nickname is "a"', 2, 8, "unknown fact 'subject.nickname'"),
        ('allow "x" when resource.labels is "a"', 1, 16, "use 'has'"),
        ('allow "x" when subject.grants has "superuser"', 1, 35, "unknown grant"),
        ('deny "x" when action is join\nallow "y" when', 2, 15, "end of file"),
        ('allow "x" when action is join and', 1, 34, "expected a fact"),
        ('allow "x" when (action is join', 1, 31, "expected ')'"),
        ('allow "x" when action is join\nallow "x" when action is join', 2, 1, "already used"),
        ('allow "x" when subject.tenant = "a"', 1, 31, "compare with 'is'"),
        ('allow "x when action is join', 1, 7, "string not closed"),
        (
            'allow "x" when context.time during mon..fri 09:00..17:00 in "Mars/Base"',
            1,
            61,
            "unknown time zone",
        ),
        ('allow "x" when context.time during 18:00..09:00', 1, 36, "start before they end"),
        ('allow "x" when context.time during 25:00..26:00', 1, 36, "invalid time of day"),
        ('allow "x" when context.camera_off_for > 30days', 1, 43, "unknown unit 'days'"),
        ('deny "x" when action is record then audit_counterparty', 1, 32, "no obligations"),
        ('oblige "x" when action is join', 1, 31, "expected 'then'"),
        ('allow "x" when action is join extra', 1, 31, "expected 'and', 'or'"),
        ('allow "x" when subject.identity in "a"', 1, 36, "needs a list"),
    ],
)
def test_malformed_policy_is_refused_at_exact_line_and_column(
    text: str, line: int, col: int, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "f.policy")
    error = caught.value
    assert (error.line, error.col) == (line, col), str(error)
    assert fragment in error.message
    assert str(error).startswith(f"f.policy:{line}:{col}: ")
    assert error.code == "bad_policy"


def test_no_matching_rule_denies_and_says_so() -> None:
    decision = decide('allow "subscribers" when action is subscribe', action="join")
    assert not decision.allowed
    assert decision.rule is None
    assert "no rule allows join" in decision.reason


def test_deny_wins_over_an_earlier_allow_and_names_file_and_line() -> None:
    text = (
        'allow "all" when action is join\n\n'
        'deny "confidential" when resource.labels has "confidential" because "secret"'
    )
    decision = decide(text)
    assert (decision.allowed, decision.rule, decision.source) == (
        False,
        "confidential",
        "p.policy:3",
    )
    assert decision.reason == "secret"
    assert "p.policy:3" in decision.explain() and "'confidential'" in decision.explain()


def test_allow_reason_defaults_to_the_condition_text() -> None:
    decision = decide('allow "mfa"\n  when subject.mfa >= 2\n   and action is join')
    assert decision.allowed
    assert decision.reason == "subject.mfa >= 2 and action is join"


def test_missing_attribute_equals_nothing() -> None:
    assert not decide('allow "v" when subject.attrs.verified is true').allowed
    assert decide('allow "v" when subject.attrs.verified is not true').allowed
    assert decide('allow "v" when subject.attrs.level not in [1, 2]').allowed


def test_types_are_strict_at_run_time_true_is_not_one() -> None:
    subject = Subject("a", "acme", attrs={"level": 1})
    assert not decide('allow "v" when subject.attrs.level is true', subject=subject).allowed
    assert decide('allow "v" when subject.attrs.level >= 1', subject=subject).allowed
    text_attr = Subject("a", "acme", attrs={"level": "1"})
    assert not decide('allow "v" when subject.attrs.level >= 1', subject=text_attr).allowed


def test_grants_and_labels_compose_with_has() -> None:
    text = 'allow "audio" when action is publish:audio and subject.grants has "publish:audio"'
    assert decide(text, action="publish:audio").allowed
    assert not decide(text, action="publish:video").allowed


def test_time_window_in_a_zone_and_when_it_changes() -> None:
    # 12:00 UTC is 13:00 in Zurich (CET): inside 09:00-17:00, which ends 16:00 UTC.
    text = 'allow "hours" when context.time during mon..fri 09:00..17:00 in "Europe/Zurich"'
    decision = decide(text)
    assert decision.allowed
    assert "context.time" in decision.depends_on
    assert decision.changes_at == NOON_UTC + 4 * 3600
    late = 'allow "hours" when context.time during mon..fri 09:00..12:30 in "Europe/Zurich"'
    assert not decide(late).allowed


def test_weekend_days_are_outside_a_weekday_window() -> None:
    saturday = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC).timestamp()
    policies = PolicySet.parse(
        {"p.policy": 'allow "w" when context.time during mon..fri 00:00..24:00'}
    )
    decision = evaluate(policies, ALICE, "join", ROOM, Context(saturday))
    assert not decision.allowed
    assert decision.changes_at == saturday + 36 * 3600  # Monday 00:00 UTC


def test_camera_duration_threshold_reports_when_it_flips() -> None:
    text = 'deny "cam" when context.camera_off_for > 30\nallow "all" when action is publish:audio'
    decision = decide(text, action="publish:audio", camera_on=False, camera_off_for=10.0)
    assert decision.allowed
    assert "context.camera_off_for" in decision.depends_on
    assert decision.changes_at == NOON_UTC + 21
    assert not decide(text, action="publish:audio", camera_off_for=31.0).allowed


def test_obligations_come_with_an_allow() -> None:
    text = (
        'allow "join" when action is join\n'
        'oblige "audit" when action in [join, send_file] then audit_counterparty'
    )
    assert decide(text).obligations == ("audit_counterparty",)
    assert decide(text + '\ndeny "no" when action is join').obligations == ()


def test_comments_blank_lines_and_crlf_are_ignored() -> None:
    text = '# a comment\r\n\r\nallow "x"  # trailing\r\n  when action is join\r\n'
    assert len(parse_policy(text).rules) == 1


def test_deep_nesting_is_a_policy_error_not_a_crash() -> None:
    with pytest.raises(PolicyError, match="nested deeper"):
        parse_policy('allow "x" when ' + "not " * 100 + "context.camera_on")
    with pytest.raises(PolicyError):
        parse_policy('allow "x" when action in ' + "[" * 10000)


VOCAB = [
    "allow", "deny", "oblige", '"r"', "when", "because", "then", "and", "or", "not", "is",
    "has", "in", "during", "action", "join", "publish:audio", "subject.mfa", "subject.grants",
    "subject.attrs.x", "resource.labels", "context.time", "context.camera_off_for", "true",
    "2", "30s", "09:00", "..", "17:00", "mon", "fri", "[", "]", ",", "(", ")", ">=", "<",
    '"Europe/Zurich"', "audit_counterparty", "\n", "#c\n", '"a', "=",
]  # fmt: skip


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.sampled_from(VOCAB), max_size=30))
def test_fuzz_token_soup_only_ever_raises_policy_error(words: list[str]) -> None:
    try:
        parse_policy(" ".join(words))
    except PolicyError as exc:
        assert exc.line >= 1 and exc.col >= 1


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_only_ever_raises_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as exc:
        assert exc.line >= 1 and exc.col >= 1


@settings(max_examples=examples(200), deadline=None)
@given(
    st.sampled_from(["join", "publish:audio", "subscribe", "record"]),
    st.integers(0, 2),
    st.floats(0, 1e6),
)
def test_fuzz_evaluation_of_valid_policies_is_total(action: str, mfa: int, off: float) -> None:
    text = (
        'deny "a" when not (subject.mfa >= 2 or context.camera_off_for < 30)\n'
        'allow "b" when action in [join, subscribe] or context.time during sat,sun 10:00..11:00\n'
    )
    decision = decide(text, action=action, subject=Subject("s", "t", mfa=mfa), camera_off_for=off)
    assert isinstance(decision.allowed, bool)
