"""The pure workflow engine: the YAML language (:mod:`.model`), trigger matching,
conditions, templating, and :func:`decide` / :func:`resume`.

Nothing here does I/O or reads the clock; it imports no I/O module and not the config.
"""

from instaset.engine.actions import (
    Action,
    Button,
    GenerateAIReply,
    HandOff,
    Notify,
    OfferBooking,
    PrivateReply,
    PublicReply,
    QuickReplySpec,
    RemoveTag,
    Schedule,
    ScoreLead,
    SendButtons,
    SendMedia,
    SendTemplate,
    SendText,
    SetField,
    SetStage,
    SetTag,
    TemplateCard,
    TypingOn,
    action_from_dict,
    is_message,
)
from instaset.engine.decide import Decision, decide, needs_follower, resume, validate_answer
from instaset.engine.model import (
    Duration,
    MatchMode,
    Workflow,
    check_workflow_names,
    parse_duration,
)
from instaset.engine.settings import EngineSettings
from instaset.engine.state import Awaiting, ConversationState, FrozenMap
from instaset.engine.templating import LINK_TOKEN_RE, link_names, placeholders, render
from instaset.engine.triggers import fold, match_keywords

__all__ = [
    "LINK_TOKEN_RE",
    "Action",
    "Awaiting",
    "Button",
    "ConversationState",
    "Decision",
    "Duration",
    "EngineSettings",
    "FrozenMap",
    "GenerateAIReply",
    "HandOff",
    "MatchMode",
    "Notify",
    "OfferBooking",
    "PrivateReply",
    "PublicReply",
    "QuickReplySpec",
    "RemoveTag",
    "Schedule",
    "ScoreLead",
    "SendButtons",
    "SendMedia",
    "SendTemplate",
    "SendText",
    "SetField",
    "SetStage",
    "SetTag",
    "TemplateCard",
    "TypingOn",
    "Workflow",
    "action_from_dict",
    "check_workflow_names",
    "decide",
    "fold",
    "is_message",
    "link_names",
    "match_keywords",
    "needs_follower",
    "parse_duration",
    "placeholders",
    "render",
    "resume",
    "validate_answer",
]
