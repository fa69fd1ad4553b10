"""Assertions shared by the command-line tests."""


def error_line(proc) -> str:
    """The one error line of a user mistake (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if 'error:' in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]
