"""Progress on the terminal for the long commands: ``ticlip run`` (runs training in child processes,
followed through the files they write) and ``ticlip eval`` (models, tasks and encoding rate).

- :class:`StatusDisplay`: a headline (done / planned work, elapsed, ETA) and one line per active item,
  on stderr. On a terminal: tqdm bars redrawn in place (``position=``); elsewhere (CI logs, pipes) a
  compact status block every ``interval`` seconds (``TICLIP_PROGRESS_INTERVAL``, default 30).
- :class:`RunWork` / :func:`poll_run` / :class:`TrainingProgress`: a training run's planned
  iterations per step and how far it is, read from ``run.json`` (finished steps) and the last record of
  ``steps/<t>/train_log.jsonl``; nothing is added to what training writes.
- :class:`EvalProgress`: an evaluation's (model, task) results, the model and task being scored, and
  the images and texts encoded per second (fed by the evaluator's encoding callback).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ticlip.errors import TiclipError
from ticlip.run_layout import RunInfo, step_dir

INTERVAL_ENV = "TICLIP_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
REDRAW_S = 0.2  # a terminal is redrawn at most this often


def status_interval(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between status blocks when stderr is not a terminal (``TICLIP_PROGRESS_INTERVAL``)."""
    value = os.environ.get(INTERVAL_ENV)
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise TiclipError(f"{INTERVAL_ENV}={value!r} is not a number of seconds; set e.g. {INTERVAL_ENV}=30") from None
    if seconds < 0:
        raise TiclipError(f"{INTERVAL_ENV}={value!r} is negative; set 0 (every update) or more seconds")
    return seconds


