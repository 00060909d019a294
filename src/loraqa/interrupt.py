"""Ctrl-C during training: finish the current step, save a checkpoint, stop cleanly.

The Trainer has no interrupt handling of its own: a KeyboardInterrupt mid-step loses
everything since the last scheduled checkpoint. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading

from transformers import TrainerCallback


class GracefulInterrupt(TrainerCallback):
    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:  # second Ctrl-C: the user really wants out now
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
