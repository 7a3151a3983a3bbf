#!/usr/bin/env python3
"""Replays the Dockerfile's builder stages without a container engine.

The image build is otherwise checked by nothing that runs in CI: a target
added to Cargo.toml, a file the build reads that the build context leaves
out, or a feature that only a dev-dependency switches on would break
`docker build` unnoticed. This script reads the Dockerfile and performs the
stages the `builder` stage needs, in a temporary folder:

- the build context is the repository's files (`git ls-files`: a clean
  clone's) filtered by .dockerignore with Docker's rules;
- FROM, ARG, WORKDIR and COPY (also `COPY --from=STAGE`) are carried out
  on a folder per stage standing for its file system; a stage FROM an
  image starts empty and the host's Rust toolchain stands in for the
  image's;
- each RUN is split at `&&` and every command must be one this script
  knows (anything else fails the replay, so that a new command cannot go
  unchecked):
    cargo install cargo-chef ...   cargo-chef at that version must be on
                                   PATH (installed here if it is not)
    cargo chef prepare ...         run as written
    cargo chef cook ...            run with --check instead of --release
    cargo build ...                run as `cargo check`, without --release
    cp target/release/... /PATH    skipped, as is running /PATH afterwards
                                   (they need the release binary).

Environment set with ENV is not passed to the replayed commands (a type
check does not compile with RUSTFLAGS' code-generation options, and would
only check the dependencies again under another fingerprint). A profile
named by `-Cprofile-use=PATH` in RUSTFLAGS must however exist in the
stage's file system when a cargo command runs: a profile the build context
leaves out would fail `docker build`.

Type checking instead of release builds keeps the replay to about a minute
once dependencies are checked, where a release build with fat LTO takes
over ten on two cores; what can rot (targets, context, lock file, features)
shows up the same way. Cargo's artifacts go to --target-dir (default: the
repository's target/), so dependencies checked by other CI steps with the
same features are reused.

Exit status 0 when every command succeeded.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class ReplayError(Exception):
    pass


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM, and the stages."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        logical.append((start, buf))
        buf = ""
    if buf:
        raise ReplayError("the Dockerfile ends inside a continued line")

    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for n, line in logical:
        keyword, _, args = line.partition(" ")
        ins = Instruction(n, keyword.upper(), args.strip())
        if "<<" in ins.args and ins.keyword in ("RUN", "COPY"):
            raise ReplayError(f"line {n}: heredocs are not supported by the replay")
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform=")]
            if len(words) == 3 and words[1].lower() == "as":
                stages.append(Stage(words[2], words[0]))
            elif len(words) == 1:
                stages.append(Stage(str(len(stages)), words[0]))
            else:
                raise ReplayError(f"line {n}: cannot read FROM {ins.args}")
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return preamble, stages


def expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise ReplayError(f"${name} is not defined")
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def parse_arg(args: str) -> tuple[str, str | None]:
    name, eq, default = args.partition("=")
    return name.strip(), (default.strip().strip('"') if eq else None)


# --- the build context --------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus `**`, as Docker reads .dockerignore."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                raise ReplayError(f".dockerignore: unclosed [ in {pattern!r}")
            cls = pattern[i + 1 : j]
            out += "[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]"
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    path = context / ".dockerignore"
    rules = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negate, pattern_regex(pat)))
    return rules


def included(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; `!` patterns put paths back."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            keep = negate
    return keep


def context_files(context: Path) -> list[str]:
    """The files of a clean clone (tracked, plus new files not ignored by
    git), filtered by .dockerignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=context,
        check=True,
        capture_output=True,
    ).stdout.decode()
    rules = dockerignore(context)
    files = [f for f in out.split("\0") if f and (context / f).is_file()]
    return sorted(f for f in files if included(f, rules))


# --- the replay ---------------------------------------------------------------