def is_terminal(file) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def format_duration(seconds: float | None) -> str:
    """``12s``, ``4m10s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class RateMeter:
    """Work done per second since the first sample (work done before it, e.g. by an earlier attempt
    of a resumed run, is not counted)."""

    clock: Callable[[], float] = time.monotonic
    _t0: float | None = None
    _d0: float = 0.0
    _t: float = 0.0
    _d: float = 0.0

    def sample(self, done: float) -> None:
        now = self.clock()
        if self._t0 is None:
            self._t0, self._d0 = now, done
        self._t, self._d = now, done

    @property
    def rate(self) -> float | None:
        if self._t0 is None or self._t <= self._t0 or self._d <= self._d0:
            return None
        return (self._d - self._d0) / (self._t - self._t0)

    def eta(self, remaining: float) -> float | None:
        """Seconds to do ``remaining`` at the measured rate (None until some work was measured)."""
        if remaining <= 0:
            return 0.0
        rate = self.rate
        return None if not rate else remaining / rate


# ------------------------------------------------------------------------------------- display
class _LineWriter(io.TextIOBase):
    """A file whose complete lines go to ``emit`` (other output printed while bars are drawn)."""

    def __init__(self, emit: Callable[[str], None]):
        super().__init__()
        self.emit, self.buf = emit, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.emit(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class StatusDisplay:
    """A headline over ``total`` units of work and up to ``slots`` lines under it, on ``file``.

    ``update(done, lines)`` sets the work done and the lines (one per active item). On a terminal the
    headline is a tqdm bar and each line a text-only tqdm bar at its own ``position``, redrawn at most
    every 0.2 s; elsewhere a block (headline, then the lines indented) is printed at the first update and
    then at most every ``interval`` seconds. ``write`` prints a permanent line above the bars.
    ``enabled=False`` draws nothing but ``write`` still prints."""

    def __init__(self, desc: str, total: float, *, unit: str = "it", slots: int = 0, file=None,
                 interactive: bool | None = None, interval: float | None = None, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.unit, self.slots = desc, float(total), unit, slots
        self.file = file if file is not None else sys.stderr
        self.interactive = is_terminal(self.file) if interactive is None else interactive
        self.interval = status_interval() if interval is None else float(interval)
        self.enabled, self.clock = enabled, clock
        self.done = 0.0
        self.lines: list[str] = []
        self.meter = RateMeter(clock)
        self.started = clock()
        self._last_draw: float | None = None
        self._lock = threading.RLock()
        self._head = None
        self._bars: list = []
        if enabled and self.interactive:
            from tqdm import tqdm

            self._head = tqdm(total=max(self.total, 1e-9), desc=desc, file=self.file, position=0, leave=True,
                              dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}|")
            self._bars = [tqdm(total=0, file=self.file, position=i + 1, leave=False, dynamic_ncols=True,
                               bar_format="{desc}") for i in range(slots)]

    # -------------------------------------------------------------------- state
    def eta(self) -> float | None:
        return self.meter.eta(self.total - self.done)

    def headline(self) -> str:
        pct = 100.0 * self.done / self.total if self.total > 0 else 100.0
        return (f"{self.desc}: {pct:3.0f}% ({self.done:.0f}/{self.total:.0f} {self.unit}), "
                f"elapsed {format_duration(self.clock() - self.started)}, ETA {format_duration(self.eta())}")

    def set_total(self, total: float) -> None:
        with self._lock:
            self.total = float(total)
            if self._head is not None:
                self._head.total = max(self.total, 1e-9)

    def update(self, done: float, lines: Sequence[str] = (), *, force: bool = False) -> None:
        with self._lock:
            self.done = float(done)
            self.meter.sample(self.done)
            self.lines = [str(line) for line in lines]
            if not self.enabled:
                return
            now = self.clock()
            if self.interactive:
                if force or self._last_draw is None or now - self._last_draw >= REDRAW_S:
                    self._draw_bars()
                    self._last_draw = now
            elif force or self._last_draw is None or now - self._last_draw >= self.interval:
                self.print_status()
                self._last_draw = now

    def _draw_bars(self) -> None:
        head = self._head
        head.n = min(self.done, head.total)
        text = (f"{self.done:.0f}/{self.total:.0f} {self.unit} "
                f"[{format_duration(self.clock() - self.started)}<{format_duration(self.eta())}]")
        head.bar_format = "{desc}: {percentage:3.0f}%|{bar}| " + text.replace("{", "{{").replace("}", "}}")
        head.refresh()
        for i, bar in enumerate(self._bars):
            bar.set_description_str(self.lines[i] if i < len(self.lines) else "", refresh=True)

    def print_status(self) -> None:
        """The status block: the headline, then each line indented."""
        with self._lock:
            text = "\n".join([self.headline()] + [f"  {line}" for line in self.lines if line])
            print(text, file=self.file, flush=True)

    # -------------------------------------------------------------------- output
    def write(self, message: str) -> None:
        """A permanent line (above the bars on a terminal)."""
        with self._lock:
            if self._head is not None:
                from tqdm import tqdm

                tqdm.write(message, file=self.file)
            else:
                print(message, file=self.file, flush=True)

    def wrap_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` with the bars cleared while it prints (a log that prints to the same terminal)."""
        if self._head is None:
            return log

        def wrapped(message: str) -> None:
            from tqdm import tqdm

            with self._lock, tqdm.external_write_mode(file=self.file):
                log(message)

        return wrapped

    @contextlib.contextmanager
    def redirect_stderr(self):
        """Lines printed to stderr inside the block go above the bars (on a terminal; else unchanged)."""
        if self._head is None or self.file is not sys.stderr:
            yield
            return
        with contextlib.redirect_stderr(_LineWriter(self.write)):
            yield

    def close(self) -> None:
        with self._lock:
            for bar in self._bars:
                bar.close()
            if self._head is not None:
                self._draw_bars()
                self._head.close()
            self._bars, self._head = [], None


# ------------------------------------------------------------------------------------- training
@dataclass
class StepWork:
    """The planned iterations of one step of a run."""

    index: int
    label: str
    iterations: int  # the deployable trajectory (main phase and const-cosine's decay branch)
    trunk: int = 0  # const-cosine's constant-LR trunk past the branch point (when the next step continues)

    @property
    def total(self) -> int:
        return self.iterations + self.trunk

    def done_at(self, record: dict) -> int:
        """Iterations of this step done when ``record`` (a train_log.jsonl line) was written."""
        it = int(record.get("iteration", 0))
        if record.get("phase") == "trunk":  # the trunk restarts at the branch point
            it = self.iterations + it - (self.iterations - self.trunk)
        return max(0, min(self.total, it))


@dataclass
class RunWork:
    """A training run's planned work: its directory and every step it trains, in order."""

    name: str
    run_dir: str
    steps: list[StepWork]
    stream_steps: int  # steps of the stream, shown as "(i/n)"

    @property
    def total(self) -> int:
        return sum(s.total for s in self.steps)


