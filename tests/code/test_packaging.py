"""What the Bento installs is what the tests ran with."""

from importlib.metadata import version

from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT


def test_serving_requirements_pin_the_tested_versions():
    lines = (REPO_ROOT / "requirements" / "serving.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert pins
    for pin in pins:
        (specifier,) = pin.specifier
        assert specifier.operator == "==", pin
        assert version(pin.name) == specifier.version, pin
