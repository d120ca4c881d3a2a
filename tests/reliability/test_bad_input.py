"""A table of bad inputs: exit code 2, one line naming the bad value, nothing written.

Each case runs the CLI in-process (``main(argv)``) against a fresh output folder and checks
(1) exit code 2, (2) exactly one line on stderr that contains the offending value,
(3) the output folder was not created (or, for an existing one, left exactly as it was).
"""

import pytest

from plasticity_dynamics.cli import main


def S(*pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


CASES = [
    # config keys and values
    ("unknown section", ["train", *S("bogus.x=1")], "bogus.x"),
    ("unknown train key", ["train", *S("train.stepz=3")], "train.stepz"),
    ("unknown model option", ["train", *S("model.wdiths=[3]")], "wdiths"),
    ("unknown model family", ["train", *S("model.name=transformerxl")], "transformerxl"),
    ("unknown activation", ["train", *S("model.activation=swish2")], "swish2"),
    ("unknown norm", ["train", *S("model.norm=group")], "group"),
    ("zero width", ["train", *S("model.widths=[0,4]")], "0"),
    ("negative width", ["train", *S("model.widths=[-3]")], "-3"),
    ("dropout 1", ["train", *S("model.dropout=1.0")], "1.0"),
    ("dropout negative", ["train", *S("model.dropout=-0.1")], "-0.1"),
    ("lr zero", ["train", *S("optim.lr=0")], "optim.lr=0"),
    ("lr negative", ["train", *S("optim.lr=-0.5")], "-0.5"),
    ("lr string", ["train", *S("optim.lr=fast")], "fast"),
    ("unknown optimiser", ["train", *S("optim.name=lion")], "lion"),
    ("momentum >= 1", ["train", *S("optim.momentum=1.5")], "1.5"),
    ("negative weight decay", ["train", *S("optim.weight_decay=-1")], "-1"),
    ("noise decay > 1", ["train", *S("optim.noise_decay=1.5")], "1.5"),
    ("batch size zero", ["train", *S("train.batch_size=0")], "train.batch_size=0"),
    ("batch size float", ["train", *S("train.batch_size=12.5")], "12.5"),
    ("steps negative", ["train", *S("train.steps_per_task=-5")], "-5"),
    ("record every zero", ["train", *S("record.every=0")], "record.every=0"),
    ("checkpoint not multiple", ["train", *S("record.every=10", "record.checkpoint_every=15")], "15"),
    ("seeds zero", ["train", *S("seeds=0")], "seeds=0"),
    ("seeds negative entry", ["train", *S("seeds=[0,-1]")], "-1"),
    ("classes per task > classes", ["train", *S("tasks.classes_per_task=11")], "11"),
    ("too many tasks", ["train", *S("tasks.num_tasks=50")], "50"),
    ("unknown stream", ["train", *S("tasks.kind=shuffled")], "shuffled"),
    ("unknown stream option", ["train", *S("tasks.zigzag=1")], "zigzag"),
    ("unknown intervention", ["train", *S("intervention.name=magic")], "magic"),
    ("unknown intervention option", ["train", *S("intervention.name=cbp", "intervention.speed=2")], "speed"),
    ("unknown dataset", ["train", *S("data.name=imagenet21k")], "imagenet21k"),
    ("missing dataset files", ["train", *S("data.name=cifar10", "data.data_dir='/nonexistent/x'")], "/nonexistent/x"),
    ("model does not fit data", ["train", *S("model.name=cnn")], "cnn"),
    ("vit patch does not divide", ["train", *S("data.name=digits", "model.name=vit", "model.patch_size=3")], "3"),
    ("malformed --set", ["train", "--set", "optim.lr"], "optim.lr"),
    ("missing config file", ["train", "/nonexistent/cfg.toml"], "/nonexistent/cfg.toml"),
    ("resume without out", ["train", "--resume"], "--resume"),
    ("resume of a non-run", ["train", "--resume", "--out", "/nonexistent/run"], "/nonexistent/run"),
    # reproduce / report / list
    ("unknown figure", ["reproduce", "fig9.9"], "fig9.9"),
    ("unknown scale", ["reproduce", "continual", "--scale", "huge"], "huge"),
    ("data dir missing", ["reproduce", "continual", "--data-dir", "/nonexistent/d"], "/nonexistent/d"),
    ("report of a non-run", ["report", "/nonexistent/run"], "/nonexistent/run"),
    ("unknown list", ["list", "widgets"], "widgets"),
    ("unknown command", ["fly"], "fly"),
]


@pytest.mark.parametrize("name,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, name, argv, needle):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] in ("train", "reproduce") and "--out" not in argv else []
    code = main(argv + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2, (name, err)
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_existing_out_is_left_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    assert main(["train", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "precious"


def test_out_below_a_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["train", "--out", str(blocker / "run"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert blocker.read_text() == "x"
