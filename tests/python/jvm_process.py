"""A JVM the tests start in its own process group (Kafka Streams applications, Connect
workers): killed with SIGKILL or stopped with SIGTERM as a group, and always reaped."""

import os
import signal
import subprocess

import pytest

STOP_S = 60


class JvmProcess:
    """Subclasses start `self.proc` with `start_new_session=True` and define `explain()`."""

    what = "the JVM"

    def __init__(self):
        self.proc = None

    def _signal_group(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """kill -9: no close, no commit, no checkpoint."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(STOP_S)
        self.proc = None

    def stop(self):
        """SIGTERM: the JVM's shutdown hooks run; returns its exit status."""
        self._signal_group(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.what} did not stop within {STOP_S} s of SIGTERM\n"
                        + self.explain())
        self.proc = None
        return code

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def explain(self):
        raise NotImplementedError
