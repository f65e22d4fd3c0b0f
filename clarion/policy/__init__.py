"""Pure decision functions: (facts, time) -> decision. No clock, no I/O, no randomness."""

from clarion.policy.consent import ConsentDecision, ConsentFact, current_consent, decide_consent

__all__ = ["ConsentDecision", "ConsentFact", "current_consent", "decide_consent"]
