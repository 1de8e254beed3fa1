def test_validation_images_reach_every_tracker(tmp_path, monkeypatch, caplog):
    """tensorboard gets an image summary (read back from its event file), wandb a `wandb.Image`, any tracker with
    accelerate's `log_images` the array, and a tracker without images is named in a warning."""
    import sys
    import types

    import numpy as np
    from accelerate.tracking import GeneralTracker, TensorBoardTracker
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from diffit_hf.training.previews import log_image

    fake_wandb = types.ModuleType("wandb")

    class FakeWandbImage:
        def __init__(self, data, caption=None):
            self.data, self.caption = np.asarray(data), caption

    fake_wandb.Image = FakeWandbImage
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)

    class Recorder(GeneralTracker):
        def __init__(self, name):
            self.name, self.logged = name, []

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            pass

        def log(self, values, step=None, **kwargs):
            self.logged.append((values, step))

    class WithImages(Recorder):
        def log_images(self, values, step=None, **kwargs):
            self.logged.append((values, step))

    wandb, custom, plain = Recorder("wandb"), WithImages("custom"), Recorder("csv_only")
    board = TensorBoardTracker("run", tmp_path)
    board.start()
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    log_image(types.SimpleNamespace(trackers=[board, wandb, custom, plain]), "samples", image, 7)
    board.finish()

    (values, step), = wandb.logged
    assert step == 7 and isinstance(values["samples"], FakeWandbImage)
    np.testing.assert_array_equal(values["samples"].data, np.asarray(image))
    (values, step), = custom.logged
    assert step == 7 and np.array_equal(values["samples"][0], np.asarray(image))
    assert "the csv_only tracker takes no images" in caplog.text
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert events.Tags()["images"] == ["samples"]
    (summary,) = events.Images("samples")
    assert summary.step == 7 and (summary.width, summary.height) == (4, 4)