@dataclass
class RunStatus:
    """How far a run is, from its files."""

    work: RunWork
    done: int  # iterations over all its steps
    step: StepWork | None = None  # the step being trained (None: all finished)
    step_done: int = 0
    phase: str = ""
    pairs_per_s: float | None = None
    finished_steps: int = 0

    @property
    def finished(self) -> bool:
        return self.step is None

    @property
    def fraction(self) -> float:
        return self.done / self.work.total if self.work.total else 1.0

    def line(self, eta_s: float | None = None) -> str:
        """``NAME: step LABEL (i/n) done/planned it, R pairs/s, ETA …``"""
        if self.step is None:
            return f"{self.work.name}: finished ({len(self.work.steps)} steps)"
        s = self.step
        # no log line yet: the process starts, the model or the data are being set up
        phase = " setting up," if not self.phase else "" if self.phase == "main" else f" {self.phase}"
        rate = "" if self.pairs_per_s is None else f", {self.pairs_per_s:.0f} pairs/s"
        return (f"{self.work.name}: step {s.label} ({s.index + 1}/{self.work.stream_steps}){phase} "
                f"{self.step_done}/{s.total} it{rate}, ETA {format_duration(eta_s)}")


def read_last_record(path: str, chunk: int = 4096) -> dict | None:
    """The last complete JSON line of a JSONL file (reads the tail only; a line being written is skipped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            size = min(end, chunk)
            while True:
                f.seek(end - size)
                lines = f.read(size).split(b"\n")
                candidates = lines[1:] if size < end else lines  # the first piece may be cut
                for raw in reversed(candidates):
                    if raw.strip():
                        try:
                            return json.loads(raw)
                        except ValueError:
                            continue  # a line cut by a writer or a kill
                if size >= end:
                    return None
                size = min(end, size * 4)
    except OSError:
        return None


def finished_steps(run_dir: str) -> set[int]:
    """Indices of the steps run.json lists as finished (none when it is missing or unreadable)."""
    try:
        info = RunInfo.load(run_dir)
    except (TiclipError, ValueError, TypeError, OSError):
        return set()
    return {s.index for s in info.steps if s.finished}


def poll_run(work: RunWork) -> RunStatus:
    """How far ``work`` is: finished steps from run.json, the current step from its train_log.jsonl."""
    finished = finished_steps(work.run_dir)
    done = sum(s.total for s in work.steps if s.index in finished)
    current = next((s for s in work.steps if s.index not in finished), None)
    status = RunStatus(work, done, current, finished_steps=sum(1 for s in work.steps if s.index in finished))
    if current is not None:
        rec = read_last_record(os.path.join(step_dir(work.run_dir, current.index), "train_log.jsonl"))
        if rec is not None and int(rec.get("step", current.index)) == current.index:
            status.step_done = current.done_at(rec)
            status.phase = str(rec.get("phase", "main"))
            rate = rec.get("pairs_per_s")
            status.pairs_per_s = float(rate) if isinstance(rate, (int, float)) else None
            status.done += status.step_done
    return status


class TrainingProgress:
    """The training display of an experiment: an overall bar over every run's planned iterations and
    one line per active run, refreshed by ``poll`` from the runs' files."""

    def __init__(self, works: Iterable[RunWork], *, desc: str = "training", slots: int = 1, **display):
        self.works = {w.name: w for w in works}
        self.meters: dict[str, RateMeter] = {}
        self.dropped: dict[str, int] = {}  # planned work of failed runs, taken out of the total
        self.display = StatusDisplay(desc, self.total, slots=slots, **display)
        self.statuses: dict[str, RunStatus] = {}

    @property
    def total(self) -> int:
        return sum(w.total for w in self.works.values()) - sum(self.dropped.values())

    def poll(self, active: Sequence[str], *, force: bool = False) -> list[RunStatus]:
        """Read every run's progress; redraw with one line per ``active`` run."""
        self.statuses = {name: poll_run(w) for name, w in self.works.items()}
        lines = []
        for name in active:
            st = self.statuses[name]
            meter = self.meters.setdefault(name, RateMeter(self.display.clock))
            if st.phase or st.done:  # measured from its first log line: process start-up is not its rate
                meter.sample(st.done)
            lines.append(st.line(meter.eta(st.work.total - st.done)))
        done = sum(st.done for st in self.statuses.values())
        self.display.update(done, lines, force=force)
        return [self.statuses[n] for n in active]

    def drop(self, name: str) -> None:
        """A failed run: its unfinished work leaves the total (the ETA stays about the rest)."""
        st = poll_run(self.works[name])
        self.dropped[name] = st.work.total - st.done
        self.display.set_total(self.total)

    def write(self, message: str) -> None:
        self.display.write(message)

    def close(self) -> None:
        self.display.close()


