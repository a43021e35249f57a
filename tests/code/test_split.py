"""The temporal split: train, a gap of the label delay, then later test days; time-ordered folds."""

import pandas as pd
import pytest

from settings import SplitConfig
from training.dataset import temporal_split

DAY = pd.Timedelta(days=1)
FIRST = pd.Timestamp("2026-01-01 08:13")
CONFIG = SplitConfig()


def test_periods_follow_each_other_with_the_delay_as_gap():
    last = FIRST + 130 * DAY
    split = temporal_split(FIRST, last, CONFIG)
    day0 = FIRST.normalize()
    assert split.train.start == day0 + CONFIG.burn_in_days * DAY
    assert split.train.end - split.train.start == CONFIG.train_days * DAY
    assert split.test.start - split.train.end == CONFIG.delay_days * DAY
    assert split.test.end - split.test.start == CONFIG.test_days * DAY


def test_folds_validate_only_on_later_days_inside_training():
    split = temporal_split(FIRST, FIRST + 130 * DAY, CONFIG)
    assert len(split.folds) == CONFIG.folds
    for fold in split.folds:
        assert fold.fit.start == split.train.start
        assert fold.validate.start - fold.fit.end == CONFIG.delay_days * DAY
        assert split.train.start < fold.validate.start < fold.validate.end <= split.train.end
    assert split.folds[-1].validate.end == split.train.end
    starts = [fold.validate.start for fold in split.folds]
    assert starts == sorted(starts)


def test_a_table_too_short_for_the_split_is_refused():
    with pytest.raises(ValueError, match="covers 50 days but the split needs 114"):
        temporal_split(FIRST, FIRST + 49 * DAY, CONFIG)


def test_folds_that_do_not_fit_in_training_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        SplitConfig(train_days=20, folds=3, fold_validation_days=7, delay_days=7)
