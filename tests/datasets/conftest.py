import logging

import pytest
from mmengine.logging import MMLogger


@pytest.fixture
def logged_warnings():
    """Messages of the warnings logged through mmengine's current logger."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
