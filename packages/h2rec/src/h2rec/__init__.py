"""H2Rec: harmonizing semantic and hash IDs for sequential recommendation (Liu et al., 2026).

    import h2rec
    config = h2rec.build_config(overrides={"data.interactions": "inter.csv", "data.semid": "sid_out"})
    results = h2rec.train(config, "runs/h2rec")
    h2rec.load("runs/h2rec").recommend("user_7", k=10)
    h2rec.load("runs/h2rec").save_pretrained("shared/"); h2rec.from_pretrained("user/repo").recommend(["i1", "i2"])
"""

from .api import Recommender, load
from .config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig, build_config, load_config_file
from .errors import H2RecError
from .hub import PretrainedRecommender, from_pretrained
from .model import H2Rec
from .training import train
from .version import __version__

__all__ = [
    "__version__",
    "Config", "DataConfig", "EvalConfig", "H2Rec", "H2RecError", "ModelConfig", "PretrainedRecommender", "Recommender",
    "TrainConfig", "build_config", "from_pretrained", "load", "load_config_file", "train",
]
