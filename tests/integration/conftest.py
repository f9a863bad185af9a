"""Real Docker: the mailcow-like image and stacks of its containers."""

import pytest
from support.relay import SmtpRelay

from harness.mailcow_stack import MailcowStack, build_image, docker_client


@pytest.fixture(scope="session")
def docker_engine():
    try:
        return docker_client()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def mailcow_image(docker_engine):
    return build_image()


@pytest.fixture
def make_stack(docker_engine, mailcow_image, tmp_path):
    """Start a stack serving a given pair; every stack is removed afterwards."""
    stacks = []

    def make(serving, **kwargs):
        stack = MailcowStack(
            docker_engine, mailcow_image, tmp_path / f"mailcow{len(stacks)}", serving, **kwargs
        )
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.remove()


@pytest.fixture
def make_relay(docker_engine, mailcow_image, tmp_path):
    """Start a smarthost with a given certificate; each is removed afterwards."""
    relays = []

    def make(issued):
        relay = SmtpRelay(docker_engine, mailcow_image, tmp_path / f"relay{len(relays)}", issued)
        relays.append(relay)
        return relay.start()

    yield make
    for relay in relays:
        relay.stop()
