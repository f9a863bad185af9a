"""The event log for a SIEM (``alerts:event_log``) through salt-call --local: a
deploy's result and an alert line land in the file the consumer's pillar names,
as JSON lines, and the settings check takes the keys."""

import json

import pytest
from support import cases

from harness.pki import write_pair

pytestmark = pytest.mark.functional
ME = "certsync-functional"
HOST = cases.HOST


def test_a_deploy_and_an_alert_are_json_lines_in_the_pillars_event_log(salt_call, tmp_path, ca):
    serving = ca.leaf(HOST)
    layout = cases.make_layout(tmp_path, ca, serving)
    new = ca.leaf(HOST)
    write_pair(layout.source, new, "fullchain.pem", "privkey.pem")
    log = tmp_path / "log" / "events.json"
    log.parent.mkdir()
    alerts = {"event_log": str(log), "event_log_max_bytes": 65536}
    pillar = {
        "certsync": {
            "hostname": HOST,
            "source": {"minion": "npm"},
            "consumers": {ME: {"mailcow_dir": str(tmp_path / "mailcow"), "alerts": alerts}},
        }
    }
    with salt_call.pillar(pillar):
        checked = salt_call("certsync_settings.check")
        code, ret = salt_call.state(name=layout.dest, hostname=HOST, source=layout.source)
        alert = salt_call(
            "certsync_monitor.log_event",
            "alert",
            "condition=expiry",
            "state=fired",
            "detail=a test line for the SIEM",
        )
    assert checked.returncode == 0, checked
    assert (code, ret["result"]) == (0, True), ret["comment"]
    assert alert.returncode == 0, alert
    deploy, fired = (json.loads(line) for line in log.read_text().splitlines())
    assert deploy["event"] == "deploy" and deploy["result"] == "succeeded"
    assert deploy["installed"] is True and deploy["fingerprint"] == new.fingerprint
    assert deploy["dest"] == layout.dest and deploy["minion"] == ME
    assert deploy["detail"].startswith(f"Installed certificate {new.fingerprint}")
    assert (fired["event"], fired["condition"], fired["state"]) == ("alert", "expiry", "fired")
    assert fired["detail"] == "a test line for the SIEM"
    assert "PRIVATE KEY" not in log.read_text()