# ------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalProgress:
    """Progress of one evaluation: (model, task) results done out of those pending, the model and task
    being scored, and images + texts encoded per second (``encoded`` is the encoders' callback).

    ``enabled=False`` counts (the per-model summary uses the counts) but draws nothing."""

    enabled: bool = True
    desc: str = "eval"
    file: object = None
    interactive: bool | None = None
    interval: float | None = None
    display: StatusDisplay | None = field(default=None, init=False)
    results_done: int = field(default=0, init=False)
    model_line: str = field(default="", init=False)
    task_line: str = field(default="", init=False)
    model_items: int = field(default=0, init=False)
    task_items: int = field(default=0, init=False)
    model_t0: float = field(default=0.0, init=False)
    task_t0: float = field(default=0.0, init=False)
    items: int = field(default=0, init=False)  # over the whole evaluation
    model_first: int = field(default=0, init=False)  # results done when the current model started
    t0: float = field(default=0.0, init=False)

    def begin(self, results: int) -> None:
        """``results``: the (model, task) results to compute now."""
        self.items, self.t0 = 0, time.perf_counter()
        self.display = StatusDisplay(self.desc, results, unit="results", slots=1, file=self.file,
                                     interactive=self.interactive, interval=self.interval,
                                     enabled=self.enabled and results > 0)

    def wrap_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` printing above the bars while they are drawn."""

        def wrapped(message: str) -> None:
            if self.display is None:
                log(message)
            else:
                self.display.wrap_log(log)(message)

        return wrapped

    def start_model(self, label: str, i: int, n: int) -> None:
        self.model_line = f"model step {label} ({i}/{n})"
        self.model_items, self.model_t0 = 0, time.perf_counter()
        self.model_first = self.results_done

    def finish_model(self, results: int) -> None:
        """The model's ``results`` are in (some may have been copied rather than scored)."""
        self.results_done = self.model_first + results
        self._redraw()

    def start_task(self, task: str, step_label: str | None, k: int, n: int) -> None:
        where = "" if step_label is None else f" @ step {step_label}"
        self.task_line = f"task {k}/{n} {task}{where}"
        self.task_items, self.task_t0 = 0, time.perf_counter()
        self._redraw()

    def encoded(self, n: int) -> None:
        """``n`` more images or texts went through the model."""
        self.items += int(n)
        self.model_items += int(n)
        self.task_items += int(n)
        self._redraw()

    def finish_task(self) -> None:
        self.results_done += 1
        self._redraw()

    @staticmethod
    def _rate(items: int, t0: float) -> float:
        dt = time.perf_counter() - t0
        return items / dt if dt > 0 else 0.0

    def model_summary(self) -> str:
        """``N images+texts encoded, R img+txt/s`` for the model scored last."""
        return f"{self.model_items} images+texts encoded, {self._rate(self.model_items, self.model_t0):.0f} img+txt/s"

    def summary(self) -> str:
        """``N images+texts encoded, R img+txt/s`` over the whole evaluation."""
        return f"{self.items} images+texts encoded, {self._rate(self.items, self.t0):.0f} img+txt/s"

    def status_line(self) -> str:
        return (f"{self.model_line}: {self.task_line}, {self.task_items} encoded, "
                f"{self._rate(self.task_items, self.task_t0):.0f} img+txt/s")

    def _redraw(self) -> None:
        if self.display is not None and self.display.enabled:
            self.display.update(self.results_done, [self.status_line()])

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


__all__ = ["EvalProgress", "INTERVAL_ENV", "RateMeter", "RunStatus", "RunWork", "StatusDisplay", "StepWork",
           "TrainingProgress", "finished_steps", "format_duration", "poll_run", "read_last_record", "status_interval"]
