"""``instaset demo`` and ``instaset simulate``."""

from __future__ import annotations

import json

import typer

import instaset.cli.app as cli_app
from instaset.cli.app import STATE, app, handle_errors, run_async, sub_app

# The demo, the daemon, the simulator (aiohttp) and the config are imported inside the
# commands: `instaset --help` must not pay for them (see instaset/cli/app.py).

simulate_app = sub_app(help="Send Meta-shaped webhooks to a running instaset.",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@app.command()
@handle_errors
def demo() -> None:
    """Play a scripted scene through the real pipeline against the built-in sandbox.

    It runs on its own embedded config (config.example.yaml's workflows, a throwaway
    database), never the creator's: a --config given is said to be unused, not read."""
    from instaset.demo import play

    if STATE.config_path is not None:
        typer.echo(f"note: the demo runs on its own embedded copy of config.example.yaml; "
                   f"the file you gave ({STATE.config_path}) is not read", err=True)

    raise typer.Exit(run_async(play)(cli_app.out_console))


def _simulate(kind: str, user: str, text: str, media: str | None, url: str | None,
              title: str | None = None) -> None:
    from instaset.config import load_config
    from instaset.simulate import daemon_signing, postback_title, simulate

    config = load_config(STATE.config_path)
    base = url or f"http://127.0.0.1:{config.server.port}"
    if kind == "postback" and title is None:
        title = postback_title(config, text)
    # A daemon in sandbox mode signs with its own secret; otherwise simulate signs with the
    # secret that daemon accepts, looked up (secret store included) only when needed.
    result = run_async(simulate)(
        base, kind, user, text, media=media, signing=lambda: daemon_signing(config),
        account_id=config.sandbox.account_id, title=title,
    )
    typer.echo(json.dumps(result))


@simulate_app.command("dm")
@handle_errors
def simulate_dm(
    user: str = typer.Argument(..., help="Username or Instagram-scoped id of the sender."),
    text: str = typer.Argument(..., help="The message text."),
    url: str | None = typer.Option(
        None, help="Base URL of the daemon (default: http://127.0.0.1:<server.port>)."),
) -> None:
    """A user sends a DM."""
    _simulate("dm", user, text, None, url)


@simulate_app.command("comment")
@handle_errors
def simulate_comment(
    user: str = typer.Argument(..., help="Username or Instagram-scoped id of the commenter."),
    text: str = typer.Argument(..., help="The comment text."),
    media: str = typer.Option("17900000000000001", "--media", help="Media id commented on."),
    url: str | None = typer.Option(
        None, help="Base URL of the daemon (default: http://127.0.0.1:<server.port>)."),
) -> None:
    """A user comments on a post or reel."""
    _simulate("comment", user, text, media, url)


@simulate_app.command("postback")
@handle_errors
def simulate_postback(
    user: str = typer.Argument(..., help="Username or Instagram-scoped id of who taps."),
    payload: str = typer.Argument(
        ..., help="The payload the tapped ice breaker, menu item or button sends."),
    title: str | None = typer.Option(
        None, help="The button's title (default: the config's ice-breaker question or menu "
                   "title with that payload, else the payload)."),
    url: str | None = typer.Option(
        None, help="Base URL of the daemon (default: http://127.0.0.1:<server.port>)."),
) -> None:
    """A user taps an ice breaker, a persistent-menu item or a postback button (this opens
    the 24 h messaging window, as a DM does)."""
    _simulate("postback", user, payload, None, url, title)
