"""Import certsync's loader modules as plain modules for loader-mocked tests."""

import importlib.util
import pathlib

SALT_TREE = pathlib.Path(__file__).resolve().parents[1] / "salt"


def load_loader_module(kind, name):
    """Import ``salt/_<kind>/<name>.py`` under a name of its own."""
    path = SALT_TREE / f"_{kind}" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"certsync_test_{kind}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


certsync_mod = load_loader_module("modules", "certsync")
certsync_state = load_loader_module("states", "certsync")
mailcow_mod = load_loader_module("modules", "mailcow")
tlsprobe_mod = load_loader_module("modules", "tlsprobe")
mailcow_state = load_loader_module("states", "mailcow")
monitor_mod = load_loader_module("modules", "certsync_monitor")
certsync_beacon = load_loader_module("beacons", "certsync")
mine_mod = load_loader_module("modules", "certsync_mine")


def salt_functions(module, virtualname):
    """``__salt__`` entries for every public function of a loader module."""
    return {
        f"{virtualname}.{name}": func
        for name, func in vars(module).items()
        if callable(func)
        and not name.startswith("_")
        and getattr(func, "__module__", None) == module.__name__
    }
