"""A one-line progress bar for long epochs, and fit's Ctrl-C guard.

The bar is redrawn in place with a carriage return, at most every ``INTERVAL`` seconds, and
only once an epoch has run that long: short epochs print just their summary line.
"""

import signal
import sys
import threading
import time

#: seconds between redraws of the bar
INTERVAL = 0.2


def isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """Samples done out of ``total`` in the current epoch, with throughput and time left.

    Parameters
    ----------
    total : int
        Samples in the epoch.
    stream : text stream
        Where to draw (fit uses ``sys.stdout``, the stream of the per-epoch lines).
    start : float
        ``time.perf_counter()`` at the start of the epoch.
    """

    width = 24

    def __init__(self, total, stream=None, start=None):
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.start = time.perf_counter() if start is None else start
        self.last_draw = self.start
        self.drawn = 0  # length of the line on screen, 0 when nothing is drawn

    def render(self, done, elapsed, loss=None):
        """The bar's text for ``done`` samples after ``elapsed`` seconds."""
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        digits = len(f"{self.total:,}")
        text = (
            f"{done:>{digits},}/{self.total:,} [{bar}] {frac:4.0%} - {rate:,.0f} samples/s"
            f" - {_duration(left)} left"
        )
        if loss is not None:
            text += f" - loss {loss:.4f}"
        return text

    def update(self, done, loss=None, now=None, excluded=0.0):
        """Redraw if ``INTERVAL`` seconds passed since the last draw (or the epoch's start).
        ``excluded`` seconds of the epoch (kernel compilation) are left out of the rate and the
        time left."""
        now = time.perf_counter() if now is None else now
        if now - self.last_draw < INTERVAL:
            return False
        self.last_draw = now
        text = self.render(done, now - self.start - excluded, loss)
        pad = max(0, self.drawn - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.drawn = len(text)
        return True

    def clear(self):
        """Erase the bar so the epoch's summary line prints over it."""
        if self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
            self.drawn = 0


def _duration(seconds):
    if seconds != seconds:  # NaN: no rate yet
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class SigintGuard:
    """Turns the first Ctrl-C (SIGINT) during fit into a flag that fit checks between chunks of
    batches, so training stops on a whole step; a second Ctrl-C raises KeyboardInterrupt at
    once.  Only the main thread can install signal handlers: elsewhere the guard does nothing
    and fit catches the KeyboardInterrupt itself."""

    def __init__(self):
        self.fired = False
        self.installed = False
        self.previous = None

    def _handle(self, signum, frame):
        if self.fired:
            raise KeyboardInterrupt
        self.fired = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handle)
                self.installed = True
            except (ValueError, OSError):
                self.installed = False
        return self

    def __exit__(self, *exc):
        if self.installed:
            previous = self.previous if self.previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)
            self.installed = False
        return False
