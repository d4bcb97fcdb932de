"""AI replies in the creator's voice, lead facts and booking offers.

- :mod:`.prompt`: the prompt, built by a pure function.
- :mod:`.gemini`: google-genai (async, structured output, AFC off, errors mapped).
- :mod:`.offline`: the deterministic responder used when no key is set.
- :mod:`.guardrails`: when to hand off instead of sending.
- :mod:`.scoring`: lead scores in the database; :mod:`instaset.leads` is the pure scoring.
- :mod:`.feature`: the ``ai_reply`` job and ``install(rt)``.
"""

from instaset.ai.answer import Answer, LeadFact, Usage

__all__ = ["Answer", "LeadFact", "Usage"]
