"""The nlpipe command runs with tcmalloc where it is installed (nlpipe/cpu_allocator.py), and never otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nlpipe import cpu_allocator

REPORT = "import nlpipe.cpu_allocator as a; a.use_tcmalloc(); print(a.loaded_allocator())"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", cpu_allocator.ENV_SWITCH, cpu_allocator._REEXECUTED)}
    return {**env, **extra}


def _allocator_of_fresh_process(**extra: str) -> str:
    out = subprocess.run([sys.executable, "-c", REPORT], env=_clean_env(**extra), capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or cpu_allocator.find_tcmalloc() is None,
                    reason="tcmalloc is not installed (Debian: libtcmalloc-minimal4)")
def test_a_fresh_process_reexecutes_itself_with_tcmalloc_and_the_switch_turns_it_off() -> None:
    assert _allocator_of_fresh_process() == "tcmalloc"
    assert _allocator_of_fresh_process(NLPIPE_ALLOCATOR="system") == "system"


def test_the_command_is_reexecuted_once_with_the_same_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(cpu_allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "nlpipe", "run", "recipe", "x"])
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((path, args, env)))
    for name in ("LD_PRELOAD", cpu_allocator.ENV_SWITCH, cpu_allocator._REEXECUTED):
        monkeypatch.delenv(name, raising=False)
    cpu_allocator.use_tcmalloc()
    [(path, args, env)] = calls
    assert path == sys.executable and args == [sys.executable, "-m", "nlpipe", "run", "recipe", "x"]
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4" and env[cpu_allocator._REEXECUTED] == "1"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40  # no stderr line per large block

    # Not again in the re-executed process, nor over a user's own preloaded allocator, nor when switched off,
    # nor where the library is missing or the system is not Linux.
    for setup in ({cpu_allocator._REEXECUTED: "1"}, {"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"},
                  {cpu_allocator.ENV_SWITCH: "system"}):
        with monkeypatch.context() as m:
            for key, value in setup.items():
                m.setenv(key, value)
            cpu_allocator.use_tcmalloc()
    monkeypatch.setattr(cpu_allocator, "find_tcmalloc", lambda: None)
    cpu_allocator.use_tcmalloc()
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(cpu_allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    cpu_allocator.use_tcmalloc()
    assert len(calls) == 1


def test_a_users_other_preloads_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(cpu_allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append(env))
    monkeypatch.delenv(cpu_allocator._REEXECUTED, raising=False)
    monkeypatch.delenv(cpu_allocator.ENV_SWITCH, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libfaketime.so.1")
    cpu_allocator.use_tcmalloc()
    assert calls[0]["LD_PRELOAD"] == "libtcmalloc_minimal.so.4:/opt/lib/libfaketime.so.1"


@pytest.mark.skipif(not sys.platform.startswith("linux") or cpu_allocator.find_tcmalloc() is None,
                    reason="tcmalloc is not installed (Debian: libtcmalloc-minimal4)")
def test_the_program_entry_reexecutes_but_main_called_from_python_never_does() -> None:
    entry = ("import nlpipe.cli as cli, nlpipe.cpu_allocator as a\n"
             "cli.main = lambda: print(a.loaded_allocator())\n"
             "cli.entry_point()\n")
    out = subprocess.run([sys.executable, "-c", entry], env=_clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tcmalloc"
    # Someone else's program calling `main` (a test runner, a notebook) keeps its own process and allocator.
    embedded = ("import os, sys\n"
                "os.execve = lambda *a: sys.exit('main() tried to replace the calling process')\n"
                "sys.argv = ['nlpipe', 'recipes', 'list']\n"
                "from nlpipe.cli import main\n"
                "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
                "import nlpipe.cpu_allocator as a\nprint(a.loaded_allocator())\n")
    out = subprocess.run([sys.executable, "-c", embedded], env=_clean_env(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "system"


def test_an_unknown_switch_value_is_one_clear_line() -> None:
    out = subprocess.run([sys.executable, "-c", REPORT], env=_clean_env(NLPIPE_ALLOCATOR="jemalloc2"),
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: environment variable NLPIPE_ALLOCATOR='jemalloc2': "
                                  "use tcmalloc (the default) or system")
