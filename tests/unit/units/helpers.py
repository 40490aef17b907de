"""Reading generated units back: our own INI reading for the fixture assertions, and systemd's own
parser (``systemd --test`` dumps the unit as the manager loaded it) for what systemd understands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VENV_PODPLAY = Path(sys.executable).parent / "podplay"
SYSTEMD = "/lib/systemd/systemd"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section → key → values, in order (a key may repeat). Comments and blank lines skipped."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"line {n} outside a section: {line!r}"
        assert "=" in line, f"line {n} is not key=value: {line!r}"
        key, value = line.split("=", 1)
        section.setdefault(key, []).append(value)
    return out


def verify(unit_files: list[Path], *, user: bool = False) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` works offline on unit files; --man=no because Documentation= may
    name pages this host does not have installed. Nothing here is filtered: on this host (systemd
    252, not PID 1) verify prints nothing for a good unit, so any output is a finding.

    ``user``: ``verify --user``, with a user manager's unit search path; it needs a runtime
    directory of the user's and refuses root, so it runs as nobody on readable copies."""
    if not user:
        return subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, unit_files)],
                              capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="pp-units-") as tmp:
        os.chmod(tmp, 0o755)
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        copies = []
        for f in unit_files:
            shutil.copy(f, Path(tmp) / f.name)
            os.chmod(Path(tmp) / f.name, 0o644)
            copies.append(str(Path(tmp) / f.name))
        cmd = ["systemd-analyze", "verify", "--user", "--man=no", *copies]
        if os.geteuid() == 0:
            os.chown(runtime, 65534, 65534)
            cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "XDG_RUNTIME_DIR": str(runtime)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
    # The copies' directory is not the caller's: name the caller's files in what verify says.
    for f in unit_files:
        proc.stdout = proc.stdout.replace(str(Path(tmp) / f.name), str(f))
        proc.stderr = proc.stderr.replace(str(Path(tmp) / f.name), str(f))
    return proc


def _split_command_line(text: str) -> list[str]:
    """Words of a "Command Line:" in systemd's dump: double quotes, backslash escapes."""
    words, cur, i, quoted, have = [], [], 0, False, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
            have = True
            continue
        if c == '"':
            quoted = not quoted
            have = True
        elif c == " " and not quoted:
            if have:
                words.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        words.append("".join(cur))
    return words


def _substitute(word: str) -> str:
    """What systemd's variable substitution does to a word of a unit that sets no variables we
    use: ``$$`` is a literal ``$``; a lone ``$`` would start a substitution, which a generated
    unit must never ask for."""

    def one(m: re.Match) -> str:
        assert m.group() == "$$", f"unescaped $ in {word!r}: systemd would substitute a variable"
        return "$"

    return re.sub(r"\$\$|\$", one, word)


def systemd_load(unit_dir: Path, unit: str) -> dict[str, list]:
    """The unit as systemd's manager loads it: ``systemd --test --system`` (which refuses to run as
    root, hence an unprivileged user) with ``SYSTEMD_UNIT_PATH`` pointing at ``unit_dir``.

    Returns key → list of values for the unit's block of the dump; Exec* keys map to lists of argv,
    with ``$$`` already turned into ``$`` as systemd does when it runs the command.
    """
    cmd = [SYSTEMD, "--test", "--system", f"--unit={unit}", "--no-pager"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    # A copy the unprivileged user can read (pytest's tmp_path lives in a 0700 directory).
    with tempfile.TemporaryDirectory(prefix="pp-units-") as tmp:
        os.chmod(tmp, 0o755)
        for f in Path(unit_dir).iterdir():
            shutil.copy(f, Path(tmp) / f.name)
            os.chmod(Path(tmp) / f.name, 0o644)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
               "SYSTEMD_UNIT_PATH": f"{tmp}:"}  # the trailing ':' keeps the default search path
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, f"systemd --test failed:\n{proc.stderr}"
    block: list[str] = []
    inside = False
    for line in proc.stdout.splitlines():
        if line.startswith("\t-> Unit "):
            inside = line == f"\t-> Unit {unit}:"
            continue
        if inside:
            block.append(line)
    assert block, f"{unit} not in systemd's dump:\n{proc.stdout[:2000]}"
    out: dict[str, list] = {}
    current_exec = None
    for line in block:
        m = re.match(r"^\t\t-> (Exec\w+):$", line)
        if m:
            current_exec = m.group(1)
            continue
        m = re.match(r"^\t\t\tCommand Line: (.*)$", line)
        if m and current_exec:
            words = _split_command_line(m.group(1))
            argv = words[:1] + [_substitute(w) for w in words[1:]]  # the executable is never substituted
            out.setdefault(current_exec, []).append(argv)
            continue
        m = re.match(r"^\t\t([A-Za-z ]+): (.*)$", line)
        if m:
            current_exec = None
            value = re.sub(r" \((origin|destination)-[^)]*\)$", "", m.group(2))
            out.setdefault(m.group(1), []).append(value)
    assert out.get("Unit Load State") == ["loaded"], f"systemd did not load {unit}: {out.get('Unit Load State')}"
    return out
