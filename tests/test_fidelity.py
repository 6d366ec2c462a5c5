"""docs/fidelity.md's table is the paper profiles: every `key = value` in it is read back from them."""

import re

import pytest
import yaml

from stica.config import SECTIONS, load_section, to_dict

PROFILES = {"paper": "profiles/paper.yaml", "paper-60f": "profiles/paper-60f.yaml"}
# the points the table must cover (the published recipe, issue by issue)
REQUIRED_POINTS = (
    "within-modal pairs",
    "within-modal scale",
    "cross-modal loss",
    "NCE keys",
    "transformer pooling",
    "projection heads",
    "learning rate",
    "RGB crop",
    "colour jitter",
    "audio front end",
    "context for Tables 4-6",
    "feature crops",
    "finetuning lr",
    "finetuning model and augmentation",
    "finetuning clips",
    "reported finetuning number",
)
SETTING = re.compile(r"`(?:(paper|paper-60f): )?([a-z_]+(?:\.[a-z_0-9]+)+) = ([^`]+)`")


def table_rows(repo_root):
    text = (repo_root / "docs" / "fidelity.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [c.strip() for c in header.strip("|").split("|")][3] == "stica paper profiles"
    return [[c.strip() for c in row.strip("|").split("|")] for row in body]


def profile_values(repo_root, profile):
    path = repo_root / PROFILES[profile]
    return {name: to_dict(load_section(name, path)) for name in SECTIONS}


def lookup(values, key):
    node = values
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{key}: no such param"
        node = node[part]
    return node


def test_every_setting_in_the_table_is_what_the_profiles_load(repo_root):
    values = {p: profile_values(repo_root, p) for p in PROFILES}
    checked = 0
    for row in table_rows(repo_root):
        for only, key, raw in SETTING.findall(row[3]):
            expected = yaml.safe_load(raw)
            for profile in [only] if only else PROFILES:
                got = lookup(values[profile], key)
                if isinstance(expected, float) or isinstance(got, float):
                    assert got == pytest.approx(expected), (profile, key)
                else:
                    assert got == expected, (profile, key)
                checked += 1
    assert checked >= 60


def test_the_table_covers_every_point_of_the_recipe(repo_root):
    rows = table_rows(repo_root)
    points = [row[0] for row in rows]
    for point in REQUIRED_POINTS:
        assert point in points, point
    for row in rows:
        assert len(row) == 5 and all(row[:3]), row[0]  # paper text and released code filled in


def test_the_two_paper_profiles_differ_only_in_the_context_length(repo_root):
    a, b = (yaml.safe_load((repo_root / PROFILES[p]).read_text()) for p in PROFILES)

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    la, lb = dict(leaves(a)), dict(leaves(b))
    assert la.keys() == lb.keys()
    differ = {k for k in la if la[k] != lb[k]}
    assert differ == {
        "pretrain.num_frames",
        "pretrain.crops.time_medium_size",
        "pretrain.crops.time_small_size",
        "finetune.num_frames",
    }
