"""deead_compact_split: every N-th scored frame, byte for byte, in the episode format; a size cap."""
import json
import shutil
from pathlib import Path

import numpy as np

from deead_lab.compact_split import compact_episode, main
from deead_lab.dataset_format import episode_path, load_episode, save_episode

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metadrive_episode.npz"


def test_keeps_every_nth_scored_frame_unchanged(tmp_path):
    (tmp_path / "data" / "test").mkdir(parents=True)
    shutil.copy(FIXTURE, tmp_path / "data" / "test" / "ep_00001.npz")
    assert main(["--data", str(tmp_path / "data"), "--every", "3", "--out", str(tmp_path / "small")]) == 0
    full = load_episode(FIXTURE)
    small = load_episode(episode_path(tmp_path / "small", "test", full["map_seed"]))
    scored = np.nonzero(full["has_full_future"] & full["future_clean"])[0][::3]
    assert small["meta"]["compact"]["frame_index"] == scored.tolist()
    for key in ("images", "future_ego", "route_world", "speed", "command"):
        np.testing.assert_array_equal(small[key], full[key][scored])
    assert small["map_seed"] == full["map_seed"]


def test_stops_adding_episodes_at_the_size_cap(tmp_path, capsys):
    episode = load_episode(FIXTURE)
    for seed in (1, 2):
        save_episode(episode_path(tmp_path / "data", "test", seed), dict(episode, map_seed=seed))
    one_mb = (FIXTURE.stat().st_size / 1e6) * 1.2
    assert main(["--data", str(tmp_path / "data"), "--every", "1", "--max-mb", f"{one_mb}",
                 "--out", str(tmp_path / "small")]) == 0
    assert len(list((tmp_path / "small" / "test").glob("ep_*.npz"))) == 1
    assert "1 episodes left out" in capsys.readouterr().out


def test_says_what_to_do_without_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none")]) == 2
    assert "collect them first" in capsys.readouterr().err


def test_random_offset_is_drawn_from_the_map_seed_and_keeps_the_stride():
    full = load_episode(FIXTURE)
    scored = np.nonzero(full["has_full_future"] & full["future_clean"])[0]
    offsets = set()
    for seed in range(12):
        small = compact_episode(dict(full, map_seed=seed), 4, random_offset=True)
        assert small is not None
        offset = int(json.loads(small["meta"])["compact"]["offset"])
        assert 0 <= offset < 4
        np.testing.assert_array_equal(small["pose"], full["pose"][scored[offset::4]])
        again = compact_episode(dict(full, map_seed=seed), 4, random_offset=True)
        assert again is not None
        np.testing.assert_array_equal(again["pose"], small["pose"])          # the same seed: the same frames
        offsets.add(offset)
    assert len(offsets) > 1, "the offset must vary between maps"
