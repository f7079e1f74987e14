"""One settings base for every process, loaded with errors that name the variable; a bad
setting is exit status 3 from every long-running command."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.cli import main
from airlock.cli._framework import ConfigError
from airlock.cli._settings import load_settings
from executor.settings import ExecutorSettings, RelaySettings
from server.settings import CommonSettings, ServerSettings

PROCESSES = (ServerSettings, ExecutorSettings, RelaySettings)


@pytest.mark.parametrize("cls", PROCESSES, ids=lambda c: c.__name__)
def test_shared_fields_are_read_the_same_way_by_every_process(cls: type[CommonSettings]) -> None:
    assert issubclass(cls, CommonSettings)
    for name in CommonSettings.model_fields:
        assert repr(cls.model_fields[name]) == repr(CommonSettings.model_fields[name]), name
    assert cls(log_level="info").log_level == "INFO"  # any case, everywhere
    with pytest.raises(ConfigError, match=r"^AIRLOCK_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR$"):
        load_settings(cls, log_level="loud")
    with pytest.raises(ConfigError, match=r"^AIRLOCK_DATABASE_URL: must start with postgresql"):
        load_settings(cls, database_url="mysql://db/airlock")


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(RelaySettings, nats_url="http://nats:4222", relay_batch_size=0)
    lines = str(e.value).splitlines()
    assert lines[0] == "AIRLOCK_NATS_URL: must be nats://host:port (comma-separated for several)"
    assert lines[1].startswith("AIRLOCK_RELAY_BATCH_SIZE: ")


@pytest.mark.parametrize("command", [["serve"], ["executor"], ["relay"], ["sandbox-check"],
                                     ["migrate"]])
def test_a_bad_setting_is_exit_3_naming_it(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIRLOCK_LOG_LEVEL", "loud")
    assert main(command) == 3
    err = capsys.readouterr().err
    assert "configuration error: AIRLOCK_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR" in err


def test_dev_names_a_bad_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIRLOCK_GRPC_LISTEN", "nowhere")
    assert main(["dev", "--data-dir", str(tmp_path)]) == 3
    assert "configuration error: AIRLOCK_GRPC_LISTEN: must be host:port" in capsys.readouterr().err
