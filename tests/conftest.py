import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits"


@pytest.fixture(scope="session")
def digits():
    from fabformer.apps.data import digits as _d
    return _d()


@pytest.fixture(scope="session")
def q8_model():
    from fabformer.frontend import load_keras_model
    return load_keras_model(EXAMPLE / "model_q8.h5")


@pytest.fixture(scope="session")
def example_graph(q8_model, digits):
    import fabformer
    return fabformer.convert(q8_model, calibration=digits.x_train)
