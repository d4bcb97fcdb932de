"""YAML for the config loader: a loader that keeps what YAML 1.1 would misread (base-60
numbers, impossible dates) as text or a located error, and helpers that turn a YAML node path
into ``file:line:column`` and a problem line, and the validation context a config file is
checked under. Split from :mod:`instaset.config`; :mod:`instaset.config_errors` uses them to
locate pydantic's errors in the file."""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml

from instaset.engine.values import BARE_CLOCK_NUMBERS, YamlWord


def _where(filename: str, line: int | None, column: int | None = None) -> str:
    """``file:line:column`` (1-based), shortened to what is known."""
    if line is None:
        return filename
    return f"{filename}:{line}:{column}" if column is not None else f"{filename}:{line}"


def at(filename: str, node: yaml.Node | None) -> tuple[int, str]:
    """The sort key (line) and ``file:line:column`` of where ``node`` starts."""
    if node is None:
        return 0, filename
    mark = node.start_mark
    return mark.line + 1, _where(filename, mark.line + 1, mark.column + 1)


def _dotted(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problem(where: str, parts: Sequence[str | int], message: str) -> str:
    path = _dotted(parts)
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def _source(mark: yaml.Mark | None) -> str | None:
    """The text being read, which PyYAML keeps in its marks when it reads a ``str``."""
    buffer = getattr(mark, "buffer", None)
    return buffer.rstrip("\0") if isinstance(buffer, str) else None


def _unclosed_quote(exc: yaml.MarkedYAMLError, filename: str) -> str | None:
    """PyYAML reached the end of the file (or a ``---``) inside a quoted text: report where
    the quote opened, which is the place to fix, not where reading failed."""
    start, end = exc.context_mark, exc.problem_mark
    if exc.context != "while scanning a quoted scalar" or start is None or end is None:
        return None
    text = _source(start)
    quote = text[start.pointer] if text is not None and start.pointer < len(text) else "quote"
    if "document separator" in (exc.problem or ""):
        separator = text[end.pointer:end.pointer + 3] if text is not None else "---"
        before = f"the document separator '{separator}' on line {end.line + 1}"
    else:
        before = "the end of the file"
    return (f"{_where(filename, start.line + 1, start.column + 1)}: invalid YAML: unclosed "
            f"quote starting here: no closing {quote} before {before}; add it where the text "
            "should end")


def _tokens_before(text: str, index: int) -> list[yaml.Token]:
    """The tokens of ``text`` that start before ``index`` (as far as the scanner gets)."""
    loader = ConfigLoader(text)
    tokens: list[yaml.Token] = []
    try:
        while loader.check_token():
            token: yaml.Token = loader.get_token()  # type: ignore[no-untyped-call]  # stubs
            if token.start_mark.index >= index:
                break
            tokens.append(token)
    except yaml.YAMLError:
        # the scanner failed while looking ahead: what it had queued is still good
        tokens += [t for t in loader.tokens if t.start_mark.index < index]
    finally:
        loader.dispose()
    return tokens


def _quote_ended_early(exc: yaml.MarkedYAMLError, filename: str) -> str | None:
    """YAML failed right after a closing quote: most likely that quote was not meant to close.

    - The quoted text spans lines: its opening quote was never closed, and the quote that
      opens the next text closed it (``reply: "Hello`` then ``- reply: "there"`` reads as
      ``"Hello\n- reply: "`` followed by ``there"``). Report the opening quote.
    - It is on one line: a quote inside the text (``'I'm Jess'``). Report that quote.
    A parse error right after a closing quote is the sign in both cases; elsewhere (and when
    the text is not known) this says nothing and PyYAML's own words are kept.
    """
    mark = exc.problem_mark
    if not isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError) or mark is None:
        return None
    text = _source(mark)
    if text is None:
        return None
    before = [t for t in _tokens_before(text, mark.index) if t.end_mark.index <= mark.index]
    last = before[-1] if before else None
    if (
        not isinstance(last, yaml.ScalarToken)
        or last.style not in ('"', "'")
        or last.end_mark.index != mark.index
    ):
        return None
    quote, start, end = last.style, last.start_mark, last.end_mark
    if start.line < end.line:
        return (f"{_where(filename, start.line + 1, start.column + 1)}: invalid YAML: unclosed "
                f"quote starting here? The text runs on to the next {quote} (line {end.line + 1}"
                f", column {end.column}) and YAML cannot read what follows it; add the closing "
                f"{quote} on line {start.line + 1}")
    inside = ("write an apostrophe twice (I''m) or put the text in double quotes" if quote == "'"
              else 'write a quote as \\" or put the text in single quotes')
    return (f"{_where(filename, end.line + 1, end.column)}: invalid YAML: this {quote} ends the "
            f"quoted text started at column {start.column + 1}, and YAML cannot read what "
            f"follows it; inside {quote}...{quote} {inside}")


