"""The settings object: precedence of its sources (its reference: tests/code/test_docs.py)."""

from settings import Settings, load_settings


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
