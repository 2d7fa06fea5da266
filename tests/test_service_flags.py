"""The services' flags and ACTORS_* variables: bad values are usage errors (exit 2)."""

from __future__ import annotations

import pytest

from actors import orchestrator


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--max-state", "10"], {}, "max_state must be at least 1024 bytes"),
        (["--max-state", "3000000"], {}, "must not be over the broker's largest message"),
        ([], {"ACTORS_MAX_INPUT": "lots"}, "argument --max-input: invalid int value: 'lots'"),
    ],
)
def test_a_bad_limit_is_a_usage_error(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        orchestrator.main([*argv, "--url", "nats://127.0.0.1:1"])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    import gc

    from actors._service import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
