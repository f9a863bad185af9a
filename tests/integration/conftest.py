"""Real Docker: the mailcow-like image and stacks of its containers."""

import pytest
from support.mailcow_stack import MailcowStack, build_image, docker_client


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
