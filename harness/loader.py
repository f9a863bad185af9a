"""Import certsync's loader modules as plain modules for loader-mocked tests and
in-process use (the benchmarks, the mailcow look-alike's probes)."""

import importlib.util
import pathlib

SALT_TREE = pathlib.Path(__file__).resolve().parents[1] / "salt"


#: What ``__utils__`` holds on a minion that synced salt://_utils (filled below).
UTILS = {}
#: ``__opts__`` of a minion that reads certsync's modules from this tree (module_dirs).
MINION_OPTS = {"test": False, "module_dirs": [str(SALT_TREE / "_modules")]}


def load_loader_module(kind, name):
    """Import ``salt/_<kind>/<name>.py`` under a name of its own, with salt://_utils
    in its ``__utils__`` as a minion's loader gives it."""
    path = SALT_TREE / f"_{kind}" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"certsync_test_{kind}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    module.__utils__ = UTILS
    spec.loader.exec_module(module)
    return module


def salt_functions(module, virtualname):
    """``__salt__`` entries for every public function of a loader module."""
    return {
        f"{virtualname}.{name}": func
        for name, func in vars(module).items()
        if callable(func)
        and not name.startswith("_")
        and getattr(func, "__module__", None) == module.__name__
    }


for _name in (
    "certsync_util",
    "certsync_args",
    "certsync_files",
    "certsync_pem",
    "certsync_certbot",
    "certsync_settings",
    "certsync_endpoints",
    "certsync_registry",
    "certsync_routes",
    "certsync_dnswire",
):
    UTILS.update(salt_functions(load_loader_module("utils", _name), _name))
certsync_mod = load_loader_module("modules", "certsync")
certsync_state = load_loader_module("states", "certsync")
deploy_mod = load_loader_module("modules", "certsync_deploy")
source_mod = load_loader_module("modules", "certsync_source")
npm_source_mod = load_loader_module("modules", "certsync_source_npm")
consumer_mod = load_loader_module("modules", "certsync_consumer")
mailcow_consumer_mod = load_loader_module("modules", "certsync_consumer_mailcow")
service_consumer_mod = load_loader_module("modules", "certsync_consumer_service")
caddy_source_mod = load_loader_module("modules", "certsync_source_caddy")
settings_mod = load_loader_module("modules", "certsync_settings")
status_mod = load_loader_module("modules", "certsync_status")
mailcow_mod = load_loader_module("modules", "mailcow")
tlsprobe_mod = load_loader_module("modules", "tlsprobe")
mailcow_state = load_loader_module("states", "mailcow")
monitor_mod = load_loader_module("modules", "certsync_monitor")
certsync_beacon = load_loader_module("beacons", "certsync")
certsync_watch = load_loader_module("engines", "certsync_watch")
mine_mod = load_loader_module("modules", "certsync_mine")

#: The modules that call ``__utils__``: a loader mock empties it unless told otherwise.
UTILS_USERS = (
    certsync_mod,
    consumer_mod,
    tlsprobe_mod,
    monitor_mod,
    mailcow_mod,
    mine_mod,
    deploy_mod,
    settings_mod,
    status_mod,
)


def deploy_functions():
    """``__salt__`` of a minion whose deploy has the certsync module behind it (files only)."""
    return {
        **salt_functions(certsync_mod, "certsync"),
        **salt_functions(source_mod, "certsync_source"),
        **salt_functions(npm_source_mod, "certsync_source_npm"),
        **salt_functions(caddy_source_mod, "certsync_source_caddy"),
        **salt_functions(consumer_mod, "certsync_consumer"),
        **salt_functions(mailcow_consumer_mod, "certsync_consumer_mailcow"),
        **salt_functions(service_consumer_mod, "certsync_consumer_service"),
        "certsync_monitor.record": monitor_mod.record,
        "certsync_monitor.keep_record": monitor_mod.keep_record,
    }
