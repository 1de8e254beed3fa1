"""pipelines/app.py: the choices it offers for each objective, generation equal to the pipeline's, the pipeline's own
messages for bad input, and the page in a real browser (headless Chromium driven by Playwright)."""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EDMEulerScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.utils import make_image_grid
from PIL import Image

from diffit_hf import DiffiTPipeline, DiTModel
from diffit_hf.data import FASHION_MNIST_CLASSES
from diffit_hf.pipelines.schedules import EDM_SCHEDULERS, FLOW_SCHEDULERS, SCHEDULERS

from ..tiny import save_tiny_pixel_pipeline

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# as root in a closed network: no sandbox, and none of Chromium's background connections
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("DIFFIT_TEST_ARTIFACTS", ROOT / "outputs" / "test-artifacts"))


@pytest.fixture(scope="module")
def app(script):
    return script("pipelines/app.py")


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return save_tiny_pixel_pipeline(tmp_path_factory.mktemp("app") / "pipe")


def tiny_pipe(scheduler, num_classes: int = 10) -> DiffiTPipeline:
    torch.manual_seed(0)
    model = DiTModel(sample_size=8, patch_size=4, in_channels=1, num_layers=1, num_attention_heads=2,
                     attention_head_dim=8, num_classes=num_classes, learn_sigma=False).eval()
    names = {i: name for i, name in enumerate(FASHION_MNIST_CLASSES[:num_classes])}
    return DiffiTPipeline(transformer=model, scheduler=scheduler, id2label=names)


@pytest.mark.parametrize("scheduler, kind, table", [
    (DDPMScheduler(), "epsilon", SCHEDULERS),
    (DDPMScheduler(prediction_type="v_prediction"), "v_prediction", SCHEDULERS),
    (FlowMatchEulerDiscreteScheduler(), "flow", FLOW_SCHEDULERS),
    (EDMEulerScheduler(), "edm", EDM_SCHEDULERS),
])
def test_offers_the_schedulers_of_the_objective_and_each_one_samples(app, scheduler, kind, table, tmp_path):
    pipe = tiny_pipe(scheduler)
    pipe.set_progress_bar_config(disable=True)
    sampler = app.AppSampler(pipe, out_dir=tmp_path)
    assert pipe.config.prediction_type == kind
    assert sampler.schedulers == [app.SAVED, *table]
    assert sampler.class_names == list(FASHION_MNIST_CLASSES)
    for name in sampler.schedulers:
        grid, path, message = sampler.generate(["Bag"], steps=2, scheduler=name, per_class=1)
        assert grid is not None and grid.size == (8, 8), (name, message)
        assert type(pipe.scheduler).__name__ == (type(scheduler).__name__ if name == app.SAVED else table[name])
    other = next(n for n in ("ddim", "unipc") if n not in table)  # another objective's, or no short name
    with pytest.raises(ValueError) as refused:
        tiny_pipe(scheduler).use_scheduler(other)
    assert sampler.generate(["Bag"], steps=2, scheduler=other)[2] == f"**Error:** {refused.value}"


def test_generation_is_the_pipelines_and_bad_input_shows_its_own_message(app, pipe_dir, tmp_path):
    pipe = app.load_pipeline(str(pipe_dir), "cpu")
    sampler = app.AppSampler(pipe, max_images=8, out_dir=tmp_path)
    grid, path, message = sampler.generate(["Bag", "Sneaker"], guidance_scale=2.0, steps=3, seed=7, per_class=3)
    reference = DiffiTPipeline.from_pretrained(pipe_dir)
    reference.set_progress_bar_config(disable=True)
    images = reference(["Bag", "Sneaker"], num_images_per_label=3, guidance_scale=2.0, num_inference_steps=3,
                       generator=torch.Generator().manual_seed(7)).images
    np.testing.assert_array_equal(np.asarray(grid), np.asarray(make_image_grid(images, rows=2, cols=3)))
    assert grid.size == (3 * 32, 2 * 32)  # one row per class, one column per image
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(grid))  # the download is the grid
    assert message == "6 images of 32x32, rows: Bag, Sneaker; 3 steps of DDPMScheduler, seed 7."
    # the dpm choice is the pipeline's use_scheduler("dpm"); "saved" brings the saved scheduler back
    assert sampler.generate(["Bag"], steps=2, scheduler="dpm", per_class=1)[2].endswith(
        "2 steps of DPMSolverMultistepScheduler, seed 0.")
    assert sampler.generate(["Bag"], steps=2, per_class=1)[2].endswith("2 steps of DDPMScheduler, seed 0.")

    def pipeline_message(**call) -> str:
        with pytest.raises(ValueError) as err:
            reference(**{"num_inference_steps": 2, **call})
        return f"**Error:** {err.value}"

    cases = [
        (dict(classes=["Bag", "Unicorn"]), pipeline_message(class_labels=["Bag", "Unicorn"])),
        (dict(classes=["Bag"], steps=0), pipeline_message(class_labels=["Bag"], num_inference_steps=0)),
        (dict(classes=[]), pipeline_message(class_labels=[])),
        (dict(classes=["12"]), pipeline_message(class_labels=[12])),  # ids typed as digits, checked by the pipeline
        (dict(classes=["Bag"], steps=None), pipeline_message(class_labels=["Bag"], num_inference_steps=None)),
        (dict(classes=["Bag"], per_class=None), pipeline_message(class_labels=["Bag"], num_images_per_label=None)),
        (dict(classes=["Bag"], steps=1001), "**Error:** num_inference_steps must be <= 1000 here, got 1001."),
        (dict(classes=["Bag"], seed=None), "**Error:** seed must be an integer, got None."),
        (dict(classes=["Bag", "Coat", "Shirt"], per_class=3),
         "**Error:** 9 images asked for; this app makes at most 8 at a time."),
    ]
    for kwargs, expected in cases:
        assert sampler.generate(**kwargs) == (None, None, expected), kwargs


