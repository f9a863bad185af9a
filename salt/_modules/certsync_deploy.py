"""
A consumer's deploy of a renewal, without a state run
=====================================================

What the master's runner sends a consumer on ``certsync/published``: the
``certsync.deployed`` state function itself, called through Salt's state
loader with the arguments the formula's ``certsync.deployed`` SLS would give
it. No pillar is compiled and no SLS rendered on the way; the deploy is the
state's own (validation, atomic install, reload, verification on the wire,
rollback, DANE, the record monitoring reads) and so is its return. The
consumer's scheduled ``state.apply certsync`` stays the safety net, and a
deploy lock keeps the two from overlapping.
"""

import os

import salt.loader
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_deploy"

#: The only state function this module runs.
STATE = "certsync.deployed"


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "certsync_deploy needs the certsync execution module")
    return __virtualname__


def deployed(name, test=False, **kwargs):
    """
    Run the ``certsync.deployed`` state function for ``name`` with the given
    arguments (see that state's documentation) and return its result as
    ``state.single`` does, under the state's key (``certsync_|-<name>_|-<name>_|-deployed``:
    ``result``, ``changes``, ``comment``, never key material), so the
    highstate outputter shows it. Exits non-zero when ``result`` is False.
    With ``test=True`` nothing changes and the comment gives the plan.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_deploy.deployed /opt/mailcow-dockerized/data/assets/ssl \\
            hostname=mail.example.com source_minion=npm-host \\
            services='[postfix-mailcow, dovecot-mailcow, nginx-mailcow]' \\
            endpoints='[smtp, https]' --out=highstate
    """
    arguments = {key: value for key, value in kwargs.items() if not key.startswith("__")}
    state = _state_function(dict(__opts__, test=bool(test)))
    try:
        ret = state(name, **arguments)
    except TypeError as exc:  # an argument the state does not take
        raise SaltInvocationError(f"{STATE}: {exc}") from None
    __context__["retcode"] = 1 if ret.get("result") is False else 0
    return {f"certsync_|-{name}_|-{name}_|-deployed": {**ret, "__id__": name, "__run_num__": 0}}


def _state_function(opts):
    """``certsync.deployed`` from the synced state modules (where a state run finds
    it first), loaded alone: a loader over all of them would list the hundreds that
    Salt ships, some 0.04 CPU-s at every renewal."""
    synced = os.path.join(opts["extension_modules"], "states")
    states = salt.loader.LazyLoader(
        [synced],
        opts,
        tag="states",
        pack={"__salt__": __salt__, "__utils__": __utils__, "__context__": {}},
        whitelist=["certsync"],
    )
    if STATE not in states:
        raise CommandExecutionError(
            f"the {STATE} state is not available in {synced}: sync it "
            "(saltutil.sync_states) and see the minion's log for load errors"
        )
    return states[STATE]
