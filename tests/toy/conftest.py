import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # so `import _toy_helpers` works under any pytest import mode
    sys.path.insert(0, _HERE)

from _toy_helpers import linear_vp  # noqa: E402


@pytest.fixture(scope="session")
def schedule():
    return linear_vp()
