"""docs/setup.md: every link into it resolves, and every doctor check has its entry."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "docs" / "setup.md"
DOCTOR = ROOT / "instaset" / "doctor.py"
# Shown only when the config does not load; the config entry covers it.
NO_ENTRY = {"everything else"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            base = slug(m.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def test_slug_follows_github() -> None:
    assert slug("Setup: Meta app") == "setup-meta-app"
    assert slug("Step 3: the Instagram app ID and secret") == (
        "step-3-the-instagram-app-id-and-secret")
    assert slug("doctor: public URL") == "doctor-public-url"


def test_links_inside_the_guide_resolve() -> None:
    text = SETUP.read_text("utf-8")
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets, "the guide links to its own sections"
    assert targets <= anchors(text), sorted(targets - anchors(text))


def test_readme_links_into_the_guide_resolve() -> None:
    targets = set(re.findall(r"docs/setup\.md#([\w-]+)", (ROOT / "README.md").read_text("utf-8")))
    missing = targets - anchors(SETUP.read_text("utf-8"))
    assert not missing, sorted(missing)


def test_every_doctor_reference_exists_in_the_guide() -> None:
    refs = set(re.findall(r'_ref\("([\w-]+)"\)', DOCTOR.read_text("utf-8")))
    assert refs, "doctor points its fixes at sections"
    missing = refs - anchors(SETUP.read_text("utf-8"))
    assert not missing, f"docs/setup.md lacks the sections {sorted(missing)}"


def test_every_doctor_check_has_a_troubleshooting_entry() -> None:
    # The check's name is Check()'s first argument; "token {name}" -> "token".
    pattern = r'Check\(\s*f?"([A-Za-z][A-Za-z ]*?)(?: \{|")'
    names = set(re.findall(pattern, DOCTOR.read_text("utf-8")))
    assert {"config", "app secret", "public URL"} <= names
    doc = anchors(SETUP.read_text("utf-8"))
    missing = sorted(n for n in names - NO_ENTRY if f"doctor-{slug(n)}" not in doc)
    assert not missing, f"add a '### doctor: NAME' entry to docs/setup.md for {missing}"
