"""How the command line talks while it works: progress of long steps, and library chatter kept aside.

- :class:`Console` shows each long step (``with console.step("synthesis"): ...``): on a terminal a
  rich spinner with the step's latest phase and its elapsed time; elsewhere (``make demo | tee``, CI)
  one line when a step starts, a line when its phase changes or a minute passes, and one when it ends.
  It writes to stderr, so stdout keeps only results; under ``--json`` it is silent.
- :func:`capture` sends library logging, Python warnings and whatever tools and libraries write to
  the process's own stdout and stderr (TensorFlow, cocotb, Verilator's make) into a log file, so
  the terminal shows only fabformer's own lines; with ``--verbose`` they stay on the terminal.

The open flow reports its tools' phases through :func:`fabformer.boards.flow.on_progress`;
:meth:`Console.tool_progress` is the hook the command line gives it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path

HEARTBEAT_S = 60.0  # without a terminal: a "still running" line at most this often per step
PHASE_S = 20.0  # without a terminal: a phase change is printed when the step said nothing for this long


def elapsed(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class _Step:
    def __init__(self, console: "Console", title: str, level: int):
        self.console, self.title, self.level = console, title, level
        self.t0 = time.monotonic()
        self.detail: str | None = None
        self.result: str | None = None
        self.task = None
        self._said = self.t0  # last plain line about this step

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def update(self, detail: str | None) -> None:
        """The step's latest phase (shown beside its title)."""
        if detail == self.detail:
            return
        self.detail = detail
        self.console._update(self)

    def done(self, result: str) -> None:
        """What to show on the step's last line (e.g. ``bit exact``); default: its elapsed time only."""
        self.result = result


class Console:
    """Progress lines of one command (see the module docstring)."""

    def __init__(self, *, quiet: bool = False, file=None, terminal: bool | None = None):
        from rich.console import Console as RichConsole
        self.quiet = quiet
        self.file = file if file is not None else sys.stderr
        self.rich = RichConsole(file=self.file, highlight=False, soft_wrap=True,
                                **({} if terminal is None else {"force_terminal": terminal}))
        self.live = self.rich.is_terminal
        self._steps: list[_Step] = []
        self._tools: dict = {}
        self._progress = None
        self._lock = threading.RLock()
        self._beat: threading.Thread | None = None
        self._last_line = 0.0  # when the last plain line was printed (no "still running" right after one)

    # -- public ---------------------------------------------------------------------
    def print(self, text: str = "", style: str | None = None) -> None:
        """One line of progress output (nothing under ``--json``)."""
        if self.quiet:
            return
        with self._lock:
            self._last_line = time.monotonic()
            (self._progress.console if self._progress else self.rich).print(text, style=style, markup=False)

    def note(self, text: str) -> None:
        """A progress message from a library: the innermost running step's phase, else a line."""
        with self._lock:
            if self._steps:
                self._steps[-1].update(text)
            else:
                self.print(text)

    @contextlib.contextmanager
    def step(self, title: str):
        """Show ``title`` while the block runs; a check mark and the elapsed time after it, a cross
        and the time when it raises.  Yields the step (``update(detail)``, ``done(result)``)."""
        s = self._start(title)
        try:
            yield s
        except BaseException:
            self._end(s, ok=False)
            raise
        self._end(s, ok=True)

    def tool_progress(self, stage: str, phase, done: bool, folder) -> None:
        """The hook for :func:`fabformer.boards.flow.on_progress`: one sub-step per tool run; stage
        ``note`` is a one-line message about the build folder."""
        key = (stage, str(folder))
        if stage == "note":  # a one-line message from the flow about this build folder
            self.print(f"{'  ' * len(self._steps)}{Path(folder).name}: {phase}")
            return
        with self._lock:
            s = self._tools.get(key)
            if s is None and not done:
                s = self._tools[key] = self._start(f"{stage} ({Path(folder).name})")
            if s is None:
                return
            if done:
                del self._tools[key]
                self._end(s, ok=phase == 0)
            elif phase:
                s.update(str(phase))

    def close(self) -> None:
        with self._lock:
            for s in list(self._tools.values()):
                self._end(s, ok=False)
            self._tools.clear()
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    # -- internals -------------------------------------------------------------------
    def _start(self, title: str) -> _Step:
        with self._lock:
            s = _Step(self, title, len(self._steps))
            self._steps.append(s)
            if self.quiet:
                return s
            if self.live:
                if self._progress is None:
                    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
                    self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                              TextColumn("[dim]{task.fields[detail]}"), TimeElapsedColumn(),
                                              console=self.rich, transient=True,
                                              # results on stdout go above the spinner when both are
                                              # this terminal, and stay on stdout when it is redirected
                                              redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
                    self._progress.start()
                s.task = self._progress.add_task(self._indent(s) + title, detail="")
            else:
                self._line(f"{self._indent(s)}… {title}")
                self._heartbeat()
            return s

    def _update(self, s: _Step) -> None:
        if self.quiet:
            return
        with self._lock:
            if self.live and s.task is not None and self._progress is not None:
                self._progress.update(s.task, detail=s.detail or "")
            elif not self.live and s.detail and time.monotonic() - s._said >= PHASE_S:
                s._said = time.monotonic()
                self._line(f"{self._indent(s)}  {s.title}: {s.detail} ({elapsed(s.seconds)})")

    def _end(self, s: _Step, ok: bool) -> None:
        with self._lock:
            if s in self._steps:
                self._steps.remove(s)
            if self.quiet:
                return
            mark = "✓" if ok else "✗"
            tail = f" — {s.result}" if s.result else ""
            line = f"{self._indent(s)}{mark} {s.title}{tail} [{elapsed(s.seconds)}]"
            if self.live and self._progress is not None:
                if s.task is not None:
                    self._progress.remove_task(s.task)
                self._progress.console.print(line, style=None if ok else "red", markup=False)
                if not self._steps:
                    self._progress.stop()
                    self._progress = None
            else:
                self._line(line, style=None if ok else "red")

    def _line(self, text: str, style: str | None = None) -> None:
        self._last_line = time.monotonic()
        self.rich.print(text, style=style, markup=False)

    @staticmethod
    def _indent(s: _Step) -> str:
        return "  " * s.level

    def _heartbeat(self) -> None:
        """Without a terminal: a line for a step that has said nothing for ``HEARTBEAT_S``."""
        if self._beat is not None and self._beat.is_alive():
            return

        def beat():
            while True:
                time.sleep(1.0)
                with self._lock:
                    if not self._steps:
                        return
                    s = self._steps[-1]
                    if time.monotonic() - max(s._said, self._last_line) >= HEARTBEAT_S:
                        s._said = time.monotonic()
                        what = f"{s.detail}, " if s.detail else ""
                        self._line(f"{self._indent(s)}  {s.title}: still running ({what}{elapsed(s.seconds)})")
        self._beat = threading.Thread(target=beat, name="fabformer-progress", daemon=True)
        self._beat.start()


