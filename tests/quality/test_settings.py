"""``TrainSettings`` as validated data (as ``AdaptSettings``): a bad value is a ``ConfigError`` naming the field,
every field is described, and the settings are frozen (one run's recipe cannot drift while it trains)."""

from __future__ import annotations

import pydantic
import pytest

from minirerank_integrations.errors import ConfigError
from minirerank_integrations.quality.settings import AdaptSettings, TrainSettings
from minirerank_integrations.quality.training import TrainSettings as TrainingModuleSettings


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"steps": 0}, "steps"),
        ({"candidates_per_query": 1}, "candidates_per_query"),
        ({"lr": 0.0}, "lr"),
        ({"hard_end": 1.5}, "hard_end"),
        ({"hard_start": -0.1}, "hard_start"),
        ({"time_limit_s": 0}, "time_limit_s"),
        ({"bce_weight": "heavy"}, "bce_weight"),
        ({"fast": True}, "fast"),
    ],
)
def test_a_bad_train_setting_is_a_config_error_naming_the_field(values, named):
    with pytest.raises(ConfigError, match="invalid TrainSettings") as caught:
        TrainSettings(**values)
    assert f"{named}:" in str(caught.value)


def test_train_settings_are_frozen_described_and_the_training_modules():
    settings = TrainSettings(steps=2, lr=3e-3, time_limit_s=60)
    assert (settings.steps, settings.lr, settings.time_limit_s, settings.fast_path) == (2, 3e-3, 60.0, True)
    with pytest.raises(pydantic.ValidationError):
        settings.steps = 3  # type: ignore[misc]
    assert TrainingModuleSettings is TrainSettings  # one definition, imported where training runs
    for model in (TrainSettings, AdaptSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
