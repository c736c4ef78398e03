"""The access-control policy engine (docs/POLICY.md).

The language core (lexer, parser, evaluator) is pure: no clock, no files. The
loader reads ``<data-dir>/policies/``; signaling/policy/engine.py applies the
policy to sessions of the server.
"""

from signaling.policy.evaluator import Context, Decision, Resource, Subject, evaluate
from signaling.policy.lexer import PolicyError
from signaling.policy.loader import DEFAULT_POLICY, PolicySet, PolicyStore, ensure_policy_dir
from signaling.policy.parser import parse_policy
from signaling.policy.syntax import ACTIONS, OBLIGATIONS, PolicyFile, Rule

__all__ = [
    "ACTIONS",
    "DEFAULT_POLICY",
    "OBLIGATIONS",
    "Context",
    "Decision",
    "PolicyError",
    "PolicyFile",
    "PolicySet",
    "PolicyStore",
    "Resource",
    "Rule",
    "Subject",
    "ensure_policy_dir",
    "evaluate",
    "parse_policy",
]
