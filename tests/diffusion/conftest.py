import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # so `import _problems` works under any pytest import mode
    sys.path.insert(0, _HERE)
