"""The example policy packs (examples/policies/): the allows and denies they promise."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from signaling.policy import Context, Decision, PolicySet, Resource, Subject, evaluate

PACKS = Path(__file__).resolve().parents[2] / "examples" / "policies"
ALL = frozenset(
    {"publish:audio", "publish:video", "publish:screen", "publish:file", "subscribe", "record"}
)
# Monday 30 November 2026, 10:00 in Zurich (CET, UTC+1).
MONDAY_10 = datetime.datetime.fromisoformat("2026-11-30T10:00:00+01:00").timestamp()


def pack(name: str) -> PolicySet:
    return PolicySet.load(PACKS / name)


def decide(
    policies: PolicySet,
    action: str,
    subject: Subject,
    resource: Resource,
    context: Context | None = None,
) -> Decision:
    return evaluate(policies, subject, action, resource, context or Context(MONDAY_10))


@pytest.mark.parametrize("name", ["medical", "education", "finance"])
def test_pack_parses(name: str) -> None:
    assert pack(name).rule_count > 0


# --- medical
CONSULT = Resource("clinic-a", "consult-42", frozenset({"consultation"}))
CLINICIAN = Subject("dr-who", "clinic-a", ALL, attrs={"clinician_verified": True})


def test_medical_verified_clinician_of_the_host_joins_a_consultation() -> None:
    decision = decide(pack("medical"), "join", CLINICIAN, CONSULT)
    assert decision.allowed and decision.rule == "verified clinicians join consultations"


def test_medical_unverified_subject_is_refused_naming_the_rule() -> None:
    patient = Subject("p1", "clinic-a", ALL)
    decision = decide(pack("medical"), "join", patient, CONSULT)
    assert not decision.allowed
    assert decision.rule == "only verified clinicians of the hosting institution join consultations"
    assert decision.source == "medical.policy:9"


def test_medical_clinician_of_another_institution_is_refused() -> None:
    other = Subject("dr-x", "clinic-b", ALL, attrs={"clinician_verified": True})
    assert not decide(pack("medical"), "join", other, CONSULT).allowed


def test_medical_never_records_even_with_the_grant() -> None:
    decision = decide(pack("medical"), "record", CLINICIAN, CONSULT)
    assert not decision.allowed and decision.rule == "consultations are never recorded"


def test_medical_files_stay_in_the_tenant_and_are_deleted_after_the_meeting() -> None:
    inside = Context(MONDAY_10, counterparty_tenant="clinic-a")
    sent = decide(pack("medical"), "send_file", CLINICIAN, CONSULT, inside)
    assert sent.allowed and sent.obligations == ("delete_files_at_end",)
    outside = Context(MONDAY_10, counterparty_tenant="clinic-b")
    assert not decide(pack("medical"), "send_file", CLINICIAN, CONSULT, outside).allowed
    unknown = decide(pack("medical"), "receive_file", CLINICIAN, CONSULT)
    assert not unknown.allowed and unknown.rule == "nothing is transferred to another tenant"


# --- education
CLASS = Resource("school", "math-7b")
STUDENT = Subject(
    "s1", "school", ALL, role="student", attrs={"role": "student", "real_name_verified": True}
)
TEACHER = Subject("t1", "school", ALL, role="teacher", attrs={"role": "teacher"})


def test_education_verified_student_joins_unverified_does_not() -> None:
    assert decide(pack("education"), "join", STUDENT, CLASS).allowed
    anonymous = Subject("s2", "school", ALL, role="student", attrs={"role": "student"})
    decision = decide(pack("education"), "join", anonymous, CLASS)
    assert not decision.allowed and decision.rule == "students must be real-name verified"


def test_education_student_is_muted_after_30_s_without_camera() -> None:
    policies = pack("education")
    camera_on = Context(MONDAY_10, camera_on=True, camera_on_for=300)
    assert decide(policies, "publish:audio", STUDENT, CLASS, camera_on).allowed
    briefly_off = Context(MONDAY_10, camera_on=False, camera_off_for=30)
    decision = decide(policies, "publish:audio", STUDENT, CLASS, briefly_off)
    assert decision.allowed and decision.changes_at == MONDAY_10 + 1
    long_off = Context(MONDAY_10, camera_on=False, camera_off_for=31)
    decision = decide(policies, "publish:audio", STUDENT, CLASS, long_off)
    assert not decision.allowed
    assert decision.rule == "students keep their camera on to keep speaking"
    # Teachers may speak with the camera off.
    assert decide(policies, "publish:audio", TEACHER, CLASS, long_off).allowed


def test_education_teachers_moderate_students_do_not() -> None:
    assert decide(pack("education"), "moderate", TEACHER, CLASS).allowed
    decision = decide(pack("education"), "moderate", STUDENT, CLASS)
    assert not decision.allowed and decision.rule == "only teachers moderate"


# --- finance
DEAL = Resource("bank", "deal-room", frozenset({"confidential"}))
LOBBY = Resource("bank", "lobby")
TRADER = Subject("trader", "bank", ALL, mfa=2)


def test_finance_confidential_needs_mfa_2() -> None:
    assert decide(pack("finance"), "join", TRADER, DEAL).allowed
    weak = Subject("trader", "bank", ALL, mfa=1)
    decision = decide(pack("finance"), "join", weak, DEAL)
    assert not decision.allowed and decision.reason == "confidential rooms need mfa >= 2"
    assert decide(pack("finance"), "join", weak, LOBBY).allowed


def test_finance_confidential_only_in_business_hours_and_says_until_when() -> None:
    inside = decide(pack("finance"), "join", TRADER, DEAL)
    assert (
        inside.changes_at
        == datetime.datetime.fromisoformat("2026-11-30T18:00:00+01:00").timestamp()
    )
    evening = datetime.datetime.fromisoformat("2026-11-30T19:00:00+01:00").timestamp()
    assert not decide(pack("finance"), "join", TRADER, DEAL, Context(evening)).allowed
    saturday = datetime.datetime.fromisoformat("2026-12-05T10:00:00+01:00").timestamp()
    assert not decide(pack("finance"), "join", TRADER, DEAL, Context(saturday)).allowed
    assert decide(pack("finance"), "join", TRADER, LOBBY, Context(saturday)).allowed


def test_finance_joins_and_transfers_are_audited_with_the_counterparty() -> None:
    assert decide(pack("finance"), "join", TRADER, DEAL).obligations == ("audit_counterparty",)
    transfer = Context(MONDAY_10, counterparty_identity="client", counterparty_tenant="bank")
    decision = decide(pack("finance"), "send_file", TRADER, DEAL, transfer)
    assert decision.allowed and decision.obligations == ("audit_counterparty",)
    assert decide(pack("finance"), "subscribe", TRADER, DEAL).obligations == ()
