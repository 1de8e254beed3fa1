"""The `Examples:` of the public API's docstrings run as written (doctest)."""

import doctest

import pytest

from diffit_hf import DiffiTPipeline, create_model


# (DiffiTPipeline.push_to_hub's example needs a Hub: a plain code block, run against the loopback Hub by
# tests/pipelines/test_hub.py::test_pipeline_push_to_hub_and_save_pretrained_push_load_with_plain_diffusers)
@pytest.mark.parametrize("function", [create_model, DiffiTPipeline.__call__],
                         ids=["create_model", "DiffiTPipeline.__call__"])
def test_docstring_examples_run(function, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = doctest.DocTestParser().get_examples(function.__doc__)
    assert examples, f"{function.__qualname__} has no Examples"
    test = doctest.DocTestParser().get_doctest(function.__doc__, {}, function.__qualname__, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {function.__qualname__}"