def test_unconditional_model_has_no_classes(app, tmp_path):
    pipe = tiny_pipe(DDPMScheduler(), num_classes=0)
    pipe.set_progress_bar_config(disable=True)
    sampler = app.AppSampler(pipe, out_dir=tmp_path)
    assert not sampler.conditional and sampler.class_names == []
    grid, _, message = sampler.generate(None, steps=2, per_class=3)
    assert grid.size == (3 * 8, 8), message
    assert message.startswith("3 images of 8x8, rows: unconditional;")


def test_space_defaults_to_the_model_of_its_card(app, tmp_path):
    (tmp_path / "README.md").write_text("---\nsdk: gradio\nmodels:\n- alice/tiny-dit\n---\n# Space\n")
    assert app.card_model(tmp_path) == "alice/tiny-dit"
    assert app.card_model(tmp_path / "missing") is None
    assert app.parse_args(["--model", "x"]).model == "x"


def test_page_in_a_real_browser(app, pipe_dir):
    """The page loads, a class is picked by name, Generate shows and downloads the grid, a bad input shows the
    pipeline's message; a screenshot goes to outputs/test-artifacts/ ($DIFFIT_TEST_ARTIFACTS)."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; scripts/setup.sh does as root)")
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed: pip install -e '.[app]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")

    sampler = app.AppSampler(app.load_pipeline(str(pipe_dir), "cpu"), max_images=16)
    demo = app.build_demo(sampler, title="tiny test pipeline")
    app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which(CHROMIUM) or CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 820})
            page.set_default_timeout(60_000)
            page.goto(demo.local_url)
            generate = page.get_by_role("button", name="Generate")
            generate.wait_for()
            assert page.locator("#scheduler input").input_value() == app.SAVED

            # pick "Bag" by name, 2 images, 3 steps
            page.locator("#classes [title=Clear]").click()
            page.get_by_role("combobox", name="Classes (one grid row each)").fill("Ba")
            page.get_by_role("option", name="Bag", exact=True).click()
            page.locator("#steps input").fill("3")
            page.locator("#per-class input[type=number]").fill("2")
            page.locator("#per-class input[type=number]").press("Enter")
            generate.click()
            message = page.locator("#message")
            playwright.expect(message).to_contain_text("2 images of 32x32, rows: Bag; 3 steps")
            shown = page.locator("#grid img").evaluate(
                "i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])")
            assert shown == [2 * 32, 32]
            page.screenshot(path=ARTIFACTS / "app_screenshot.png", full_page=True)
            with page.expect_download() as download:
                page.locator("#download").click()
            downloaded = np.asarray(Image.open(download.value.path()))

            # a bad input: the pipeline's own message in the page
            page.locator("#steps input").fill("0")
            generate.click()
            playwright.expect(message).to_have_text("Error: num_inference_steps must be >= 1, got 0.")
            assert page.locator("#grid img").count() == 0
            page.screenshot(path=ARTIFACTS / "app_error.png", full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"browser session: {time.monotonic() - start:.1f} s")

    reference = DiffiTPipeline.from_pretrained(pipe_dir)
    reference.set_progress_bar_config(disable=True)
    images = reference("Bag", num_images_per_label=2, guidance_scale=4.0, num_inference_steps=3,
                       generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(downloaded, np.asarray(make_image_grid(images, rows=1, cols=2)))