class Replay:
    def __init__(self, context: Path, work: Path, target_dir: Path) -> None:
        self.context = context
        self.work = work
        self.target_dir = target_dir
        self.files = context_files(context)
        self.roots: dict[str, Path] = {}
        self.workdirs: dict[str, str] = {}
        self.skipped_outputs: set[str] = set()
        self.commands = 0

    def root_path(self, stage: str, path: str, workdir: str) -> Path:
        absolute = path if path.startswith("/") else os.path.join(workdir, path)
        return self.roots[stage] / os.path.normpath(absolute).lstrip("/")

    def copy(self, stage: str, ins: Instruction, env: dict[str, str]) -> None:
        words = shlex.split(expand(ins.args, env))
        source_stage = None
        while words and words[0].startswith("--"):
            flag = words.pop(0)
            if flag.startswith("--from="):
                source_stage = flag.split("=", 1)[1]
                if source_stage not in self.roots:
                    raise ReplayError(f"line {ins.line}: COPY from unknown stage {source_stage}")
            elif not flag.startswith(("--chown=", "--chmod=", "--link")):
                raise ReplayError(f"line {ins.line}: COPY {flag} is not supported by the replay")
        if len(words) < 2:
            raise ReplayError(f"line {ins.line}: COPY needs a source and a destination")
        *sources, dest = words
        workdir = self.workdirs[stage]
        dest_path = self.root_path(stage, dest, workdir)
        into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
        for src in sources:
            if any(c in src for c in "*?["):
                raise ReplayError(f"line {ins.line}: COPY wildcards are not supported by the replay")
            if source_stage is not None:
                path = self.root_path(source_stage, src, self.workdirs[source_stage])
                if not path.exists():
                    raise ReplayError(f"line {ins.line}: {src} does not exist in stage {source_stage}")
                if path.is_dir():
                    shutil.copytree(path, dest_path, dirs_exist_ok=True)
                else:
                    target = dest_path / path.name if into_dir else dest_path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                continue
            rel = os.path.normpath(src).lstrip("/")
            if rel == ".":
                chosen = self.files
                base = ""
            else:
                chosen = [f for f in self.files if f == rel or f.startswith(rel + "/")]
                base = rel
            if not chosen:
                raise ReplayError(
                    f"line {ins.line}: COPY {src}: not in the build context (see .dockerignore)"
                )
            for f in chosen:
                if f == base:  # a single file
                    target = dest_path / Path(f).name if into_dir else dest_path
                else:
                    target = dest_path / os.path.relpath(f, base or ".")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / f, target)
        print(f"  COPY {ins.args}: done")

    def run(self, stage: str, ins: Instruction, env: dict[str, str]) -> None:
        text = ins.args
        while text.startswith("--"):
            flag, _, text = text.partition(" ")
            if not flag.startswith(("--mount=", "--network=", "--security=")):
                raise ReplayError(f"line {ins.line}: RUN {flag} is not supported by the replay")
            text = text.lstrip()
        if re.search(r"[;|`<>]|\$\(", text):
            raise ReplayError(
                f"line {ins.line}: RUN uses shell syntax beyond `&&`; the replay only runs "
                "commands it knows"
            )
        cwd = self.root_path(stage, ".", self.workdirs[stage])
        cwd.mkdir(parents=True, exist_ok=True)
        for part in text.split("&&"):
            argv = shlex.split(expand(part.strip(), env))
            if argv[:1] == ["cargo"]:
                self.check_profiles(stage, env, ins.line)
            self.command(argv, cwd, ins.line)

    def check_profiles(self, stage: str, env: dict[str, str], line: int) -> None:
        """Fails when RUSTFLAGS names a profile the stage does not hold."""
        for flag in shlex.split(env.get("RUSTFLAGS", "")):
            if flag.startswith("-Cprofile-use="):
                path = flag.split("=", 1)[1]
                if not self.root_path(stage, path, self.workdirs[stage]).is_file():
                    raise ReplayError(
                        f"line {line}: RUSTFLAGS names the profile {path}, which the stage does not hold"
                    )

    def command(self, argv: list[str], cwd: Path, line: int) -> None:
        shown = shlex.join(argv)
        if argv[:3] == ["cargo", "install", "cargo-chef"]:
            version = argv[argv.index("--version") + 1] if "--version" in argv else None
            if version is None:
                raise ReplayError(f"line {line}: pin cargo-chef with --version")
            ensure_cargo_chef(version)
            return
        if argv[:3] == ["cargo", "chef", "prepare"]:
            self.exec(argv, cwd, line, shown)
            return
        if argv[:3] == ["cargo", "chef", "cook"]:
            replayed = [a for a in argv if a != "--release"] + ["--check"]
            self.exec(replayed, cwd, line, shown)
            return
        if argv[:2] == ["cargo", "build"]:
            replayed = ["cargo", "check"] + [a for a in argv[2:] if a != "--release"]
            self.exec(replayed, cwd, line, shown)
            return
        if argv[0] == "cp" and len(argv) == 3 and argv[1].startswith("target/release/"):
            self.skipped_outputs.add(argv[2])
            print(f"  skip (needs the release binary): {shown}")
            return
        if argv[0] in self.skipped_outputs:
            print(f"  skip (needs the release binary): {shown}")
            return
        raise ReplayError(
            f"line {line}: the replay does not know `{shown}`; teach scripts/replay-dockerfile.py"
        )

    def exec(self, argv: list[str], cwd: Path, line: int, shown: str) -> None:
        replayed = shlex.join(argv)
        note = "" if replayed == shown else f"   (as: {replayed})"
        print(f"  RUN {shown}{note}", flush=True)
        env = dict(os.environ, CARGO_TARGET_DIR=str(self.target_dir))
        result = subprocess.run(argv, cwd=cwd, env=env)
        if result.returncode != 0:
            raise ReplayError(f"line {line}: `{replayed}` failed with exit status {result.returncode}")
        self.commands += 1

    def stage(self, stage: Stage, global_args: dict[str, str | None]) -> None:
        print(f"\nstage {stage.name} (FROM {stage.base})", flush=True)
        root = self.work / f"stage-{stage.name}"
        if stage.base in self.roots:
            shutil.copytree(self.roots[stage.base], root, symlinks=True)
            self.workdirs[stage.name] = self.workdirs[stage.base]
        else:
            root.mkdir(parents=True)
            self.workdirs[stage.name] = "/"
        self.roots[stage.name] = root
        env: dict[str, str] = {}
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                name, default = parse_arg(ins.args)
                value = default if default is not None else global_args.get(name)
                if value is not None:
                    env[name] = expand(value, env)
            elif ins.keyword == "ENV":
                name, _, value = ins.args.partition("=")
                env[name.strip()] = expand(value.strip().strip('"'), env)
            elif ins.keyword == "WORKDIR":
                self.workdirs[stage.name] = os.path.join(self.workdirs[stage.name], expand(ins.args, env))
                self.root_path(stage.name, ".", self.workdirs[stage.name]).mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self.copy(stage.name, ins, env)
            elif ins.keyword == "RUN":
                self.run(stage.name, ins, env)
            elif ins.keyword in ("LABEL", "EXPOSE", "USER", "ENTRYPOINT", "CMD"):
                pass
            else:
                raise ReplayError(f"line {ins.line}: {ins.keyword} is not supported by the replay")


