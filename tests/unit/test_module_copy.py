"""Module.deepcopy copies a program's parameters and shares what cannot be copied (issue 16
#3): a program holding a lock, a socket or a file compiles, and its copies share those
objects while their predictors are independent."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.optimizers import BootstrapFewShot
from lmforge.testing import FunctionLM


class WithHandles(lf.Module):
    def __init__(self, log: Any) -> None:
        self.lock = threading.Lock()
        self.conn = socket.socket()
        self.log = log
        self.answer = lf.Predict("question -> answer")
        self.parts = [lf.Predict("question -> answer"), self.lock]
        self.settings = {"retries": [1, 2]}

    def forward(self, question: str) -> lf.Prediction:
        with self.lock:
            return self.answer(question=question)


def test_deepcopy_shares_uncopyable_attributes_and_copies_predictors(tmp_path: Path) -> None:
    with (tmp_path / "log.txt").open("w") as log:
        program = WithHandles(log)
        try:
            program.answer.demos = [{"question": "1+1?", "answer": "2"}]
            copied = program.deepcopy()
            assert isinstance(copied, WithHandles)
            assert copied.lock is program.lock and copied.conn is program.conn
            assert copied.log is log
            assert copied.parts[1] is program.lock
            assert copied.answer is not program.answer
            assert copied.parts[0] is not program.parts[0]
            assert copied.settings == program.settings
            assert copied.settings["retries"] is not program.settings["retries"]
            copied.answer.demos = []
            assert program.answer.demos == ({"question": "1+1?", "answer": "2"},)
            assert [name for name, _ in copied.named_predictors()] == ["answer", "parts[0]"]
        finally:
            program.conn.close()


def test_a_program_with_a_lock_and_a_socket_compiles_with_bootstrap(tmp_path: Path) -> None:
    lm = FunctionLM(lambda request: "[[ ## answer ## ]]\n4")
    train = [lf.Example(question=f"{i}+2?", answer="4").with_inputs("question") for i in range(3)]
    with (tmp_path / "log.txt").open("w") as log:
        program = WithHandles(log)
        try:
            compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
                program, train, metric=lf.metrics.exact_match, lm=lm, progress=False
            )
            assert isinstance(compiled, WithHandles)
            assert compiled.lock is program.lock and compiled.conn is program.conn
            assert len(compiled.answer.demos) == 2 and program.answer.demos == ()
            assert compiled(question="2+2?").answer == "4"
        finally:
            program.conn.close()
