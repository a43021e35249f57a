"""The settings object: precedence of its sources, and the README documents every variable."""

from pydantic import BaseModel

from settings import Settings, load_settings
from tests.conftest import REPO_ROOT


def _variables(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _variables(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


def test_readme_lists_every_variable():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [v for v in _variables(Settings, "FRAUD_") if f"`{v}`" not in readme]
    assert not missing


def test_precedence_arguments_environment_file_defaults(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text(
        "seed = 1\n[tuning]\ntrials = 3\nmax_depth = 9\n[gate]\nmin_test_roc_auc = 0.9\n"
    )
    monkeypatch.setenv("FRAUD_TUNING__TRIALS", "4")
    monkeypatch.setenv("FRAUD_SEED", "2")
    settings = load_settings(config, seed=5)
    assert settings.seed == 5  # argument over environment
    assert settings.tuning.trials == 4  # environment over file
    assert settings.tuning.max_depth == 9  # file over default
    assert settings.gate.min_test_roc_auc == 0.9
    assert settings.tuning.max_trees == Settings.model_fields["tuning"].default_factory().max_trees
