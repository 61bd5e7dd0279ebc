"""``leadrouter worker --role``: the flag wins over LEADROUTER_WORKER_ROLE; a bad one is refused by argparse."""

from __future__ import annotations

import pytest

from router.cli.main import main
from router.settings import Settings
from router.worker import app as worker_app


@pytest.mark.parametrize(("env", "argv", "role"), [
    (None, [], "all"),
    ("alerts", [], "alerts"),
    (None, ["--role", "scoring"], "scoring"),
    ("scoring", ["--role", "alerts"], "alerts"),
])
def test_the_worker_runs_in_the_role_asked_for(env: str | None, argv: list[str], role: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Settings] = []
    monkeypatch.setattr(worker_app, "run_worker", ran.append)
    if env is not None:
        monkeypatch.setenv("LEADROUTER_WORKER_ROLE", env)
    else:
        monkeypatch.delenv("LEADROUTER_WORKER_ROLE", raising=False)
    assert main(["worker", *argv]) == 0
    assert [s.worker.role for s in ran] == [role]


def test_a_bad_role_flag_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(worker_app, "run_worker", lambda s: pytest.fail("ran"))
    with pytest.raises(SystemExit):
        main(["worker", "--role", "alert"])
    assert "invalid choice: 'alert' (choose from 'all', 'scoring', 'alerts')" in capsys.readouterr().err


def test_a_bad_role_variable_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(worker_app, "run_worker", lambda s: pytest.fail("ran"))
    monkeypatch.setenv("LEADROUTER_WORKER_ROLE", "alert")
    assert main(["worker"]) == 2
    assert "LEADROUTER_WORKER_ROLE='alert' is not one of: all, scoring, alerts" in capsys.readouterr().err