_current: Console | None = None


def current() -> Console:
    """The console of the running command (a quiet one outside the command line)."""
    global _current
    if _current is None:
        _current = Console(quiet=True)
    return _current


@contextlib.contextmanager
def using(console: Console):
    """Make ``console`` the current one and the open flow's progress hook for the block."""
    global _current
    prev = _current
    _current = console
    flow = None
    try:
        from fabformer.boards import flow
        prev_hook = flow.on_progress(console.tool_progress)
    except ImportError:  # the boards extra is not installed: no tools to watch
        pass
    try:
        yield console
    finally:
        console.close()
        if flow is not None:
            flow.on_progress(prev_hook)
        _current = prev


# -- library logs and third-party warnings -----------------------------------------------------
class Capture:
    """Where :func:`capture` put the chatter: ``log`` (a file), or None with ``--verbose``."""

    def __init__(self, log: Path | None):
        self.log = log


def _fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


@contextlib.contextmanager
def capture(log: Path | None, *, verbose: bool = False):
    """Inside the block: Python logging (INFO and up) and warnings go to ``log``, and so does what
    anything writes to file descriptors 1 and 2 (subprocesses, C++ libraries); ``sys.stdout`` and
    ``sys.stderr`` keep reaching the terminal, through duplicates of the original descriptors.

    With ``verbose`` (or ``log`` None) all of that goes to stderr instead, so stdout still carries
    only fabformer's results (a ``--json`` object stays parseable).  Yields a :class:`Capture`."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    term_out = io.TextIOWrapper(io.FileIO(saved_fds[0], "w", closefd=False), line_buffering=True,
                                encoding=getattr(sys.stdout, "encoding", None) or "utf-8", errors="replace")
    term_err = io.TextIOWrapper(io.FileIO(saved_fds[1], "w", closefd=False), line_buffering=True,
                                encoding=getattr(sys.stderr, "encoding", None) or "utf-8", errors="replace")
    quiet = not verbose and log is not None
    if quiet:
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log, "w", buffering=1, encoding="utf-8", errors="replace")  # this command's log
    else:
        sink, log = term_err, None
    h = logging.StreamHandler(sink)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    # Python streams on those descriptors move to the duplicates; others (a test's capture) stay
    sys.stdout = term_out if _fd(saved_streams[0]) == 1 else saved_streams[0]
    sys.stderr = term_err if _fd(saved_streams[1]) == 2 else saved_streams[1]
    try:
        yield Capture(log)
    finally:
        for stream in (term_out, term_err, sink):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        if quiet:
            sink.close()
        for fd in saved_fds:
            os.close(fd)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.captureWarnings(False)
