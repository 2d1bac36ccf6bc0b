"""``sovereign-tui keys`` and the authorized_keys format it writes and the console reads."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import asyncssh
import pytest

from sovereign_tui.cli import main
from sovereign_tui.console.authkeys import (
    AuthorizedKeysFile,
    certificate_role,
    parse_authorized_keys,
    parse_options,
)

FOREIGN = (
    "# managed by hand: keep this comment\n"
    'from="10.0.0.0/8",sovereign-role="viewer",sovereign-name="wall" {wall}\n'
    "not a key line at all\n"
)


def pubkey(directory: Path, name: str) -> tuple[asyncssh.SSHKey, Path]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{name}@laptop")
    path = directory / f"{name}.pub"
    path.write_bytes(key.export_public_key())
    return key, path


def keys(*args: str) -> list[str]:
    return ["keys", *args]


@pytest.fixture
def ak(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "authorized_keys"


def test_add_list_remove(ak: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, alice_pub = pubkey(tmp_path, "alice")
    _, ca_pub = pubkey(tmp_path, "corp-ca")
    assert (
        main(
            keys("add", str(alice_pub), "--name", "alice", "--role", "operator", "--authorized-keys", str(ak))
        )
        == 0
    )
    assert (
        main(
            keys(
                "add", str(ca_pub), "--name", "corp", "--role", "admin", "--ca", "--authorized-keys", str(ak)
            )
        )
        == 0
    )
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    parsed = parse_authorized_keys(ak.read_text())
    assert parsed.problems == ()
    assert [(e.name, e.role, e.cert_authority) for e in parsed.entries] == [
        ("alice", "operator", False),
        ("corp", "admin", True),
    ]
    assert parsed.for_key(alice) is parsed.entries[0]
    capsys.readouterr()
    assert main(keys("list", "--authorized-keys", str(ak))) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "ROLE", "KIND", "FINGERPRINT"]
    assert listed[1].split() == ["alice", "operator", "key", alice.get_fingerprint()]
    assert listed[2].split()[:3] == ["corp", "admin", "ca"]
    assert main(keys("remove", "alice", "--authorized-keys", str(ak))) == 0
    assert [e.name for e in parse_authorized_keys(ak.read_text()).entries] == ["corp"]


def test_changes_keep_every_other_line_and_replace_the_file_whole(ak: Path, tmp_path: Path) -> None:
    wall, _ = pubkey(tmp_path, "wall")
    ak.parent.mkdir()
    original = FOREIGN.format(wall=wall.export_public_key().decode().strip())
    ak.write_text(original)
    ak.chmod(0o600)
    inode = ak.stat().st_ino
    _, bob_pub = pubkey(tmp_path, "bob")
    assert (
        main(keys("add", str(bob_pub), "--name", "bob", "--role", "viewer", "--authorized-keys", str(ak)))
        == 0
    )
    after_add = ak.read_text()
    assert after_add.startswith(original)
    assert ak.stat().st_ino != inode, "the file was rewritten in place"
    assert main(keys("remove", "bob", "--authorized-keys", str(ak))) == 0
    assert ak.read_text() == original
    assert sorted(p.name for p in ak.parent.iterdir()) == ["authorized_keys", "authorized_keys.lock"]


def test_concurrent_adds_all_land(ak: Path, tmp_path: Path) -> None:
    pubs = [pubkey(tmp_path, f"op{i}")[1] for i in range(8)]
    results: list[int] = []

    def add(i: int) -> None:
        args = keys(
            "add", str(pubs[i]), "--name", f"op{i}", "--role", "operator", "--authorized-keys", str(ak)
        )
        results.append(main(args))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 8
    assert sorted(e.name for e in parse_authorized_keys(ak.read_text()).entries) == [
        f"op{i}" for i in range(8)
    ]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            "alice",
            ["add", "{alice_pub}", "--name", "alice", "--role", "viewer"],
            "a key named 'alice' exists",
        ),
        ("alice", ["add", "{alice_pub}", "--name", "other", "--role", "viewer"], "already listed as 'alice'"),
        (
            "",
            ["add", "{alice_key}", "--name", "x", "--role", "viewer"],
            "is a private key; give the public one",
        ),
        ("", ["add", "{missing}", "--name", "x", "--role", "viewer"], "no such file"),
        ("", ["add", "{alice_pub}", "--name", "bad name", "--role", "viewer"], "use letters, digits"),
        ("", ["add", "{alice_pub}", "--name", "x", "--role", "root"], "invalid choice: 'root'"),
        ("", ["remove", "nobody"], "no key named 'nobody'"),
    ],
)
def test_mistakes_are_one_line(
    ak: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, args: list[str], message: str
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    alice_key = tmp_path / "id_alice"
    alice_key.write_bytes(key.export_private_key())
    alice_pub = tmp_path / "id_alice.pub"
    alice_pub.write_bytes(key.export_public_key())
    if setup:
        assert (
            main(
                keys(
                    "add", str(alice_pub), "--name", "alice", "--role", "admin", "--authorized-keys", str(ak)
                )
            )
            == 0
        )
    before = ak.read_text() if ak.exists() else None
    capsys.readouterr()
    filled = [a.format(alice_pub=alice_pub, alice_key=alice_key, missing=tmp_path / "nope.pub") for a in args]
    assert main(keys(*filled, "--authorized-keys", str(ak))) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (ak.read_text() if ak.exists() else None) == before


def test_lines_the_console_cannot_use_are_skipped_with_the_reason(tmp_path: Path) -> None:
    k = [asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip() for _ in range(6)]
    text = "\n".join(
        [
            k[0],  # no role
            f'sovereign-role="root" {k[1]}',
            f'cert-authority,principals="ops",sovereign-role="admin" {k[2]}',
            f'sovereign-role="admin",sovereign-name="a\\"b" {k[3]}',
            f'sovereign-role="operator",sovereign-name="ok" {k[4]}',
            f'sovereign-role="viewer",sovereign-name="ok" {k[5]}',  # name taken
        ]
    )
    parsed = parse_authorized_keys(text, "ak")
    assert [e.name for e in parsed.entries] == ["ok"]
    assert [p.split(":")[1] for p in parsed.problems] == ["1", "2", "3", "4", "6"]
    assert "no sovereign-role option" in parsed.problems[0]
    assert "unknown role 'root'" in parsed.problems[1]
    assert "principals= on a cert-authority line is not supported" in parsed.problems[2]
    assert "name taken" not in parsed.problems[4] and "is used by an earlier line" in parsed.problems[4]


def test_options_follow_openssh_quoting() -> None:
    assert parse_options('restrict,from="10.0.0.1,10.0.0.2",sovereign-name="x\\"y"') == {
        "restrict": True,
        "from": ["10.0.0.1,10.0.0.2"],
        "sovereign-name": ['x"y'],
    }


def test_certificate_roles_are_capped_by_the_ca_line(tmp_path: Path) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    entry = parse_authorized_keys(f'cert-authority,sovereign-role="operator" {ca}').entries[0]
    assert certificate_role(entry, ["alice"]) == "viewer"
    assert certificate_role(entry, ["alice", "sovereign-role=operator"]) == "operator"
    assert certificate_role(entry, ["alice", "sovereign-role=admin"]) == "operator"
    assert (
        certificate_role(entry, ["alice", "sovereign-role=viewer", "sovereign-role=operator"]) == "operator"
    )


def test_the_file_is_reread_when_it_changes_and_ignored_when_others_may_write_it(
    ak: Path, tmp_path: Path
) -> None:
    watched = AuthorizedKeysFile(ak)
    assert watched.current().entries == ()
    _, pub = pubkey(tmp_path, "carol")
    assert (
        main(keys("add", str(pub), "--name", "carol", "--role", "viewer", "--authorized-keys", str(ak))) == 0
    )
    assert [e.name for e in watched.current().entries] == ["carol"]
    os.chmod(ak, 0o666)
    assert watched.current().entries == ()