def ensure_cargo_chef(version: str) -> None:
    found = subprocess.run(["cargo", "chef", "--version"], capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.split()[-1:] == [version]:
        print(f"  cargo-chef {version} is installed")
        return
    # A debug build installs in a third of the time; cargo-chef's own speed
    # does not matter.
    print(f"  installing cargo-chef {version} (debug build)", flush=True)
    subprocess.run(
        ["cargo", "install", "cargo-chef", "--locked", "--debug", "--version", version], check=True
    )


def needed(stages: list[Stage], target: str) -> list[Stage]:
    by_name = {s.name: s for s in stages}
    if target not in by_name:
        raise ReplayError(f"no stage {target}")
    want: set[str] = set()

    def visit(name: str) -> None:
        if name in want or name not in by_name:
            return
        want.add(name)
        s = by_name[name]
        visit(s.base)
        for ins in s.instructions:
            m = re.match(r"--from=(\S+)", ins.args) if ins.keyword == "COPY" else None
            if m:
                visit(m.group(1))

    visit(target)
    return [s for s in stages if s.name in want]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--context", type=Path, default=REPO)
    parser.add_argument("--stage", default="builder", help="the stage to replay (with the stages it needs)")
    parser.add_argument("--target-dir", type=Path, default=REPO / "target", help="CARGO_TARGET_DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    try:
        preamble, stages = parse(args.dockerfile.read_text())
        global_args: dict[str, str | None] = {}
        for ins in preamble:
            if ins.keyword != "ARG":
                raise ReplayError(f"line {ins.line}: only ARG may come before FROM")
            name, default = parse_arg(ins.args)
            global_args[name] = default
        for s in stages:
            s.base = expand(s.base, {k: v for k, v in global_args.items() if v is not None})
        work = Path(tempfile.mkdtemp(prefix="sluicegate-docker-replay-"))
        try:
            replay = Replay(args.context.resolve(), work, args.target_dir.resolve())
            print(f"build context: {len(replay.files)} files; toolchain: ", end="", flush=True)
            subprocess.run(["cargo", "--version"], check=True)
            for s in needed(stages, args.stage):
                replay.stage(s, global_args)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    except ReplayError as e:
        print(f"replay-dockerfile: {e}", file=sys.stderr)
        return 1
    if replay.commands == 0:
        print("replay-dockerfile: no command was replayed", file=sys.stderr)
        return 1
    print(f"\nreplay-dockerfile: stage {args.stage}: {replay.commands} commands replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
