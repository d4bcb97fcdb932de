"""Ice breakers and the persistent menu: the config's against Meta's, and pushing the
difference (``instaset workflows apply``).

Contract:
- :func:`diff` is pure: from what Meta has (the locales :meth:`GraphClient.messenger_profile`
  returns) and what the config wants, one :class:`ProfileChange` per field. A field the config
  leaves out (None) is not managed: Meta's stays as it is. An empty list means "none":
  Meta's is deleted.
- :func:`apply_profile` reads Meta's, computes the diff, and unless ``dry_run`` sets each
  changed field (or deletes it) for the account. Nothing is sent for a field already equal.
- Only the ``default`` locale is managed; other locales Meta holds count as a difference
  (setting the field replaces them all, as Meta does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instaset.errors import InstasetError
from instaset.graph import GraphClient

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.daemon import Runtime

ICE_BREAKERS = "ice_breakers"
MENU = "persistent_menu"

IceBreakerItem = tuple[str, str]  # (question, payload)
MenuItem = tuple[str, str, str]  # (type "postback" | "web_url", title, payload or url)


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """One field: what Meta has and what the config wants (items of the default locale;
    ``foreign_locales``: other locales Meta has, which setting the field removes)."""

    field: str
    current: tuple[tuple[str, ...], ...]
    wanted: tuple[tuple[str, ...], ...] | None  # None: the config does not manage it
    foreign_locales: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        if self.wanted is None:
            return False
        return self.current != self.wanted or bool(self.foreign_locales)

    def lines(self) -> list[str]:
        """The change as ``-``/``+`` lines (unchanged items indented), for the terminal."""
        label = "ice breaker" if self.field == ICE_BREAKERS else "menu item"
        if self.wanted is None:
            return [f"  {self.field}: not in the config (left as it is on Instagram)"]
        if not self.changed:
            return [f"  {self.field}: up to date ({len(self.current)} {label}s)"]
        out = [f"  {self.field}:"]
        for locale in self.foreign_locales:
            out.append(f"    - locale {locale} (removed: only the default locale is managed)")
        for item in self.current:
            if item not in self.wanted:
                out.append(f"    - {_show(self.field, item)}")
        for item in self.wanted:
            mark = " " if item in self.current else "+"
            out.append(f"    {mark} {_show(self.field, item)}")
        if not self.wanted:
            out.append(f"    (all {label}s removed)")
        return out


def _show(field: str, item: tuple[str, ...]) -> str:
    if field == ICE_BREAKERS:
        return f"{item[0]!r} -> {item[1]}"
    kind, title, value = item
    return f"{title!r} -> {value}" if kind == "postback" else f"{title!r} -> link {value}"


def _default_items(
    locales: Sequence[Mapping[str, object]], field: str
) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    items: list[tuple[str, ...]] = []
    foreign: list[str] = []
    for loc in locales:
        name = str(loc.get("locale") or "default")
        if name != "default":
            foreign.append(name)
            continue
        actions = loc.get("call_to_actions")
        for action in actions if isinstance(actions, list) else []:
            if not isinstance(action, Mapping):
                continue
            if field == ICE_BREAKERS:
                items.append((str(action.get("question") or ""), str(action.get("payload") or "")))
            else:
                kind = str(action.get("type") or "postback")
                value = action.get("url") if kind == "web_url" else action.get("payload")
                items.append((kind, str(action.get("title") or ""), str(value or "")))
    return tuple(items), tuple(foreign)


def diff(
    current: Mapping[str, Sequence[Mapping[str, object]]],
    ice_breakers: Sequence[IceBreakerItem] | None,
    menu: Sequence[MenuItem] | None,
) -> list[ProfileChange]:
    """``current``: field -> Meta's locales. See the module docstring."""
    changes = []
    for field, wanted in ((ICE_BREAKERS, ice_breakers), (MENU, menu)):
        items, foreign = _default_items(current.get(field, ()), field)
        changes.append(ProfileChange(
            field, items, None if wanted is None else tuple(tuple(w) for w in wanted),
            foreign if wanted is not None else (),
        ))
    return changes


async def apply_profile(
    graph: GraphClient, account_id: str, token: str, *,
    ice_breakers: Sequence[IceBreakerItem] | None, menu: Sequence[MenuItem] | None,
    dry_run: bool,
) -> list[ProfileChange]:
    """Read Meta's, diff, and unless ``dry_run`` push each changed field. Raises the
    GraphClient's errors (a token to renew, a permission missing) unchanged."""
    current = {
        field: await graph.messenger_profile(account_id, field, token=token)
        for field, wanted in ((ICE_BREAKERS, ice_breakers), (MENU, menu)) if wanted is not None
    }
    changes = diff(current, ice_breakers, menu)
    if dry_run:
        return changes
    for change in changes:
        if not change.changed or change.wanted is None:
            continue
        if not change.wanted:
            await graph.delete_messenger_profile(account_id, [change.field], token=token)
        elif change.field == ICE_BREAKERS:
            await graph.set_ice_breakers(
                account_id, [(q, p) for q, p in change.wanted], token=token)
        else:
            await graph.set_persistent_menu(account_id, [
                {"type": kind, "title": title, "url": value} if kind == "web_url"
                else {"type": kind, "title": title, "payload": value}
                for kind, title, value in change.wanted
            ], token=token)
    return changes


def wanted(config: Config) -> tuple[list[IceBreakerItem] | None, list[MenuItem] | None]:
    """The config's ice breakers and menu as :func:`diff` takes them (None: not managed)."""
    ice = (None if config.ice_breakers is None
           else [(b.question, b.payload) for b in config.ice_breakers])
    menu = (None if config.menu is None else [
        ("web_url", m.title, m.url) if m.url is not None else ("postback", m.title, m.payload or "")
        for m in config.menu])
    return ice, menu


async def apply_config(rt: Runtime, account_id: str, *, dry_run: bool) -> list[ProfileChange]:
    """``instaset workflows apply`` for one account, on a runtime (its Graph client and
    tokens). An :class:`InstasetError` when the config manages neither field or the account
    has no token."""
    ice, menu = wanted(rt.config)
    if ice is None and menu is None:
        raise InstasetError("the config has no ice_breakers or menu section: nothing to apply"
                            " (see config.example.yaml)")
    token = await rt.tokens.token(account_id)
    if not token:
        raise InstasetError(f"no access token stored for account {account_id}; run"
                            " `instaset connect`")
    return await apply_profile(rt.graph, account_id, token, ice_breakers=ice, menu=menu,
                               dry_run=dry_run)
