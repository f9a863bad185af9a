"""
ufw with a state of its own, for a test host in a network namespace: copies of
ufw's files (``/etc/ufw``, ``/lib/ufw``, ``/etc/default/ufw``, as Debian's
package installs them) bind-mounted over the real ones in a private mount
namespace around each command. Its rules go to the namespace's own tables and
its settings to the copies, so the machine's own ufw stays as it was.
"""

import pathlib
import shutil

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
#: ufw's files, and the name of each copy.
STATE = (("/etc/ufw", "etc-ufw"), ("/lib/ufw", "lib-ufw"), ("/etc/default/ufw", "default-ufw"))
BIND_THEN_EXEC = (
    'mount --bind "$1" /etc/ufw && mount --bind "$2" /lib/ufw && '
    'mount --bind "$3" /etc/default/ufw && shift 3 && exec "$@"'
)


class PrivateUfw:
    """ufw's state under ``root``; :py:meth:`wrap` runs a command with it in place."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.copies = []
        for real, name in STATE:
            copy = self.root / name
            if pathlib.Path(real).is_dir():
                shutil.copytree(real, copy, symlinks=True)
            else:
                shutil.copy2(real, copy)
            self.copies.append(str(copy))

    def wrap(self, argv):
        """``argv`` in a private mount namespace with this ufw state bound in place."""
        return [
            UNSHARE,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            BIND_THEN_EXEC,
            "sh",
            *self.copies,
            *argv,
        ]
