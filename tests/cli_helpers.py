"""Running the `tinygpt` command as a user does, and the check every error path shares: one
stderr line, exit status 2, no traceback."""
import subprocess
import sys


def run_tinygpt(*args, cwd=None, timeout=600):
    """`python -m tinygpt ARGS` in a subprocess -> its CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "tinygpt", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_line_error(out, *words):
    """`out` failed as a user's mistake: exit 2, one stderr line holding each of `words`."""
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in lines[0], lines[0]
