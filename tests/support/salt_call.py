"""salt-call --local against the repo's salt/ tree, as an operator would run it."""

import contextlib
import json
import pathlib

import pytest

SALT_TREE = pathlib.Path(__file__).resolve().parents[2] / "salt"


class LocalCall:
    """Run ``salt-call --local`` with certsync synced from file_roots."""

    def __init__(self, cli):
        self.cli = cli

    def __call__(self, *args, **kwargs):
        return self.cli.run("--local", "--retcode-passthrough", *args, **kwargs)

    def state(self, fun="certsync.deployed", **kwargs):
        """Run ``state.single <fun>`` and return (exit code, the state's return)."""
        env = kwargs.pop("env", None)
        args = [f"{key}={value}" for key, value in kwargs.items() if key != "test"]
        if kwargs.get("test"):
            args.append("test=True")
        ret = self("state.single", fun, *args, env=env)
        assert isinstance(ret.data, dict), ret
        (state_ret,) = ret.data.values()
        return ret.returncode, state_ret

    @contextlib.contextmanager
    def pillar(self, data):
        """This minion's pillar is ``data`` inside the block (each salt-call --local
        compiles it anew), empty again after it."""
        self.pillar_file.write_text(json.dumps(data))
        try:
            yield
        finally:
            self.pillar_file.write_text("{}")


@pytest.fixture(scope="session")
def salt_call(salt_factories, tmp_path_factory):
    sls_dir, pillar_dir = tmp_path_factory.mktemp("sls"), tmp_path_factory.mktemp("pillar")
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - test_pillar\n")
    (pillar_dir / "test_pillar.sls").write_text("{}")
    minion = salt_factories.salt_minion_daemon(
        "certsync-functional",
        overrides={
            "file_client": "local",
            "file_roots": {"base": [str(SALT_TREE), str(sls_dir)]},
            "pillar_roots": {"base": [str(pillar_dir)]},
        },
    )
    call = LocalCall(minion.salt_call_cli(timeout=120))
    call.minion_id = minion.id
    call.sls_dir = sls_dir
    call.pillar_file = pillar_dir / "test_pillar.sls"
    call.config_file = minion.config_file
    synced = call("saltutil.sync_all")
    assert synced.returncode == 0, synced
    assert {"modules.certsync", "modules.mailcow", "modules.tlsprobe"} <= set(
        synced.data["modules"]
    )
    assert {"states.certsync", "states.mailcow"} <= set(synced.data["states"])
    return call