def yaml_problem(exc: yaml.MarkedYAMLError, filename: str) -> str:
    """One line for a YAML syntax error, at ``file:line:column``: where the fix goes when
    that is known (an unclosed quote), else where PyYAML failed, with what it was reading."""
    quoted = _unclosed_quote(exc, filename) or _quote_ended_early(exc, filename)
    if quoted is not None:
        return quoted
    mark = exc.problem_mark or exc.context_mark
    where = _where(filename, mark.line + 1, mark.column + 1) if mark is not None else filename
    message = exc.problem or exc.context or "unreadable YAML"
    tab = "'\\t'" in message
    if exc.problem and exc.context:
        started = f" started on line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{started})"
    if tab:
        message += "; indent with spaces: YAML does not allow tabs"
    return f"{where}: invalid YAML: {message}"


def reader_problem(exc: yaml.reader.ReaderError, text: str, filename: str) -> str:
    """A character YAML refuses anywhere in the file (NUL, form feed, other control
    characters), located by its position in ``text``."""
    pos = exc.position
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = exc.character
    code = char if isinstance(char, int) else (ord(char) if len(char) == 1 else 0)
    return (f"{_where(filename, line, column)}: invalid YAML: character U+{code:04X} is not "
            "allowed (an invisible control character? delete it; inside double quotes "
            f"write it as \\u{code:04X})")


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class ConfigLoader(yaml.SafeLoader):
    """``SafeLoader`` with three changes for config files:

    - YAML 1.1's base-60 numbers are plain strings: an unquoted ``18:00`` stays ``"18:00"``
      (not the integer 1080), so a time of day reads as written and a mistake in one is
      reported as written (``'25:00'``, not ``1500``).
    - A date-like value that is not a real date (``2024-02-30``) is a YAML error at its
      line and column, not a ``ValueError`` from deep inside the constructor.
    - An unquoted boolean (``yes``, ``on``, ``off``, ``true``...) is a
      :class:`~instaset.engine.values.YamlWord`: the word as written, with its truth. The
      models read it as text in a text position (``keywords: [on]`` is the keyword "on",
      not "Yes") and as true or false in a yes/no one.
    """


VALIDATION_CONTEXT = {BARE_CLOCK_NUMBERS: False}
"""Validation context of a config file: :class:`ConfigLoader` keeps ``18:00`` a string, so
an int where a time of day goes is a bare number (``from: 9``), refused with a hint."""


def _no_base60(regexp: re.Pattern[str]) -> re.Pattern[str]:
    # the resolvers match the whole scalar: refusing any ':' drops only the base-60 forms
    return re.compile(r"(?=[^:]*\Z)" + regexp.pattern, regexp.flags)


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, _no_base60(rx) if tag in (_INT_TAG, _FLOAT_TAG) else rx)
            for tag, rx in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError) as exc:
        raise yaml.constructor.ConstructorError(
            None, None,
            f"{node.value!r} is not a real date ({exc}); put it in quotes if it is text",
            node.start_mark,
        ) from None


ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _construct_bool_word(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    return YamlWord(loader.construct_scalar(node))


ConfigLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool_word)


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def duplicate_keys(root: yaml.Node | None, filename: str) -> list[tuple[int, str]]:
    """Every key that appears twice in one mapping (YAML loaders silently keep the last)."""
    found: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, parts: list[str | int]) -> None:
        if id(node) in seen_nodes:  # aliases share nodes; also guards recursive anchors
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = _key_text(key_node)
                line, where = at(filename, key_node)
                if key in first_line:
                    message = f"duplicate key '{key}' (first defined on line {first_line[key]})"
                    found.append((line, problem(where, parts, message)))
                else:
                    first_line[key] = line
                walk(value_node, [*parts, key])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, [*parts, i])

    if root is not None:
        walk(root, [])
    return found


def locate(
    root: yaml.Node | None, loc: Sequence[str | int]
) -> tuple[list[str | int], yaml.Node | None, yaml.Node | None]:
    """Follow a pydantic ``loc`` through the node tree. Returns the path that exists in the
    YAML, the deepest node reached and the key node of the last mapping step. Elements that
    do not exist in the YAML (union tags, missing keys) are skipped."""
    parts: list[str | int] = []
    node, key_node = root, None
    for item in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(item, str):
            # the last matching key wins, as in the constructed dict (merge keys come first)
            pairs = [(k, v) for k, v in node.value if _key_text(k) == item]
            if pairs:
                key_node, node = pairs[-1]
                parts.append(item)
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(item, int)
            and 0 <= item < len(node.value)
        ):
            node, key_node = node.value[item], None
            parts.append(item)
    return parts, node, key_node
