"""The one exception type for mistakes in what the user asked for, and the exit codes every command
shares (lcm-run, lcm-grid, lcm-reproduce)."""
import sys
from typing import NoReturn, Optional

from hydra.errors import CompactHydraException

EXIT_OK = 0
EXIT_FAILED = 1  # a job failed while running (its run.json says why)
EXIT_BAD_INPUT = 2  # a config key or value, an argument or a file was wrong: nothing was run or written
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: finished jobs are kept; the same command again resumes


class UserError(CompactHydraException):
    """Bad input (config value, missing file, uncached model...).

    Hydra prints a CompactHydraException as its message alone, with no traceback, and exits
    non-zero; the message is one paragraph that names the bad key and value and says how to fix it.
    """


def leave(code: int, message: str) -> NoReturn:
    """Print `Error: message` to stderr and exit with `code`. Hydra turns an exception raised in a
    callback into a warning; SystemExit passes through."""
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(code)


_exit_after_callbacks: Optional[int] = None


def leave_after_callbacks(code: int, message: str) -> None:
    """`leave`, for the end of a sweep: print now, exit once every callback has run (Hydra stops
    calling callbacks at a SystemExit, and a tracker logs the failed jobs after the report)."""
    global _exit_after_callbacks
    print(f"Error: {message}", file=sys.stderr)
    _exit_after_callbacks = code


def exit_code_after_callbacks() -> Optional[int]:
    """The code `leave_after_callbacks` kept (None: none), cleared."""
    global _exit_after_callbacks
    code, _exit_after_callbacks = _exit_after_callbacks, None
    return code
