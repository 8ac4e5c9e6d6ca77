"""Bad claim files, each one error naming the file (and line), never a traceback or a hang; the rest still load.

Also the engine's own static checks of a claim: citations (note, title, quote) and declared config keys.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from claimfiles import NOTE, SOURCE, claim_yaml, write_claims, write_note
from click.testing import CliRunner

from reprolab.claims.loader import ClaimFileError, load_claim_file, load_claims
from reprolab.cli import cli

GOOD = SOURCE + "claims:\n" + claim_yaml("fine")

BAD_BYTES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin1": (GOOD.replace("a quoted sentence", "a quoted sentence").encode() + b"# caf\xe9\n", "not UTF-8"),
    "utf16": (GOOD.encode("utf-16"), "UTF-16"),
    "control": (GOOD.encode() + b"# bell \x07 here\n", "control character 0x07"),
}

ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _one_error(path: Path, expected: str) -> ClaimFileError:
    with pytest.raises(ClaimFileError) as info:
        load_claim_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert expected in message, message
    return info.value


@pytest.mark.parametrize("kind", sorted(BAD_BYTES))
def test_undecodable_file_is_one_error_naming_it(expectations: Path, kind: str) -> None:
    data, expected = BAD_BYTES[kind]
    path = expectations / f"{kind}.yaml"
    path.write_bytes(data)
    _one_error(path, expected)


def test_alias_bomb_is_refused_quickly(expectations: Path) -> None:
    path = expectations / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    start = time.perf_counter()
    _one_error(path, "alias bomb")
    assert time.perf_counter() - start < 2.0


def test_small_aliases_still_allowed(expectations: Path) -> None:
    text = (
        SOURCE
        + "claims:\n"
        + claim_yaml("one", config="&base {value: 1.0}")
        + claim_yaml("two", config="*base")
    )
    path = expectations / "aliases.yaml"
    path.write_text(text)
    write_note(expectations.parent)
    assert [c.id for c in load_claim_file(path)] == ["one", "two"]


def test_unreadable_file_is_one_error(expectations: Path) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml("fine"))
    path.chmod(0)
    try:
        if path.exists() and not _readable(path):
            _one_error(path, "cannot read")
    finally:
        path.chmod(0o644)


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True  # running as root: permissions do not bite


def test_every_bad_kind_at_once_others_still_checked_by_cli(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    expectations = tmp_path / "expectations"
    expectations.mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    write_claims(expectations, "good.yaml", claim_yaml("fine"))
    for kind, (data, _) in BAD_BYTES.items():
        (expectations / f"{kind}.yaml").write_bytes(data)
    (expectations / "bomb.yaml").write_text(ALIAS_BOMB)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for name in [*BAD_BYTES, "bomb"]:
        assert f"{name}.yaml" in result.output
    assert "1 claims: 1 reproduced" in result.output


# --- citations -------------------------------------------------------------------------------------------------


def test_citation_checks(expectations: Path) -> None:
    notes = write_note(expectations.parent).parent
    good = write_claims(expectations, "good.yaml", claim_yaml("fine"))
    assert len(load_claim_file(good, notes=notes)) == 1
    write_claims(
        expectations, "b.yaml", claim_yaml("b"), source='source: {document: 999_nope.txt, title: "t"}\n'
    )
    write_claims(expectations, "c.yaml", claim_yaml("c").replace("a quoted sentence", "made up words"))
    write_claims(
        expectations, "d.yaml", claim_yaml("d"), source=SOURCE.replace("Diagnosis Report", "Something Else")
    )
    claims, errors = load_claims([expectations], notes=notes)
    assert [c.id for c in claims] == ["fine"]
    by_file = {e.path.name: e for e in errors}
    assert by_file["b.yaml"].field == "source.document" and "999_nope.txt" in by_file["b.yaml"].message
    assert by_file["c.yaml"].field == "claims[c].quote" and by_file["c.yaml"].line == 4
    assert by_file["d.yaml"].field == "source.title" and by_file["d.yaml"].line == 1
    assert "quoted sentence" in NOTE.replace("\n  ", " ")  # the helper's quote wraps across lines in the note


# --- declared config keys --------------------------------------------------------------------------------------


def test_unknown_config_key_is_a_load_error(expectations: Path) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml("typo", config="{value: 1.0, vaule: 2.0}"))
    error = _one_error(path, "unknown config key 'vaule'")
    assert error.field == "claims[typo].config.vaule" and "it reads ['value']" in error.message


def test_experiment_without_declared_keys_is_not_checked(expectations: Path) -> None:
    path = write_claims(
        expectations,
        "a.yaml",
        claim_yaml("free", experiment="selftest.undeclared", config="{anything: 1}"),
    )
    assert len(load_claim_file(path)) == 1
